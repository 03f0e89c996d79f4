"""Pruner ``torch-pruning``: structured channel pruning through Torch-Pruning's dependency graph.

Each layer's ``prune_ratio`` from the plan removes that fraction of its output channels; every layer
coupled to it (BatchNorm, the next layer's inputs, the other members of a residual sum) is pruned
consistently, so the model really becomes smaller.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator import (
    ComponentOptions,
    CompressionPlan,
    PlanError,
    Pruner,
    Scores,
    Task,
    hookimpl,
)
from orchestrator.layers import compressible_layers, output_layers


class TorchPruningOptions(ComponentOptions):
    #: channel importance: weight magnitude, first-order Taylor, BatchNorm scale, LAMP, or the
    #: per-channel scores of the pipeline's scorer
    importance: Literal["magnitude", "taylor", "bn-scale", "lamp", "scorer"] = "magnitude"
    p: Literal[1, 2] = 2
    #: keep channel counts multiples of this (hardware-friendly shapes)
    round_to: int | None = Field(default=None, ge=1)
    #: qualified names of layers whose output channels are never pruned
    ignored_layers: list[str] = Field(default_factory=list)
    #: batches used to compute gradients for ``importance: taylor``
    taylor_batches: int = Field(default=4, ge=1)


class TorchPruningPruner(Pruner[TorchPruningOptions]):
    """Structured (channel) pruning with per-layer ratios, via torch-pruning."""

    name: ClassVar[str] = "torch-pruning"
    Options = TorchPruningOptions

    def prune(
        self, model: Any, plan: CompressionPlan, task: Task[Any], *, scores: Scores | None = None
    ) -> Any:
        import torch_pruning as tp

        layers = compressible_layers(model)
        example = task.example_inputs(2)
        outputs = set(output_layers(model, example))
        for name in self.options.ignored_layers:
            if name not in layers:
                raise PlanError(
                    f"ignored layer '{name}' is not a layer of the model",
                    field="pipeline.pruner.options.ignored_layers",
                )
        ratios = plan.prune_ratios()
        for name in ratios:
            if name in outputs:
                raise PlanError(
                    f"layer '{name}' produces the model's output; its channels cannot be pruned",
                    field=f"plan.layers.{name}.prune_ratio",
                )
            if name in self.options.ignored_layers:
                raise PlanError(
                    f"layer '{name}' is in the pruner's ignored_layers but the plan prunes it",
                    field=f"plan.layers.{name}.prune_ratio",
                )
        ignored = [layers[n] for n in {*outputs, *self.options.ignored_layers}]
        importance = self._importance(model, scores)
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=importance,
            pruning_ratio=0.0,
            pruning_ratio_dict={layers[n]: r for n, r in ratios.items()},
            ignored_layers=ignored,
            round_to=self.options.round_to,
        )
        if self.options.importance == "taylor":
            self._accumulate_gradients(model, task)
        pruner.step()
        model.zero_grad(set_to_none=True)
        return model

    def _importance(self, model: Any, scores: Scores | None) -> Any:
        import torch_pruning as tp

        choice = self.options.importance
        if choice == "taylor":
            return tp.importance.TaylorImportance()
        if choice == "bn-scale":
            return tp.importance.BNScaleImportance()
        if choice == "lamp":
            return tp.importance.LAMPImportance(p=self.options.p)
        magnitude = tp.importance.MagnitudeImportance(p=self.options.p)
        if choice == "scorer":
            if scores is None or not scores.channels:
                raise PlanError(
                    "importance 'scorer' needs a pipeline.scorer that gives per-channel scores",
                    field="pipeline.pruner.options.importance",
                )
            return _ScoreImportance(model, scores, fallback=magnitude)
        return magnitude

    def _accumulate_gradients(self, model: Any, task: Task[Any]) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        for batch in task.calibration_data(self.options.taylor_batches):
            task.loss(model(*task.inputs(batch)), batch).backward()
        model.eval()


class _ScoreImportance:
    """A torch-pruning importance that reads the pipeline scorer's per-channel scores."""

    def __init__(self, model: Any, scores: Scores, fallback: Any) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.scores = scores
        self.fallback = fallback

    def __call__(self, group: Any) -> Any:
        import torch
        import torch_pruning as tp

        out_fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        total = torch.zeros(len(group[0].idxs))
        found = False
        for i, (dep, idxs) in enumerate(group):
            name = self.names.get(id(dep.layer))
            channel_scores = self.scores.channels.get(name or "")
            if dep.pruning_fn not in out_fns or channel_scores is None:
                continue
            values = torch.tensor(channel_scores, dtype=torch.float32)[list(idxs)]
            total.scatter_add_(0, torch.tensor(group[i].root_idxs), values)
            found = True
        return total if found else self.fallback(group)


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(TorchPruningPruner)
