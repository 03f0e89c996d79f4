"""Scorer ``taylor``: first-order Taylor contribution |w * dL/dw| of each output channel (Molchanov et al.).

The task loss is back-propagated over ``task.calibration_data(batches)`` with the model in eval mode (the
model as it will be deployed: BatchNorm uses its running statistics, dropout is off), so the result is
deterministic. Gradients are averaged over the batches, then a channel's score is the sum over its weights of
|w * grad|. The layer score is the mean over channels of that sum divided by the weights per channel, so
layers of different fan-in compare. A channel whose weights are all zero scores 0.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import ComponentOptions, Scorer, Scores, Task, hookimpl

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from torch import nn


class TaylorOptions(ComponentOptions):
    #: calibration batches the gradients are averaged over
    batches: int = Field(default=8, ge=1)


class TaylorScorer(Scorer[TaylorOptions]):
    """|weight x gradient of the task loss| per output channel, and its per-weight mean per layer."""

    name: ClassVar[str] = "taylor"
    Options = TaylorOptions
    per_channel: ClassVar[bool] = True

    def score(self, model: Any, task: Task[Any], layers: Sequence[str]) -> Scores:
        import torch

        work = copy.deepcopy(model).eval()
        count = _accumulate_gradients(work, task, self.options.batches)
        channels: dict[str, list[float]] = {}
        per_layer: dict[str, float] = {}
        with torch.no_grad():
            for name in layers:
                contribution = _contribution(work.get_submodule(name), count)
                if contribution is None:
                    continue
                channels[name] = contribution.sum(1).tolist()
                per_layer[name] = float(contribution.mean())
        return Scores(layers=per_layer, channels=channels, details={"batches": count})


def _accumulate_gradients(model: nn.Module, task: Task[Any], batches: int) -> int:
    """Back-propagate the task loss over ``batches`` calibration batches; return how many there were."""
    model.zero_grad(set_to_none=True)
    count = 0
    for batch in task.calibration_data(batches):
        task.loss(model(*task.inputs(batch)), batch).backward()
        count += 1
    return count


def _contribution(layer: nn.Module, batches: int) -> torch.Tensor | None:
    """|w * mean grad| as [output channels, weights per channel], or None without weight or gradient."""
    import torch

    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return None
    grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
    product = (weight.detach() * grad / max(batches, 1)).abs().float()
    return _per_output_channel(layer, product)


def _per_output_channel(layer: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor as [output channels, weights per channel].

    Convolutions and linear layers keep output channels in dim 0, transposed convolutions in dim 1 (groups
    ignored), embeddings in dim 1 (their output features are the columns).
    """
    from torch import nn

    transposed = isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed
    if transposed or isinstance(layer, nn.Embedding):
        return tensor.transpose(0, 1).flatten(1)
    return tensor.flatten(1)


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(TaylorScorer)
