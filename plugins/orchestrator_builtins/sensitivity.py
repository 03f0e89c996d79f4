"""Scorer ``sensitivity``: how much the task metric drops when one layer alone is pruned or quantized.

For each layer and each of ``levels``, a copy of the model has that fraction of the layer's output channels
removed with torch-pruning (L2 weight magnitude picks the channels; coupled layers such as its BatchNorm,
the next layer's inputs and residual partners follow), its BatchNorm statistics re-estimated on
``bn_recalibration`` training batches (as the pipeline does after pruning), and is evaluated without
retraining: the sensitivity of the layer as the search will see it. Separately, a copy with only that
layer's weights passed through simulated int8 (symmetric, per output channel, quantize-dequantize;
activations stay float) is evaluated.

A drop is ``baseline - metric`` for a metric where higher is better (``metric - baseline`` otherwise), in the
metric's units; it may be negative when the change happens to help.

- ``details["prune_curve"][layer] = {level: drop}``; empty for a layer that cannot be channel-pruned (a layer
  producing the model's output, or one torch-pruning cannot change).
- ``details["quant_drop"][layer] = drop`` at int8.
- ``details["baseline"]``: the metric of the unchanged model on the same data.
- ``layers[layer]``: the drop at the middle level (``levels[len(levels) // 2]``) of the prune curve; for a
  layer without a prune curve, its int8 drop. Higher means more sensitive, i.e. more important.
"""

from __future__ import annotations

import copy
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from orchestrator import ComponentOptions, Scorer, Scores, Task, hookimpl
from orchestrator.batchnorm import recalibrate_batchnorm
from orchestrator.layers import output_layers

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn


class SensitivityOptions(ComponentOptions):
    #: fractions of output channels removed, one evaluation each (sorted, in (0, 1))
    levels: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], min_length=1)
    #: evaluate on the first N batches of ``task.eval_data()`` only (None: all); the task's ``evaluate``
    #: must read its data through ``eval_data()``, as the builtin tasks do
    eval_batches: int | None = Field(default=None, ge=1)
    #: training batches BatchNorm statistics are re-estimated on after each pruning (0: keep the baseline's)
    bn_recalibration: int = Field(default=16, ge=0)

    @field_validator("levels")
    @classmethod
    def _valid_levels(cls, levels: list[float]) -> list[float]:
        if any(not 0.0 < level < 1.0 for level in levels):
            raise ValueError(f"every level must be in (0, 1), got {levels}")
        return sorted(set(levels))


class SensitivityScorer(Scorer[SensitivityOptions]):
    """Metric drop when a layer alone is channel-pruned (per level) or int8-quantized; no retraining."""

    name: ClassVar[str] = "sensitivity"
    Options = SensitivityOptions

    def score(self, model: Any, task: Task[Any], layers: Sequence[str]) -> Scores:
        base = copy.deepcopy(model).eval()
        judge = _limited(task, self.options.eval_batches)
        baseline = _metric(judge, base)
        outputs = set(output_layers(base, task.example_inputs(2)))
        curves: dict[str, dict[float, float]] = {}
        quant: dict[str, float] = {}
        for name in layers:
            curves[name] = {}
            if name not in outputs:
                for level in self.options.levels:
                    pruned = _pruned_copy(base, name, level, task, outputs)
                    if pruned is not None:
                        recalibrate_batchnorm(pruned, task, self.options.bn_recalibration)
                        curves[name][level] = _drop(judge, baseline, _metric(judge, pruned))
            quant[name] = _drop(judge, baseline, _metric(judge, _fake_int8_copy(base, name)))
        middle = self.options.levels[len(self.options.levels) // 2]
        per_layer = {n: curves[n].get(middle, quant[n]) for n in layers}
        details = {"prune_curve": curves, "quant_drop": quant, "baseline": baseline, "metric": task.metric}
        return Scores(layers=per_layer, details=details)


def _limited(task: Task[Any], batches: int | None) -> Task[Any]:
    """The task, or a shallow copy whose ``eval_data()`` yields only its first ``batches`` batches."""
    if batches is None:
        return task
    limited = copy.copy(task)
    held_out = list(islice(iter(task.eval_data()), batches))
    limited.eval_data = lambda: held_out  # type: ignore[method-assign]
    return limited


def _metric(task: Task[Any], model: nn.Module) -> float:
    return float(task.evaluate(model.eval())[task.metric])


def _drop(task: Task[Any], baseline: float, value: float) -> float:
    return baseline - value if task.higher_is_better else value - baseline


def _pruned_copy(
    model: nn.Module, name: str, level: float, task: Task[Any], outputs: set[str]
) -> nn.Module | None:
    """A copy with ``level`` of ``name``'s output channels removed, or None if torch-pruning removes none."""
    import torch_pruning as tp

    work = copy.deepcopy(model)
    layer = work.get_submodule(name)
    before = layer.weight.shape
    pruner = tp.pruner.MetaPruner(
        work,
        task.example_inputs(2),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.0,
        pruning_ratio_dict={layer: level},
        ignored_layers=[work.get_submodule(n) for n in outputs],
    )
    pruner.step()
    return work if layer.weight.shape != before else None


def _fake_int8_copy(model: nn.Module, name: str) -> nn.Module:
    """A copy whose layer ``name`` has int8-rounded weights (symmetric, one scale per output row)."""
    import torch

    work = copy.deepcopy(model)
    weight = getattr(work.get_submodule(name), "weight", None)
    if isinstance(weight, torch.Tensor):
        with torch.no_grad():
            rows = weight.detach().flatten(1) if weight.dim() > 1 else weight.detach()[None]
            scale = rows.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127.0
            weight.copy_(((rows / scale).round().clamp(-127, 127) * scale).reshape(weight.shape))
    return work


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(SensitivityScorer)
