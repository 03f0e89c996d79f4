"""`orchestrate apply` on the bundled digits task, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

from .conftest import POLICIES


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("apply")
    result = CliRunner().invoke(app, ["apply", str(POLICIES / "digits-apply.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "metrics.json").read_text())


def test_apply_shrinks_the_model_and_keeps_accuracy(applied: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    _, metrics = applied
    base, comp = metrics["baseline"], metrics["compressed"]
    for entry in (base, comp):
        assert {"accuracy", "params", "macs", "size_bytes"} <= entry.keys()
        for batch in (1, 64):
            assert entry[f"latency_ms_b{batch}"] > 0
            assert entry[f"latency_cv_b{batch}"] >= 0
    assert comp["macs"] <= 0.55 * base["macs"]
    assert comp["size_bytes"] <= 0.30 * base["size_bytes"]
    assert comp["accuracy"] >= base["accuracy"] - 2.0
    assert metrics["layers"]["features.conv1"]["bits"] == 8
    (quantizer,) = metrics["quantizers"]
    assert quantizer["name"] == "torch-int8"
    assert quantizer["simulated"] is False
    assert quantizer["accelerates"]["8"] is True  # x86 int8 kernels on this CPU


def test_metrics_name_the_versions_and_machine_they_were_measured_with(
    applied: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    import platform

    import torch

    environment = applied[1]["environment"]
    assert environment["torch"] == torch.__version__
    assert environment["python"] == platform.python_version()
    assert environment["torch-pruning"]  # the pipeline's pruner
    assert int(environment["cpu_count"]) >= 1


def test_saved_model_loads_in_a_fresh_process_with_the_same_accuracy(
    applied: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    out, metrics = applied
    code = (
        "import sys, json\n"
        "from orchestrator import load_registry\n"
        "from orchestrator.artifact import load_artifact\n"
        "task = load_registry().components.create('task', 'digits-cnn')\n"
        "print(json.dumps(task.evaluate(load_artifact(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out / "model.pt")],
        capture_output=True,
        text=True,
        check=True,
    )
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["accuracy"] == pytest.approx(metrics["compressed"]["accuracy"], abs=1e-9)


def test_written_plan_applies_again_to_the_same_size(
    applied: tuple[Path, dict],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    out, metrics = applied
    result = CliRunner().invoke(
        app,
        [
            "apply",
            str(out / "plan.yaml"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "metrics.json").read_text())["compressed"]
    assert again["macs"] == metrics["compressed"]["macs"]
    assert again["accuracy"] == pytest.approx(metrics["compressed"]["accuracy"], abs=0.5)


def test_plan_naming_a_missing_layer_exits_2(tmp_path: Path) -> None:
    text = (POLICIES / "digits-apply.yaml").read_text().replace("features.conv3:", "features.conv9:")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["apply", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "features.conv9" in result.output
    assert "did you mean 'features.conv3'" in result.output


def test_console_script_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            Path(sys.executable).with_name("orchestrate"),
            "validate",
            str(POLICIES / "digits-apply.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_bare_plan_applies_with_a_policy(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("layers:\n  features.conv2: {prune_ratio: 0.5}\n")
    result = CliRunner().invoke(app, ["apply", str(plan), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--policy" in result.output

    policy = POLICIES / "digits-apply.yaml"
    args = ["apply", str(plan), "--policy", str(policy), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["layers"]["features.conv2"]["prune_ratio"] == 0.5
    assert metrics["layers"]["features.conv1"]["prune_ratio"] == 0.0
    assert metrics["compressed"]["macs"] < metrics["baseline"]["macs"]


def test_a_pipeline_built_in_code_refuses_a_plan_it_cannot_carry_out(digits_task: Any, registry: Any) -> None:
    """The checks `validate` runs on a policy hold for a Pipeline built without one, too."""
    from orchestrator import CompressionPlan, PlanError
    from orchestrator.pipeline import Pipeline

    pruner = registry.components.create("pruner", "torch-pruning")
    pipeline = Pipeline(task=digits_task, pruners=[pruner])
    plan = CompressionPlan.from_mapping({"layers": {"features.conv1": {"prune_ratio": 0.5, "bits": 8}}})
    with pytest.raises(
        PlanError, match=r"layer 'features\.conv1' sets bits but the policy has no pipeline"
    ) as info:
        pipeline.check_plan(plan, digits_task.build_model())
    assert info.value.field == "plan.layers.features.conv1.bits"
