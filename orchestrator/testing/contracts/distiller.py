"""The contract of a distiller."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch

from orchestrator.components import (
    Distiller,
    RecoveryStopped,
)
from orchestrator.layers import compressible_layers
from orchestrator.task import Task
from orchestrator.testing.contracts._base import OnTaskContract
from orchestrator.testing.contracts._support import (
    CountingTask,
    assert_runs_like,
    assert_unchanged,
    create,
    metric_of,
    snapshot,
    weight_of,
)

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.registry import PluginRegistry


class DistillerContract(OnTaskContract):
    """A damaged student comes back at least as good, runs and keeps its shape; the teacher is left alone;
    the budget bounds the training; the monitor sees progress in (0, 1] and can stop recovery."""

    component: ClassVar[type[Distiller[Any]]]
    base = Distiller
    #: ``(options, batches)``: options that bound recovery, and the most training batches it may use then
    budget: ClassVar[tuple[Mapping[str, Any], int] | None] = None
    #: noise added to the student's weights, relative to each weight tensor's standard deviation
    damage: ClassVar[float] = 0.6
    #: how much worse than the damaged student the recovered one may be, in the task metric's units
    tolerance: ClassVar[float] = 0.0

    def _distill(
        self,
        registry: PluginRegistry,
        student: nn.Module,
        teacher: nn.Module,
        task: Task[Any],
        options: Mapping[str, Any] | None = None,
        monitor: Any = None,
    ) -> nn.Module:
        distiller = create(registry, self.component, self.options if options is None else options)
        result = distiller.distill(student, teacher, task, monitor=monitor)
        assert result is not None, "distill returned None; return the student"
        return result

    def _damaged(self, model: nn.Module) -> nn.Module:
        student = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in compressible_layers(student).values():
                weight = weight_of(layer)
                noise = torch.randn(weight.shape, generator=generator) * weight.std() * self.damage
                layer.weight.add_(noise)  # type: ignore[operator]
        return student

    def test_a_damaged_student_does_not_get_worse(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        student = self._damaged(contract_model)
        before = metric_of(contract_task, student)
        result = self._distill(orchestrator_registry, student, contract_model, contract_task)
        assert_runs_like(result, contract_model, contract_task, "the distilled student")
        after = metric_of(contract_task, result)
        worse = (
            after < before - self.tolerance
            if contract_task.higher_is_better
            else after > before + self.tolerance
        )
        assert not worse, f"{contract_task.metric} went from {before:.4g} to {after:.4g} in recovery"

    def test_leaves_the_teacher_unchanged(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        student = self._damaged(contract_model)
        before = snapshot(contract_model)
        self._distill(orchestrator_registry, student, contract_model, contract_task)
        assert_unchanged(before, contract_model, "distill (on the teacher)")

    def test_budget_bounds_training(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        if self.budget is None:
            pytest.skip("set budget = (options, most training batches) to check that the budget holds")
        options, most = self.budget
        counting = CountingTask(contract_task)
        student = self._damaged(contract_model)
        result = self._distill(
            orchestrator_registry, student, contract_model, counting.task, {**self.options, **options}
        )
        assert counting.batches <= most, f"with {dict(options)} it trained on {counting.batches} batches"
        assert_runs_like(result, contract_model, contract_task, "the student after a short budget")

    def test_monitor_sees_progress_and_can_stop_recovery(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        seen: list[float] = []

        def watch(fraction: float, student: nn.Module) -> None:
            seen.append(fraction)

        self._distill(
            orchestrator_registry, self._damaged(contract_model), contract_model, contract_task, monitor=watch
        )
        assert all(0.0 < f <= 1.0 for f in seen), f"the monitor was given fractions outside (0, 1]: {seen}"
        assert seen == sorted(seen), f"the fractions given to the monitor went down: {seen}"

        calls: list[float] = []

        def stop(fraction: float, student: nn.Module) -> None:
            calls.append(fraction)
            raise RecoveryStopped("stopped by the test")

        try:
            self._distill(
                orchestrator_registry,
                self._damaged(contract_model),
                contract_model,
                contract_task,
                monitor=stop,
            )
        except RecoveryStopped:
            assert calls, "RecoveryStopped came from somewhere other than the monitor"
            return
        assert not calls, "the monitor raised RecoveryStopped and distill went on"
