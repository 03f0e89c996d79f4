"""`orchestrate export`: each format reloads in a fresh process with the same outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

from .conftest import POLICIES

PRUNED_PLAN = """\
layers:
  features.conv1: {prune_ratio: 0.5}
  features.conv2: {prune_ratio: 0.5}
  features.conv3: {prune_ratio: 0.5}
  classifier.fc1: {prune_ratio: 0.5}
"""

#: run in a fresh interpreter: load the export, compare with the reference outputs saved beside it
RELOAD = """
import sys, torch
from pathlib import Path
from orchestrator.export import load_exported
path = Path(sys.argv[1])
x, want = torch.load(sys.argv[2], weights_only=True)
model = load_exported(path, trusted=True)  # written by the test
with torch.no_grad():
    got = model(x)
print(float((got - want).abs().max()), float(want.abs().max()))
"""


def _export(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["export", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A pruned (float) digits plan, and the torchscript export as the reference outputs."""
    import torch

    tmp = tmp_path_factory.mktemp("export")
    plan = tmp / "plan.yaml"
    plan.write_text(PRUNED_PLAN)
    code, output = _export(
        [
            str(plan),
            "--policy",
            str(POLICIES / "digits-apply.yaml"),
            "-f",
            "torchscript",
            "-o",
            str(tmp / "model.pt"),
        ]
    )
    assert code == 0, output
    reference = torch.jit.load(str(tmp / "model.pt"))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.save((x, reference(x)), tmp / "reference.pt")
    return plan, tmp


@pytest.mark.parametrize(("fmt", "suffix"), [("pt2", ".pt2"), ("state_dict", ".pt"), ("onnx", ".onnx")])
def test_export_round_trips_in_a_fresh_process(pruned: tuple[Path, Path], fmt: str, suffix: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    plan, tmp = pruned
    out = tmp / f"model-{fmt}{suffix}"
    code, output = _export(
        [str(plan), "--policy", str(POLICIES / "digits-apply.yaml"), "--format", fmt, "--out", str(out)]
    )
    assert code == 0, output
    assert "reloaded" in output
    run = subprocess.run(
        [sys.executable, "-c", RELOAD, str(out), str(tmp / "reference.pt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    difference, scale = map(float, run.stdout.split())
    assert difference <= 1e-4 * max(scale, 1.0)  # batch 5: not the batch size it was exported with


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "state_dict"])
def test_a_format_that_cannot_carry_int8_names_the_ones_that_can(tmp_path: Path, fmt: str) -> None:
    code, output = _export([str(POLICIES / "digits-apply.yaml"), "-f", fmt, "-o", str(tmp_path / "m")])
    assert code == 2
    assert f"cannot export this model as {fmt}" in output
    assert "formats that can carry it: torchscript" in output
    assert not (tmp_path / "m").exists()


def test_unknown_format_and_missing_study_are_clear(tmp_path: Path) -> None:
    code, output = _export([str(POLICIES / "digits-apply.yaml"), "-f", "tflite", "-o", str(tmp_path / "m")])
    assert code == 2
    assert "formats: pt2, torchscript, onnx, state_dict" in output
    code, output = _export(["7", "-f", "pt2", "-o", str(tmp_path / "m")])
    assert code == 2
    assert "--study" in output


INC_POLICY = """\
schema_version: 1
task: digits-cnn
pipeline:
  quantizer: {name: inc, options: {group_size: 32}}
plan:
  layers:
    features.conv2: {bits: 4}
    classifier.fc1: {bits: 3}
"""


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "state_dict", "torchscript"])
def test_bit_packed_weight_only_models_export_to_every_format(tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("neural_compressor")
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    policy = tmp_path / "inc.yaml"
    policy.write_text(INC_POLICY)
    code, output = _export([str(policy), "-f", fmt, "-o", str(tmp_path / f"model.{fmt}")])
    assert code == 0, output
    difference = float(output.rsplit("max |output difference|", 1)[1].split()[0])
    assert difference < 1e-4
