"""Scorer ``activation-variance``: the share of a layer's output that varies over the data.

A channel whose output is the same for every input carries no information: the next layer could read a
constant instead (fold it into a bias). Over ``batches`` calibration batches of the task, in eval mode, each
layer's output is collected per output channel (over samples and positions):

- channel score: the variance of the channel's output;
- layer score: the summed variance of its channels over their summed second moment, ``sum var / sum E[x^2]``,
  in [0, 1]: the share of the output's energy that varies. It does not depend on the layer's scale, so
  layers compare; a layer whose output is mostly a constant offset scores near 0.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import ComponentOptions, Scorer, Scores, Task

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from torch import nn


class VarianceOptions(ComponentOptions):
    #: calibration batches the statistics are gathered over
    batches: int = Field(default=4, ge=1)


class _Moments:
    """Running per-channel sums of x and x^2 of a layer's output (channels in dim 1, or last for Linear)."""

    def __init__(self, channel_dim: int) -> None:
        self.channel_dim = channel_dim
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        values = output.detach().double().movedim(self.channel_dim, 0).flatten(1)
        total, squares = values.sum(1), (values * values).sum(1)
        self.sum = total if self.sum is None else self.sum + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += values.shape[1]

    def scores(self) -> tuple[float, list[float]] | None:
        if self.sum is None or self.squares is None or self.count == 0:
            return None
        mean, second = self.sum / self.count, self.squares / self.count
        variance = (second - mean * mean).clamp_min(0.0)
        energy = float(second.sum())
        return (float(variance.sum()) / energy if energy > 0 else 0.0), variance.tolist()


class ActivationVariance(Scorer[VarianceOptions]):
    """Variance of each output channel over the data; per layer, the share of its output that varies."""

    name: ClassVar[str] = "activation-variance"
    Options = VarianceOptions
    per_channel: ClassVar[bool] = True

    def score(self, model: nn.Module, task: Task[Any], layers: Sequence[str]) -> Scores:
        import torch
        from torch import nn

        work = copy.deepcopy(model).eval()  # the caller's model is left as it is
        moments: dict[str, _Moments] = {}
        hooks = []
        for name in layers:
            layer = work.get_submodule(name)
            moments[name] = _Moments(1 if isinstance(layer, nn.modules.conv._ConvNd) else -1)
            hooks.append(layer.register_forward_hook(moments[name]))
        try:
            with torch.no_grad():
                for batch in task.calibration_data(self.options.batches):
                    work(*task.inputs(batch))
        finally:
            for hook in hooks:
                hook.remove()
        found = {name: m.scores() for name, m in moments.items()}
        measured = {name: result for name, result in found.items() if result is not None}
        return Scores(
            layers={name: share for name, (share, _) in measured.items()},
            channels={name: variances for name, (_, variances) in measured.items()},
            details={"batches": self.options.batches, "not_run": sorted(set(found) - set(measured))},
        )
