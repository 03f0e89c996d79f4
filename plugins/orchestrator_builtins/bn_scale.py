"""Scorer ``bn-scale``: network-slimming importance, the |gamma| of the BatchNorm that follows each layer.

The BatchNorm of a layer is found by data flow, not by module order: one forward pass on the task's example
inputs records which BatchNorm receives a layer's output directly as its input. Layers whose output feeds no
BatchNorm (linear heads, convolutions followed directly by an activation, embeddings), or whose BatchNorm has
no affine scale, get no score: they are left out of ``Scores.layers`` and ``Scores.channels``, and listed in
``Scores.details["without_batchnorm"]``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator import ComponentOptions, Scorer, Scores, Task, hookimpl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn


class BNScaleOptions(ComponentOptions):
    pass


def following_batchnorms(
    model: nn.Module, example_inputs: tuple[Any, ...], layers: Sequence[str]
) -> dict[str, str]:
    """For each of ``layers``, the qualified name of the BatchNorm that takes its output as input.

    Found by running ``model`` once on ``example_inputs`` with forward hooks (the caller puts the model in
    the mode it wants; nothing is trained). Layers whose output does not go straight into a BatchNorm are
    missing from the result.
    """
    import torch
    from torch import nn

    produced: dict[int, str] = {}
    keep_alive: list[Any] = []  # outputs stay referenced so that their ids are not reused during the pass
    found: dict[str, str] = {}

    def on_layer(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            produced[id(output)] = name
            keep_alive.append(output)

        return hook

    def on_norm(name: str) -> Any:
        def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            source = produced.get(id(inputs[0])) if inputs else None
            if source is not None:
                found.setdefault(source, name)

        return hook

    handles = [model.get_submodule(n).register_forward_hook(on_layer(n)) for n in layers]
    handles += [
        m.register_forward_pre_hook(on_norm(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found


class BNScaleScorer(Scorer[BNScaleOptions]):
    """|gamma| of the BatchNorm after each layer, per channel, and its mean per layer.

    Layers without a BatchNorm directly after them are left out (see the module documentation).
    """

    name: ClassVar[str] = "bn-scale"
    Options = BNScaleOptions
    per_channel: ClassVar[bool] = True

    def score(self, model: Any, task: Task[Any], layers: Sequence[str]) -> Scores:
        work = copy.deepcopy(model).eval()
        norms = following_batchnorms(work, task.example_inputs(2), layers)
        channels: dict[str, list[float]] = {}
        for name in layers:
            gammas = _gammas(work, norms.get(name))
            if gammas is not None:
                channels[name] = gammas
        per_layer = {n: sum(c) / len(c) for n, c in channels.items()}
        details = {
            "batchnorm": {n: norms[n] for n in channels},
            "without_batchnorm": [n for n in layers if n not in channels],
        }
        return Scores(layers=per_layer, channels=channels, details=details)


def _gammas(model: nn.Module, norm_name: str | None) -> list[float] | None:
    """|gamma| per channel of the named BatchNorm, or None when there is none or it has no scale."""
    if norm_name is None:
        return None
    weight = getattr(model.get_submodule(norm_name), "weight", None)
    if weight is None:
        return None
    values: list[float] = weight.detach().abs().float().tolist()
    return values if values else None


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(BNScaleScorer)
