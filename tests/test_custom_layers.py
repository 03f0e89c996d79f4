"""A custom layer the pruner cannot prune on its own: a named warning instead of a silently ignored plan,
and the two ways to teach it (the parameter's channel dimension, or a handler for the layer class)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator import CompressionPlan, PlanError, load_registry
from orchestrator.cli import app

from .custom_layers import Affine, AffineDigits

PLAN = CompressionPlan.from_mapping({"layers": {"conv1": {"prune_ratio": 0.5}}})
POLICY = """\
schema_version: 1
task: tests.custom_layers:AffineDigits
pipeline:
  pruner:
    name: torch-pruning
    options: {options}
plan:
  layers:
    conv1: {{prune_ratio: 0.5}}
"""


@pytest.fixture(scope="module")
def task() -> AffineDigits:
    return AffineDigits()


def _prune(task: AffineDigits, **options: Any) -> tuple[Any, list[str]]:
    pruner = load_registry().components.create("pruner", "torch-pruning", options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = pruner.prune(task.build_model(), PLAN, task)  # type: ignore[attr-defined]
    return model, [str(w.message) for w in caught]


def test_a_layer_left_whole_because_of_a_custom_layer_is_named_in_a_warning(task: AffineDigits) -> None:
    model, caught = _prune(task)
    assert model.conv1.out_channels == 8  # torch-pruning guessed the wrong dimension and pruned nothing
    (ours,) = [m for m in caught if m.startswith("torch-pruning left layer 'conv1' whole (prune_ratio 0.5)")]
    assert "unwrapped_parameters" in ours
    assert "custom_layers" in ours


def test_the_channel_dimension_of_a_custom_parameter_makes_the_plan_happen(task: AffineDigits) -> None:
    model, caught = _prune(task, unwrapped_parameters={"affine.table": 0})
    assert model.conv1.out_channels == 4
    assert tuple(model.affine.table.shape) == (4, 2)
    assert model.conv2.in_channels == 4
    assert not [m for m in caught if "left layer" in m]
    assert tuple(model(*task.example_inputs(3)).shape) == (3, 10)  # and it runs


def test_a_handler_for_the_custom_layer_class_prunes_it(task: AffineDigits) -> None:
    handler = {"tests.custom_layers:Affine": "tests.custom_layers:AffinePruner"}
    model, caught = _prune(task, custom_layers=handler)
    assert isinstance(model.affine, Affine)
    assert (model.conv1.out_channels, tuple(model.affine.table.shape)) == (4, (4, 2))
    assert not [m for m in caught if "left layer" in m or "Unwrapped parameters" in m]


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        (
            '{custom_layers: {"tests.custom_layers:Nope": "tests.custom_layers:AffinePruner"}}',
            "pipeline.pruner.options.custom_layers",
            "module 'tests.custom_layers' has no attribute 'Nope'",
        ),
        (
            '{custom_layers: {"tests.custom_layers:Affine": "tests.custom_layers:AffineNet"}}',
            "pipeline.pruner.options.custom_layers",
            "is the class AffineNet, not a BasePruningFunc class",
        ),
        (
            "{unwrapped_parameters: {affine.table: -1}}",
            "pipeline.pruner.options.unwrapped_parameters",
            "greater than or equal to 0",
        ),
    ],
)
def test_options_that_lead_nowhere_are_refused_by_validate(
    tmp_path: Path, options: str, field: str, says: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(options=options))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"field '{field}" in output
    assert says in output


def test_apply_prunes_a_model_with_a_custom_layer_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(options="{unwrapped_parameters: {affine.table: 0}}"))
    result = CliRunner().invoke(app, ["apply", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["ratios"]["macs_ratio"] < 0.6
    assert metrics["task"] == "tests.custom_layers:AffineDigits"


def test_a_parameter_name_the_model_lacks_is_refused(task: AffineDigits) -> None:
    with pytest.raises(PlanError, match=r"'affine\.tabel' is not a parameter of the model"):
        _prune(task, unwrapped_parameters={"affine.tabel": 0})
