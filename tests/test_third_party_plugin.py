"""examples/third_party_plugin, pip-installed as a user installs it: its components are listed by
`orchestrate plugins`, run in `orchestrate search`, and pass their own tests (orchestrator.testing).

It is installed with pip (wheel built from its pyproject.toml, entry point and all) into a temporary
directory put on PYTHONPATH of the commands, not into the running environment: that environment may be
shared by other test runs, which would otherwise see an extra plugin come and go, and keep it if this
test were killed before uninstalling it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from .conftest import REPO

PLUGIN = REPO / "examples" / "third_party_plugin"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of commands that see the plugin, installed by pip into a temporary directory."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"  # building writes build/ and *.egg-info beside the sources: not in the repo
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True, capture_output=True, text=True)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_components_appear_in_orchestrate_plugins(installed: dict[str, str], tmp_path: Path) -> None:
    rows = json.loads(_run([str(BIN / "orchestrate"), "plugins", "--json"], installed, tmp_path).stdout)
    ours = {row["name"]: row for row in rows if row["distribution"] == "orchestrator-redundancy"}
    assert set(ours) == {"activation-variance", "fpgm"}
    assert ours["activation-variance"]["kind"] == "scorer"
    assert ours["fpgm"]["kind"] == "pruner"
    assert {row["plugin"] for row in ours.values()} == {"redundancy"}
    assert {row["version"] for row in ours.values()} == {"0.1.0"}
    assert "torch-pruning" in {row["name"] for row in rows}  # the builtins are still there

    bare = _run([str(BIN / "orchestrate"), "plugins", "--json"], dict(os.environ), tmp_path).stdout
    assert "fpgm" not in {row["name"] for row in json.loads(bare)}  # the running environment is untouched


@pytest.mark.slow
def test_components_run_in_a_search(installed: dict[str, str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["search", str(PLUGIN / "digits-fpgm.yaml"), "--budget", "4", "--runs-dir", str(runs)]
    _run([str(BIN / "orchestrate"), *args, "--no-track", "--no-progress"], installed, tmp_path)
    summary: dict[str, Any] = json.loads((runs / "digits-fpgm" / "summary.json").read_text())
    assert summary["counts"]["complete"] == 4
    baseline = summary["baseline"]
    trials = [t for t in summary["trials"] if t["state"] == "complete"]
    pruned = [t for t in trials if any(d.get("prune_ratio") for d in t["layers"].values())]
    assert pruned, "no trial pruned anything"
    for trial in pruned:  # fpgm removed channels for real: fewer MACs and parameters
        assert trial["metrics"]["macs"] < baseline["macs"]
        assert trial["metrics"]["params"] < baseline["params"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs / 'optuna.db'}")
    scores = optuna.load_study(study_name="digits-fpgm", storage=storage).user_attrs["prior_scores"]
    assert set(scores) == {"features.conv1", "features.conv2", "features.conv3"}  # activation-variance ran
    assert all(0.0 < value < 1.0 for value in scores.values())


@pytest.mark.slow
def test_its_own_tests_pass_on_the_installed_package(installed: dict[str, str], tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    shutil.copytree(PLUGIN / "tests", tests)  # not the sources beside them: the installed package is tested
    done = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)], installed, tmp_path
    )
    assert re.search(r"^\d+ passed in ", done.stdout.splitlines()[-1]), done.stdout[-2000:]  # nothing else
