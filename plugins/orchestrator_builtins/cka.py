"""Scorer ``cka``: how much the model's representation changes when one block is removed.

Following Pons et al., "Effective Layer Pruning Through Similarity Metric Perspective" (2024), each
droppable block is removed in turn (on a copy of the model) and the representation of the calibration data
is compared with the full model's by linear centred kernel alignment (Kornblith et al., "Similarity of
Neural Network Representations Revisited", 2019). The score of a block is ``1 - CKA``: a block whose removal
leaves the representation most similar scores lowest, i.e. is the least important.

The representation is, by default, the penultimate features: the input of the layer that produces the
model's output (for a classifier, the pooled features the final linear layer reads). With
``features: output``, or when no layer produces the output directly, the model's (first) output, flattened
per sample, is used (the logits of a classifier).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from orchestrator import ComponentOptions, OrchestratorError, Scorer, Scores, Task, hookimpl
from orchestrator.layers import droppable_blocks, output_layers
from orchestrator_builtins.depth import drop_blocks

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from torch import nn


class CKAOptions(ComponentOptions):
    #: calibration batches (from the task's training data) the representations are compared on
    batches: int = Field(default=4, ge=1)
    #: the representation compared: input of the output layer, or the model's output itself
    features: Literal["penultimate", "output"] = "penultimate"


class CKAScorer(Scorer[CKAOptions]):
    """Block importance = 1 - linear CKA between the full model and the model without the block."""

    name: ClassVar[str] = "cka"
    Options = CKAOptions
    targets: ClassVar[Literal["layers", "blocks"]] = "blocks"

    def score(self, model: nn.Module, task: Task[Any], layers: Sequence[str]) -> Scores:
        """Score the droppable blocks among ``layers``; other names are listed in ``details['skipped']``."""
        base = copy.deepcopy(model).eval()
        inputs = [task.inputs(batch) for batch in task.calibration_data(self.options.batches)]
        if not inputs:
            raise OrchestratorError(f"scorer 'cka': task '{task.name}' gave no calibration data")
        droppable = droppable_blocks(base, inputs[0])
        blocks = [name for name in layers if name in droppable]
        if not blocks:
            raise OrchestratorError(
                f"scorer 'cka' scores droppable blocks, and none of the {len(layers)} names it was given "
                f"is one; the model's droppable blocks are: {', '.join(droppable) or 'none'}"
            )
        probe = self._probe(base, inputs[0])
        full = _features(base, inputs, probe)
        similarity: dict[str, float] = {}
        for name in blocks:
            ablated = copy.deepcopy(base)
            drop_blocks(ablated, [name])
            similarity[name] = linear_cka(full, _features(ablated, inputs, probe))
        return Scores(
            layers={name: 1.0 - value for name, value in similarity.items()},
            details={
                "cka": similarity,
                "features": f"input of '{probe}'" if probe else "model output",
                "skipped": [name for name in layers if name not in droppable],
            },
        )

    def _probe(self, model: nn.Module, example: tuple[Any, ...]) -> str | None:
        """The layer whose input is the representation (None: the model's output)."""
        if self.options.features == "output":
            return None
        producers = output_layers(model, example)
        return producers[0] if producers else None


def _features(model: nn.Module, inputs: Sequence[tuple[Any, ...]], probe: str | None) -> torch.Tensor:
    """The representation of all calibration inputs, one flattened row per sample."""
    import torch

    captured: list[torch.Tensor] = []
    handle = None
    if probe is not None:
        layer = model.get_submodule(probe)
        handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    rows = []
    try:
        with torch.no_grad():
            for batch in inputs:
                captured.clear()
                out = model(*batch)
                rows.append(captured[-1] if probe is not None else _first(out))
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat([r.flatten(1) for r in rows]).double()


def _first(out: Any) -> torch.Tensor:
    import torch

    first = out[0] if isinstance(out, tuple | list) else getattr(out, "last_hidden_state", out)
    if not isinstance(first, torch.Tensor):
        raise OrchestratorError(f"scorer 'cka' cannot read a tensor from the model's output ({type(out)})")
    return first


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same ``n`` samples (``(n, p)`` and ``(n, q)``), in [0, 1].

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``; computed on the
    ``n x n`` Gram matrices when features outnumber samples.
    """
    x = x.double() - x.double().mean(dim=0)
    y = y.double() - y.double().mean(dim=0)
    if max(x.shape[1], y.shape[1]) > x.shape[0]:
        gx, gy = x @ x.T, y @ y.T
        cross, nx, ny = (gx * gy).sum(), gx.norm(), gy.norm()
    else:
        cross, nx, ny = (y.T @ x).norm() ** 2, (x.T @ x).norm(), (y.T @ y).norm()
    denominator = float(nx * ny)
    if denominator == 0.0:  # a constant representation: similar only to another constant one
        return 1.0 if float(nx) == float(ny) == 0.0 else 0.0
    return float(cross) / denominator


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(CKAScorer)
