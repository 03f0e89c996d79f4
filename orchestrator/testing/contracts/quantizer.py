"""The contract of a quantizer."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch

from orchestrator.components import Quantizer
from orchestrator.errors import PlanError
from orchestrator.layers import compressible_layers
from orchestrator.plan import FLOAT_BITS, VALID_BITS, CompressionPlan, LayerDecision
from orchestrator.task import Task
from orchestrator.testing.contracts._base import OnTaskContract
from orchestrator.testing.contracts._support import (
    assert_numbers,
    assert_runs_like,
    assert_saves,
    create,
    is_number,
    metric_of,
    run,
)

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from orchestrator.registry import PluginRegistry


class QuantizerContract(OnTaskContract):
    """Each declared bit-width applies to the layers ``handles`` accepts, and the result runs, evaluates and
    saves; other bit-widths are refused with a :class:`~orchestrator.errors.PlanError`; float plans change
    nothing; ``accelerates``, ``describe_support`` and ``metrics`` answer."""

    component: ClassVar[type[Quantizer[Any]]]
    base = Quantizer

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize ``bits`` over the declared bit-widths and ``refused`` over the other valid ones."""
        supported = sorted(self.component.supported_bits - {FLOAT_BITS})
        if "bits" in metafunc.fixturenames:
            metafunc.parametrize("bits", supported, ids=[f"{b}bit" for b in supported])
        if "refused" in metafunc.fixturenames:
            others = sorted(VALID_BITS - self.component.supported_bits - {FLOAT_BITS})
            metafunc.parametrize("refused", others, ids=[f"{b}bit" for b in others])

    def _quantizer(self, registry: PluginRegistry) -> Quantizer[Any]:
        return create(registry, self.component, self.options)

    def test_declared_bits_apply_and_the_result_runs_evaluates_and_saves(
        self,
        bits: int,
        orchestrator_registry: PluginRegistry,
        contract_model: nn.Module,
        contract_task: Task[Any],
        tmp_path: Path,
    ) -> None:
        quantizer = self._quantizer(orchestrator_registry)
        reference = copy.deepcopy(contract_model)
        layers = compressible_layers(contract_model)
        taken = {n: LayerDecision(bits=bits) for n, m in layers.items() if quantizer.handles(m, bits)}
        assert taken, f"handles() takes no layer of the model at {bits} bits ({quantizer.describe_support()})"
        quantized = quantizer.quantize(contract_model, CompressionPlan(layers=taken), contract_task).eval()
        assert_runs_like(quantized, reference, contract_task, f"the model at {bits} bits")
        assert is_number(metric_of(contract_task, quantized)), "the quantized model's metric is not finite"
        assert_saves(quantized, contract_task, tmp_path, f"the model at {bits} bits")
        assert_numbers(quantizer.metrics(quantized), "Quantizer.metrics")

    def test_other_bits_are_refused(
        self,
        refused: int,
        orchestrator_registry: PluginRegistry,
        contract_model: nn.Module,
        contract_task: Task[Any],
    ) -> None:
        quantizer = self._quantizer(orchestrator_registry)
        layers = compressible_layers(contract_model)
        taken = [n for n, m in layers.items() if quantizer.handles(m, refused)]
        assert not taken, f"handles() takes {taken} at {refused} bits, which supported_bits does not hold"
        assert quantizer.accelerates(refused) is False, f"accelerates({refused}) is not False"
        name = next(iter(layers))
        plan = CompressionPlan(layers={name: LayerDecision(bits=refused)})
        with pytest.raises(PlanError) as error:
            quantizer.quantize(contract_model, plan, contract_task)
        message = str(error.value)
        assert name in message, f"the error does not name the layer: {message}"
        assert str(refused) in message, f"the error does not name the bit-width: {message}"

    def test_float_plans_change_nothing(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        layers = list(compressible_layers(contract_model))
        inputs = contract_task.example_inputs(3)
        want = run(contract_model, inputs)
        for plan in (
            CompressionPlan(),
            CompressionPlan(layers={n: LayerDecision(bits=FLOAT_BITS) for n in layers}),
        ):
            quantized = self._quantizer(orchestrator_registry).quantize(
                copy.deepcopy(contract_model), plan, contract_task
            )
            assert torch.equal(run(quantized.eval(), inputs), want), f"{plan.to_dict()} changed the outputs"

    def test_capabilities_answer(self, orchestrator_registry: PluginRegistry) -> None:
        quantizer = self._quantizer(orchestrator_registry)
        for bits in sorted(VALID_BITS):
            answer = quantizer.accelerates(bits)
            assert isinstance(answer, bool), f"accelerates({bits}) gave {answer!r}, not a bool"
            if self.component.simulated:
                assert not answer, f"a simulated quantizer claims that {bits} bits run faster"
        support = quantizer.describe_support()
        assert isinstance(support, str), f"describe_support() gave {support!r}"
        assert support.strip(), "describe_support() is empty"
        assert "\n" not in support.strip(), "describe_support() goes into one-line error messages"
