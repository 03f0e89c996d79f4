from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from orchestrator import PolicyError, load_policy, parse_policy
from orchestrator.cli import app

from .conftest import POLICIES

if TYPE_CHECKING:
    from pathlib import Path

GOOD = """\
schema_version: 1
task: digits-cnn
pipeline:
  pruner:
    name: torch-pruning
    options: {round_to: 8}
  quantizer: torch-int8
plan:
  layers:
    features.conv1: {prune_ratio: 0.25, bits: 8}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_validates(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_misspelt_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("  pruner:", "  prunner:"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:4" in result.output
    assert "pipeline.prunner" in result.output
    assert "did you mean 'pruner'" in result.output


def test_misspelt_option_of_a_component_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("round_to: 8", "round_too: 8"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:6" in result.output
    assert "pipeline.pruner.options.round_too" in result.output


def test_unknown_pruner_lists_the_known_pruners(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("name: torch-pruning", "name: torch-pruner"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "unknown pruner 'torch-pruner'" in result.output
    assert "known pruners: " in result.output
    assert "torch-pruning" in result.output.split("known pruners: ")[1]
    assert f"{path}:5" in result.output


def test_bad_value_in_plan_names_the_layer(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("prune_ratio: 0.25", "prune_ratio: 1.5"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.line == 10
    assert info.value.field == "plan.layers.features.conv1.prune_ratio"


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("{round_to: 8}", "{round_to: 8"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.line is not None
    assert info.value.line >= 6


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("schema_version: 1", "schema_version: 7"))
    with pytest.raises(PolicyError, match="schema_version 7 is not supported") as info:
        load_policy(path)
    assert info.value.line == 1


def test_missing_task_is_named() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("schema_version: 1\n")
    assert info.value.field == "task"


def test_python_objects_in_yaml_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(PolicyError, match="invalid YAML"):
        load_policy(path)


def test_schema_command_prints_the_json_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "schema_version" in schema["required"]
    assert schema["additionalProperties"] is False


def _steps_policy(pipeline: str, rest: str) -> str:
    return f"schema_version: 1\ntask: digits-cnn\npipeline:\n  {pipeline}\n{rest}"


@pytest.mark.parametrize(
    ("pipeline", "layer", "field", "says"),
    [
        (
            "quantizer: torch-int8",
            "{prune_ratio: 0.25}",
            "prune_ratio",
            "no channel or weight pruner (its pruners: none)",
        ),
        ("pruner: depth", "{prune_ratio: 0.25}", "prune_ratio", "(its pruners: depth)"),
        ("pruner: torch-pruning", "{bits: 8}", "bits", "no pipeline.quantizer"),
        (
            "pruner: torch-pruning",
            "{drop: true}",
            "drop",
            "no pruner that drops layers (its pruners: torch-pruning); add 'depth'",
        ),
    ],
)
def test_a_plan_asking_for_a_step_the_pipeline_lacks_is_refused_before_any_work(
    tmp_path: Path, pipeline: str, layer: str, field: str, says: str
) -> None:
    path = _write(tmp_path, _steps_policy(pipeline, f"plan:\n  layers: {{features.conv1: {layer}}}\n"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert f"{path}:6: field 'plan.layers.features.conv1.{field}': the layer sets {field}" in output
    assert says in output
    assert output.endswith(says)  # said once, nothing repeated after it


@pytest.mark.parametrize(
    ("pipeline", "rule", "field"),
    [
        ("quantizer: torch-int8", "prune_ratio: [0.0, 0.5]", "prune_ratio"),
        ("pruner: torch-pruning", "bits: [8, 32]", "bits"),
        ("pruner: torch-pruning", "drop: [false, true]", "drop"),
    ],
)
def test_a_search_rule_asking_for_a_step_the_pipeline_lacks_is_refused(
    tmp_path: Path, pipeline: str, rule: str, field: str
) -> None:
    space = f"search:\n  space:\n    - {{layers: [features.conv1], {rule}}}\n"
    path = _write(tmp_path, _steps_policy(pipeline, space))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:7: field 'search.space.0.{field}': the rule sets {field}" in " ".join(
        result.output.split()
    )


def test_two_pruners_of_ratios_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _steps_policy("pruner: [torch-pruning, sparse]", "plan: {layers: {}}\n"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert f"{path}:4: field 'pipeline.pruner': pruners torch-pruning, sparse would each apply" in output


@pytest.mark.parametrize(
    ("rest", "line", "field", "what"),
    [
        ("plan:\n  layers: {features.conv1: {bits: 4}}\n", 6, "plan.layers.features.conv1.bits", "layer"),
        ("search:\n  space:\n    - {types: [Conv2d], bits: [4, 8, 32]}\n", 7, "search.space.0.bits", "rule"),
    ],
)
def test_bits_no_quantizer_of_the_pipeline_gives_are_refused_before_any_work(
    tmp_path: Path, rest: str, line: int, field: str, what: str
) -> None:
    path = _write(tmp_path, _steps_policy("quantizer: torch-int8", rest))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert (
        f"{path}:{line}: field '{field}': the {what} sets bits [4] but the quantizers (torch-int8)" in output
    )
    assert "support bits [8] (and 32 = float)" in output
