"""orchestrator.testing: the contract suites fail the components that break a contract, and only the
contracts they break; the fixtures plugin and the isolated registry keep tests apart from the machine."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from orchestrator.testing import TaskContract, TinyDigits, isolated_registry

if TYPE_CHECKING:
    from pathlib import Path

pytest_plugins = ["pytester"]

BROKEN = '''
import copy

import torch
from pydantic import ConfigDict

from orchestrator import ComponentOptions, Distiller, Pruner, Quantizer, Scorer, Scores
from orchestrator.testing import (
    DistillerContract, PrunerContract, QuantizerContract, ScorerContract, TaskContract, TinyDigits,
)


class Loose(ComponentOptions):
    model_config = ConfigDict(extra="allow", frozen=True)


class LeakyScorer(Scorer[ComponentOptions]):
    """Scores every layer, a name it was not given, and zeroes a weight of the model on the way."""

    name = "leaky"

    def score(self, model, task, layers):
        with torch.no_grad():
            model.get_submodule(layers[0]).weight[0].zero_()
        return Scores(layers={**{n: 1.0 for n in layers}, "not-a-layer": 0.5})


class LazyPruner(Pruner[ComponentOptions]):
    """Claims to prune and does nothing."""

    name = "lazy"

    def prune(self, model, plan, task, *, scores=None):
        return model


class SilentQuantizer(Quantizer[Loose]):
    """Takes any option, and returns the model untouched for bits it does not support."""

    name = "silent"
    Options = Loose
    supported_bits = frozenset({8})

    def quantize(self, model, plan, task):
        chosen = {n for n, b in plan.bits().items() if b in self.supported_bits}
        for name in chosen:
            with torch.no_grad():
                layer = model.get_submodule(name)
                layer.weight.copy_(layer.weight.half().float())
        return model


class TeacherTrainer(Distiller[ComponentOptions]):
    """Recovers the student, and nudges the teacher's weights too."""

    name = "teacher-trainer"

    def distill(self, student, teacher, task, *, monitor=None):
        student.load_state_dict(teacher.state_dict())
        with torch.no_grad():
            next(teacher.parameters()).add_(1.0)
        return student.eval()


class OneShotTask(TinyDigits):
    """Its training data is a generator: the second epoch is empty."""

    name = "one-shot"

    def train_data(self):
        return iter(list(super().train_data()))


class TestLeakyScorer(ScorerContract):
    component = LeakyScorer


class TestLazyPruner(PrunerContract):
    component = LazyPruner


class TestSilentQuantizer(QuantizerContract):
    component = SilentQuantizer


class TestTeacherTrainer(DistillerContract):
    component = TeacherTrainer


class TestOneShotTask(TaskContract):
    component = OneShotTask
'''

#: every contract each broken component must fail, and no other
EXPECTED_FAILURES = {
    "TestLeakyScorer": {
        "test_scores_are_finite_floats_for_requested_layers",
        "test_scores_only_the_layers_it_is_given",
        "test_leaves_the_model_unchanged",
    },
    "TestLazyPruner": {"test_plan_shrinks_the_model_which_still_runs"},
    "TestSilentQuantizer": {
        "test_options_are_strict_and_immutable",
        "test_unknown_option_is_refused_naming_it",
        *{f"test_other_bits_are_refused[{b}bit]" for b in (2, 3, 4, 5, 6, 7, 16)},
    },
    "TestTeacherTrainer": {"test_leaves_the_teacher_unchanged"},
    "TestOneShotTask": {"test_batches_feed_the_model_and_its_loss"},
}


def _outcomes(result: pytest.RunResult) -> dict[str, set[str]]:
    """``{outcome: {node id}}`` from the short summary of a run with ``-rA``."""
    found: dict[str, set[str]] = {}
    for line in result.outlines:
        outcome, _, rest = line.partition(" ")
        if outcome in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            found.setdefault(outcome, set()).add(rest.split(" - ")[0])
    return found


def test_contract_suites_fail_exactly_the_broken_contracts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    outcomes = _outcomes(result)
    failed: dict[str, set[str]] = {}
    for node in outcomes.get("FAILED", set()):
        _, cls, test = node.split("::")
        failed.setdefault(cls, set()).add(test)
    assert failed == EXPECTED_FAILURES, result.stdout.str()[-3000:]
    assert "ERROR" not in outcomes
    ran = {node.split("::")[1] for node in outcomes["PASSED"]}
    assert ran == set(EXPECTED_FAILURES)  # every suite ran its other tests, and they passed
    assert len(outcomes["PASSED"]) > 30
    skips = {line.partition(": set ")[2][:8] for line in result.outlines if line.startswith("SKIPPED")}
    assert skips == {"'plugin'", "budget ="}  # only the optional checks nobody asked for


class TestTinyDigits(TaskContract):
    """The task the suites run on passes the task suite, with each of its models."""

    component = TinyDigits


class TestTinyDigitsResNet(TaskContract):
    component = TinyDigits
    options: ClassVar[dict[str, Any]] = {"model": "resnet"}


def test_fixtures_plugin_gives_an_isolated_registry_and_tiny_models(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["orchestrator.testing.fixtures"]')
    pytester.makepyfile(
        test_fixtures=textwrap.dedent(
            """
            import pytest
            from orchestrator import Scorer, Scores

            class Flat(Scorer):
                name = "flat"

                def score(self, model, task, layers):
                    return Scores(layers=dict.fromkeys(layers, 1.0))

            @pytest.mark.orchestrator_plugins(components=[Flat])
            def test_marked_component_is_registered(orchestrator_registry):
                assert orchestrator_registry.components.get("scorer", "flat") is Flat
                assert "magnitude" in orchestrator_registry.components.names("scorer")

            def test_unmarked_registry_has_builtins_only(orchestrator_registry):
                assert "flat" not in orchestrator_registry.components.names("scorer")
                assert "tiny-digits" in orchestrator_registry.components.names("task")

            def test_tiny_task_is_trained(tiny_task):
                assert tiny_task.evaluate(tiny_task.build_model())["accuracy"] > 60

            def test_tiny_models_run(tiny_task, tiny_cnn, tiny_mlp, tiny_resnet):
                x = tiny_task.example_inputs(3)
                for model in (tiny_cnn, tiny_mlp, tiny_resnet):
                    assert model(*x).shape == (3, 10)
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=4)


def test_isolated_registry_ignores_other_plugins_and_the_block_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exploding_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    dist = tmp_path / "exploding_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: exploding-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[orchestrator]\nexploding = exploding_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ORCHESTRATOR_BLOCK", "magnitude")
    registry = isolated_registry()
    assert "exploding" not in registry.plugin_names()
    info = registry.components.info("scorer", "magnitude")
    assert info.distribution == "compression-orchestrator"


def test_importing_the_package_imports_neither_the_testing_package_nor_pytest() -> None:
    code = (
        "import sys, orchestrator; print([m for m in ('orchestrator.testing', 'pytest') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
