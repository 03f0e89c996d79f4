"""The same task options give the same trained baseline in every process: the baselines behind a search
can be rebuilt, not only loaded from a cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import MNIST_SMALL

TRAIN = """\
import hashlib, json, sys
from orchestrator import load_registry
task = load_registry().components.create("task", sys.argv[1], json.loads(sys.argv[2]))
digest = hashlib.sha256()
for name, tensor in task.build_model().state_dict().items():
    digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
print(digest.hexdigest())
"""


def _baseline_digest(task: str, options: dict[str, Any], cache: Path) -> str:
    env = {**os.environ, "ORCHESTRATOR_CACHE": str(cache)}
    command = [sys.executable, "-c", TRAIN, task, json.dumps(options)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("task", "options"),
    [("digits-cnn", {"epochs": 2}), ("mnist-resnet", {**MNIST_SMALL, "train_size": 1000})],
)
def test_two_fresh_processes_train_the_same_baseline(
    task: str, options: dict[str, Any], tmp_path: Path
) -> None:
    first = _baseline_digest(task, options, tmp_path / "a")
    assert _baseline_digest(task, options, tmp_path / "b") == first  # trained again, not loaded
    assert list((tmp_path / "b").rglob("*.pt"))
