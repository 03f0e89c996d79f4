"""The contract of a scorer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from orchestrator.components import (
    Scorer,
    Scores,
)
from orchestrator.layers import output_channels
from orchestrator.pipeline import targets_of
from orchestrator.task import Task
from orchestrator.testing.contracts._base import OnTaskContract
from orchestrator.testing.contracts._support import (
    assert_numbers,
    assert_unchanged,
    create,
    is_number,
    snapshot,
)
from orchestrator.testing.tasks import TinyDigits, TinyDigitsOptions

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.registry import PluginRegistry


class ScorerContract(OnTaskContract):
    """``score`` gives a finite float for requested layers only, leaves the model alone, is deterministic
    and fills ``Scores.channels`` exactly when ``per_channel`` says so."""

    component: ClassVar[type[Scorer[Any]]]
    base = Scorer

    @classmethod
    def make_task(cls) -> Task[Any]:
        """``tiny-digits`` with a CNN, or a residual net for a scorer of droppable blocks."""
        model = "resnet" if cls.component.targets == "blocks" else cls.tiny_model
        return TinyDigits(options=TinyDigitsOptions(model=model))

    def _score(
        self, registry: PluginRegistry, model: nn.Module, task: Task[Any], layers: list[str] | None = None
    ) -> tuple[Scores, list[str]]:
        scorer = create(registry, self.component, self.options)
        targets = layers if layers is not None else targets_of(scorer, model, task.example_inputs(2))
        assert targets, f"the model of task '{task.name}' has nothing for a scorer of {scorer.targets}"
        scores = scorer.score(model, task, targets)
        assert isinstance(scores, Scores), f"score returned {type(scores)!r}, not Scores"
        return scores, targets

    def test_scores_are_finite_floats_for_requested_layers(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        scores, targets = self._score(orchestrator_registry, contract_model, contract_task)
        extra = sorted(set(scores.layers) - set(targets))
        assert not extra, f"scored names it was not asked for: {extra}"
        assert scores.layers, f"scored none of {targets}"
        assert_numbers(scores.layers, "layer scores")

    def test_scores_only_the_layers_it_is_given(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        full, _ = self._score(orchestrator_registry, contract_model, contract_task)
        some = list(full.layers)[-1:]
        scores, _ = self._score(orchestrator_registry, contract_model, contract_task, some)
        assert set(scores.layers) == set(some), f"asked for {some}, scored {sorted(scores.layers)}"
        assert set(scores.channels) <= set(some), (
            f"asked for {some}, gave channels of {sorted(scores.channels)}"
        )

    def test_leaves_the_model_unchanged(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        before = snapshot(contract_model)
        self._score(orchestrator_registry, contract_model, contract_task)
        assert_unchanged(before, contract_model, "score")

    def test_is_deterministic(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        first, _ = self._score(orchestrator_registry, contract_model, contract_task)
        second, _ = self._score(orchestrator_registry, contract_model, contract_task)
        assert second.layers == pytest.approx(first.layers, rel=1e-6, abs=1e-9)
        assert set(second.channels) == set(first.channels)
        for name, values in first.channels.items():
            assert list(second.channels[name]) == pytest.approx(list(values), rel=1e-6, abs=1e-9), name

    def test_channel_scores_match_the_per_channel_flag(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        scores, targets = self._score(orchestrator_registry, contract_model, contract_task)
        if not self.component.per_channel:
            assert not scores.channels, "per_channel is False but score filled Scores.channels"
            return
        assert scores.channels, "per_channel is True but score left Scores.channels empty"
        extra = sorted(set(scores.channels) - set(targets))
        assert not extra, f"channel scores for names it was not asked for: {extra}"
        for name, values in scores.channels.items():
            values = list(values)
            assert all(is_number(v) for v in values), f"non-finite or non-float channel scores of '{name}'"
            want = output_channels(contract_model.get_submodule(name))
            if want is not None:
                assert len(values) == want, f"'{name}' has {want} output channels, {len(values)} scores"
