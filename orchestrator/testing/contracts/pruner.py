"""The contract of a pruner."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from orchestrator.components import Pruner
from orchestrator.layers import compressible_layers, droppable_blocks, output_layers
from orchestrator.plan import CompressionPlan, LayerDecision
from orchestrator.task import Task
from orchestrator.testing.contracts._base import OnTaskContract
from orchestrator.testing.contracts._support import (
    assert_numbers,
    assert_runs_like,
    assert_saves,
    assert_unchanged,
    create,
    is_number,
    metric_of,
    param_count,
    snapshot,
    weight_of,
)
from orchestrator.testing.tasks import TinyDigits, TinyDigitsOptions

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from orchestrator.registry import PluginRegistry


class PrunerContract(OnTaskContract):
    """A plan's decisions shrink the model, which still runs, trains, evaluates and saves; decisions the
    pruner does not handle, and a zero ratio, change nothing.

    A pruner handles ``drop`` when ``handles_drop`` says so (tested on a residual net: a dropped block's
    parameters are gone), else ``prune_ratio`` (the first hidden layer loses about ``prune_ratio`` of its
    weights: whole channels for a ``structured`` pruner, which also makes the model smaller, zeros for
    an unstructured one).
    """

    component: ClassVar[type[Pruner[Any]]]
    base = Pruner
    #: the ratio the plan gives the pruned layer
    prune_ratio: ClassVar[float] = 0.5
    #: how far the share of the layer's weights removed may be from ``prune_ratio`` (whole channels)
    ratio_tolerance: ClassVar[float] = 0.25

    @classmethod
    def make_task(cls) -> Task[Any]:
        """``tiny-digits`` with a CNN, or a residual net for a pruner that drops blocks."""
        model = "resnet" if cls.component.handles_drop else cls.tiny_model
        return TinyDigits(options=TinyDigitsOptions(model=model))

    def _target(self, model: nn.Module, task: Task[Any]) -> str:
        """The layer a ratio plan prunes (the first hidden one) or the block a drop plan drops."""
        example = task.example_inputs(2)
        if self.component.handles_drop:
            blocks = droppable_blocks(model, example)
            assert blocks, f"the model of task '{task.name}' has no droppable block"
            return blocks[0]
        outputs = set(output_layers(model, example))
        hidden = [n for n in compressible_layers(model) if n not in outputs]
        assert hidden, f"the model of task '{task.name}' has no hidden layer to prune"
        return hidden[0]

    def _handled(self, target: str) -> CompressionPlan:
        decision = (
            LayerDecision(drop=True)
            if self.component.handles_drop
            else LayerDecision(prune_ratio=self.prune_ratio)
        )
        return CompressionPlan(layers={target: decision})

    def _prune(
        self, registry: PluginRegistry, model: nn.Module, task: Task[Any], plan: CompressionPlan
    ) -> nn.Module:
        pruner = create(registry, self.component, self.options)
        pruned = pruner.prune(model, plan, task)
        assert pruned is not None, "prune returned None; return the pruned model"
        return pruned.eval()

    def test_plan_shrinks_the_model_which_still_runs(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        reference = copy.deepcopy(contract_model)
        target = self._target(contract_model, contract_task)
        params = param_count(contract_model)
        if self.component.handles_drop:
            gone = param_count(contract_model.get_submodule(target))
            pruned = self._prune(orchestrator_registry, contract_model, contract_task, self._handled(target))
            assert param_count(pruned) <= params - gone, f"dropping '{target}' did not remove its parameters"
        else:
            weight = weight_of(contract_model.get_submodule(target))
            kept_before = int(torch.count_nonzero(weight))
            pruned = self._prune(orchestrator_registry, contract_model, contract_task, self._handled(target))
            removed = 1.0 - int(torch.count_nonzero(weight_of(pruned.get_submodule(target)))) / kept_before
            assert removed > 0, f"prune_ratio {self.prune_ratio} on '{target}' removed no weight"
            assert abs(removed - self.prune_ratio) <= self.ratio_tolerance, (
                f"prune_ratio {self.prune_ratio} on '{target}' removed {removed:.2f} of its weights"
            )
            if self.component.structured:
                assert param_count(pruned) < params, "a structured pruner left the parameter count as is"
        assert_runs_like(pruned, reference, contract_task, "the pruned model")

    def test_pruned_model_trains_evaluates_and_saves(
        self,
        orchestrator_registry: PluginRegistry,
        contract_model: nn.Module,
        contract_task: Task[Any],
        tmp_path: Path,
    ) -> None:
        plan = self._handled(self._target(contract_model, contract_task))
        pruned = self._prune(orchestrator_registry, contract_model, contract_task, plan)
        assert is_number(metric_of(contract_task, pruned)), "the pruned model's metric is not finite"
        batch = next(iter(contract_task.train_data()))
        pruned.train()
        contract_task.loss(pruned(*contract_task.inputs(batch)), batch).backward()
        grads = [p.grad for p in pruned.parameters() if p.requires_grad]
        assert grads, "the pruned model has no trainable parameter left"
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), "bad gradients"
        pruned.zero_grad(set_to_none=True)
        assert_saves(pruned.eval(), contract_task, tmp_path, "the pruned model")
        pruner = create(orchestrator_registry, self.component, self.options)
        assert_numbers(pruner.metrics(pruned), "Pruner.metrics")

    def test_plans_it_does_not_act_on_change_nothing(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        target = self._target(contract_model, contract_task)
        layers = list(compressible_layers(contract_model))
        other = LayerDecision(prune_ratio=self.prune_ratio) if self.component.handles_drop else None
        plans = {
            "an empty plan": CompressionPlan(),
            "prune_ratio 0": CompressionPlan(layers={n: LayerDecision(prune_ratio=0.0) for n in layers}),
            "bits only": CompressionPlan(layers={n: LayerDecision(bits=8) for n in layers}),
            "a decision it does not handle": CompressionPlan(
                layers={target: other if other is not None else LayerDecision(drop=True)}
            ),
        }
        for what, plan in plans.items():
            model = copy.deepcopy(contract_model)
            before = snapshot(model)
            pruned = self._prune(orchestrator_registry, model, contract_task, plan)
            assert_unchanged(before, pruned, f"prune with {what}")
