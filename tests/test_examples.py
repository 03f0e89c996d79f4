"""Every script in `examples/` runs to the end in a fresh interpreter and prints what it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

EXAMPLES = REPO / "examples"
HAS_ONNX = importlib.util.find_spec("onnxscript") is not None

#: per example: the lines its output must hold (regexes, multiline) and the files it writes into the
#: directory given as its first argument (``None``: the script takes no directory)
EXPECTED: dict[str, tuple[list[str], list[str] | None]] = {
    "01_declare_policy.py": (
        [
            r"^valid policy: task digits-cnn, 5 layers in the plan$",
            r"it loads back with the same plan: True$",
            r"^PolicyError in .*misspelt\.yaml, line 4, field pipeline\.prunner: unknown field 'prunner' "
            r"\(did you mean 'pruner'\?\)",
            r"^PolicyError in .*bad-option\.yaml, line \d+, field pipeline\.distiller\.options\.epochs: ",
        ],
        ["digits-policy.yaml"],
    ),
    "02_search.py": (
        [
            r"^6 trials: \d complete",
            r"^Pareto set \([1-6] plans\):$",
            # at least one Pareto plan really cuts MACs (the reference plans include uniform pruning)
            r"^\s+\d+\s+\d+\.\d\d\s+0\.\d{3}\s+\S+trial-\d{4}\.yaml$",
        ],
        ["digits-example/summary.json", "optuna.db", "mlflow.db"],
    ),
    "03_apply.py": (
        [
            r"^accuracy\s+\d+\.?\d*\s+\d+\.?\d*\s*$",
            r"^macs\s+2,483,722\s+[\d,]+\s+0\.[0-3]\d\d$",  # half the channels: about a quarter of the MACs
            r"^size_bytes\s+[\d,]+\s+[\d,]+\s+0\.\d{3}$",
            r"^latency_ms_b64\s",
            r"^accuracy lost: -?\d+\.\d\d points$",
        ],
        ["metrics.json", "model.pt", "plan.yaml"],
    ),
    "04_export.py": (
        [
            r"^pruned model: accuracy \d+\.\d\d, [\d,]+ params$",
            r"^pt2: wrote \S+digits-pruned\.pt2 \([\d,]+ bytes\); max \|output difference\| \S+$",
            *([r"^onnx: wrote \S+digits-pruned\.onnx .*difference\| \S+$"] if HAS_ONNX else []),
        ],
        ["digits-pruned.pt2", *(["digits-pruned.onnx"] if HAS_ONNX else [])],
    ),
    "05_custom_task.py": (
        [r"^accuracy \d+\.\d\d -> \d+\.\d\d$", r"'macs_ratio': 0\.5\d*, .*'size_bytes_ratio': 0\.\d+"],
        None,
    ),
}


def test_every_example_has_expectations() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_its_result(name: str, tmp_path: Path) -> None:
    lines, files = EXPECTED[name]
    out_dir = tmp_path / "out"
    args = [str(out_dir)] if files is not None else []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}  # ORCHESTRATOR_CACHE comes from conftest
    env.setdefault("OMP_NUM_THREADS", "1")  # small models: as fast, and immune to busy neighbours
    env["TMPDIR"] = str(tmp_path / "tmp")  # the scripts' default temporary directories, cleaned by pytest
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=tmp_path,  # a script that wrote relative paths would write here, not into the repository
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in lines:
        assert re.search(pattern, done.stdout, re.MULTILINE), (
            f"no line matching {pattern!r} in:\n{done.stdout}"
        )
    for plan in re.findall(r"\S+trial-\d{4}\.yaml$", done.stdout, re.MULTILINE):
        assert Path(plan).is_file(), f"{name} printed {plan}, which does not exist"
    for file in files or []:
        assert (out_dir / file).is_file(), f"{name} did not write {file}"
    # nothing was written in the working directory besides the output and temporary directories
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "tmp"}


def test_custom_task_example_is_under_40_lines() -> None:
    text = (EXAMPLES / "05_custom_task.py").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 40
