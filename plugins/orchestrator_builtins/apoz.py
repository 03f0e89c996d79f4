"""Scorer ``apoz``: Average Percentage of Zeros of each output channel after its ReLU (Hu et al., 2016).

The activation is not looked up as a module: ReLU semantics are applied to the tensor that enters it. A
channel's value counts as zero when the *pre-activation* is <= 0, which is exactly when a ReLU outputs zero.
The pre-activation is the output of the BatchNorm that takes the layer's output directly (found by data flow,
see :func:`orchestrator_builtins.bn_scale.following_batchnorms`), else the layer's own output. This works for
``nn.ReLU`` modules, shared or in-place ReLUs and ``F.relu`` alike; for other activations (GELU, SiLU, ...)
it is the fraction of negative pre-activations, an approximation.

Channel score = 1 - APoZ (a channel that is always zero is worth nothing); layer score = mean over channels.
Statistics come from ``task.calibration_data(batches)`` in eval mode.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import ComponentOptions, Scorer, Scores, Task, hookimpl
from orchestrator_builtins.bn_scale import following_batchnorms

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from torch import nn


class APoZOptions(ComponentOptions):
    #: calibration batches the zeros are counted over
    batches: int = Field(default=8, ge=1)


class _ZeroCounter:
    """Counts, per channel, how many pre-activation values are <= 0."""

    def __init__(self, channel_dim: int) -> None:
        self.channel_dim = channel_dim
        self.zeros: torch.Tensor | None = None
        self.total = 0

    def __call__(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        flat = output.detach().movedim(self.channel_dim, 0).flatten(1)
        zeros = (flat <= 0).sum(1).double()
        self.zeros = zeros if self.zeros is None else self.zeros + zeros
        self.total += flat.shape[1]

    def scores(self) -> list[float]:
        if self.zeros is None or self.total == 0:
            return []
        values: list[float] = (1.0 - self.zeros / self.total).tolist()
        return values


class APoZScorer(Scorer[APoZOptions]):
    """1 - fraction of zero activations per output channel (ReLU semantics), mean per layer."""

    name: ClassVar[str] = "apoz"
    Options = APoZOptions
    per_channel: ClassVar[bool] = True

    def score(self, model: Any, task: Task[Any], layers: Sequence[str]) -> Scores:
        import torch

        work = copy.deepcopy(model).eval()
        norms = following_batchnorms(work, task.example_inputs(2), layers)
        counters = {name: _ZeroCounter(_channel_dim(work.get_submodule(name))) for name in layers}
        handles = [
            work.get_submodule(norms.get(name, name)).register_forward_hook(counter)
            for name, counter in counters.items()
        ]
        try:
            with torch.no_grad():
                for batch in task.calibration_data(self.options.batches):
                    work(*task.inputs(batch))
        finally:
            for handle in handles:
                handle.remove()
        measured = {n: c.scores() for n, c in counters.items()}
        channels = {n: values for n, values in measured.items() if values}  # a layer never run has none
        per_layer = {n: sum(c) / len(c) for n, c in channels.items()}
        details = {"measured_at": {n: norms.get(n, n) for n in channels}, "batches": self.options.batches}
        return Scores(layers=per_layer, channels=channels, details=details)


def _channel_dim(layer: nn.Module) -> int:
    """Where the output channels are in the layer's output: dim 1 for convolutions, last otherwise."""
    from torch import nn

    return 1 if isinstance(layer, nn.modules.conv._ConvNd) else -1


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(APoZScorer)
