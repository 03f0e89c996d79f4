"""The benchmarks' --quick modes run to the end (a smoke test: their figures live in docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.parametrize(
    "args",
    [
        ["recovery.py", "--quick", "--seeds", "0"],
        ["overhead.py", "--quick"],
        ["joint_vs_sequential.py", "--quick"],
        ["pruning_16x.py", "--quick"],
        ["fastest_within_1pt.py", "--quick"],
    ],
    ids=lambda args: args[0],
)
def test_quick_benchmark_runs_and_prints_its_table(args: list[str]) -> None:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO / "benchmarks",
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"^## B\d: ", run.stdout, re.MULTILINE), run.stdout[-2000:]
    assert "|---|" in run.stdout
