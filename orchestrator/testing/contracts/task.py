"""The contract of a task."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch

from orchestrator.task import Task
from orchestrator.testing.contracts._base import ComponentContract
from orchestrator.testing.contracts._support import (
    BATCH_SIZES,
    assert_numbers,
    assert_unchanged,
    create,
    run,
    snapshot,
)

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.registry import PluginRegistry


class TaskContract(ComponentContract):
    """``build_model`` gives the same trained model in eval mode on every call; example inputs, training
    and evaluation batches fit it; ``evaluate`` reports the primary metric, deterministically."""

    component: ClassVar[type[Task[Any]]]
    base = Task

    @pytest.fixture(scope="class")
    @classmethod
    def contract_task(cls, orchestrator_registry: PluginRegistry) -> Task[Any]:
        return create(orchestrator_registry, cls.component, cls.options)

    @pytest.fixture(scope="class")
    @classmethod
    def baseline(cls, contract_task: Task[Any]) -> nn.Module:
        return contract_task.build_model()

    def test_baseline_is_the_same_model_in_eval_mode_on_every_call(
        self, contract_task: Task[Any], baseline: nn.Module
    ) -> None:
        training = [name for name, m in baseline.named_modules() if m.training]
        assert not training, f"build_model returned modules in training mode: {training[:5]}"
        again = snapshot(contract_task.build_model())
        assert_unchanged(again, baseline, "a second build_model call")

    def test_example_inputs_fit_the_model(self, contract_task: Task[Any], baseline: nn.Module) -> None:
        for batch_size in BATCH_SIZES:
            inputs = contract_task.example_inputs(batch_size)
            assert isinstance(inputs, tuple), "example_inputs must be a tuple"
            sizes = [len(x) for x in inputs if isinstance(x, torch.Tensor)]
            assert set(sizes) == {batch_size}, f"example_inputs({batch_size}) has batch sizes {sizes}"
            assert run(baseline, inputs).shape[0] == batch_size

    def test_evaluate_reports_the_metric_deterministically(
        self, contract_task: Task[Any], baseline: nn.Module
    ) -> None:
        metric = contract_task.metric
        assert isinstance(metric, str), f"metric must be a str, not {metric!r}"
        assert metric, "metric must name the primary metric"
        assert isinstance(contract_task.higher_is_better, bool)
        before = snapshot(baseline)
        first = contract_task.evaluate(baseline)
        assert metric in first, f"evaluate gave {sorted(first)}, without the primary metric '{metric}'"
        assert_numbers(first, "evaluate's metrics")
        assert contract_task.evaluate(baseline) == pytest.approx(first, rel=1e-9, abs=1e-12)
        assert_unchanged(before, baseline, "evaluate")

    def test_batches_feed_the_model_and_its_loss(self, contract_task: Task[Any], baseline: nn.Module) -> None:
        for name, data in (
            ("train_data", contract_task.train_data()),
            ("eval_data", contract_task.eval_data()),
        ):
            for epoch in (1, 2):  # iterated once per epoch: a generator would be empty the second time
                assert sum(1 for _ in data), f"{name} yields no batch in epoch {epoch}"
        calibration = list(contract_task.calibration_data(2))
        assert 1 <= len(calibration) <= 2, f"calibration_data(2) gave {len(calibration)} batches"
        model = copy.deepcopy(baseline).train()
        batch = next(iter(contract_task.train_data()))
        loss = contract_task.loss(model(*contract_task.inputs(batch)), batch)
        assert loss.dim() == 0, f"the loss of a batch has shape {tuple(loss.shape)}, not a scalar"
        assert bool(torch.isfinite(loss)), f"the loss of a batch is {loss}"
        loss.backward()
        assert any(p.grad is not None for p in model.parameters()), "the loss gives no gradient"
