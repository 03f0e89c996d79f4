"""A trial whose plugin raises, runs out of memory or yields a NaN or infinite metric fails alone: the error
is kept in Optuna and in a FAILED MLflow child run, the search goes on, and `orchestrate search` exits 0
unless every trial failed.

The failing components come from an installed plugin (``tests/failing_plugin.py`` behind an entry point of
a distribution on ``sys.path``), discovered by the command line as any third-party plugin is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.tracking import read_trial_runs

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

POLICY = """\
schema_version: 1
task: digits-loss
pipeline:
  pruner:
    name: torch-pruning
    options: {{importance: magnitude, p: 2, round_to: 4}}
  distiller:
    name: failing
    options: {{mode: {mode}}}
search:
  space:
    - types: [Conv2d]
      prune_ratio: [{low}, 0.6]
      step: 0.05
  objectives:
    - {{metric: accuracy, direction: maximize}}
    - {{metric: macs, direction: minimize}}
  sampler: random
  reference_plans: {reference}
measure:
  batch_sizes: [8]
  threads: 1
  rounds: 3
"""

ERRORS = {
    "raise": "RuntimeError: plugin bug: shapes do not match",
    "memory": "MemoryError",
    "nan": "metric 'loss' is nan",
    "overflow": "metric 'perplexity' is inf",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A runs directory shared by the module (one MLflow store), with the failing plugin installed."""
    site = tmp_path_factory.mktemp("site")
    info = site / "orchestrator_failing_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: orchestrator-failing-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[orchestrator]\nfailing = tests.failing_plugin\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        yield tmp_path_factory.mktemp("runs")


def _search(runs: Path, mode: str, *, every_trial: bool = False) -> tuple[Any, dict[str, Any]]:
    study = f"{mode}-all" if every_trial else mode
    policy = runs / f"{study}.yaml"
    low, reference = ("0.1", "false") if every_trial else ("0.0", "true")
    policy.write_text(POLICY.format(mode=mode, low=low, reference=reference))
    args = ["search", str(policy), "--runs-dir", str(runs), "--budget", "3", "--no-progress"]
    result = CliRunner().invoke(app, args)
    summary = json.loads((runs / study / "summary.json").read_text())
    return result, summary


@pytest.mark.parametrize("mode", ERRORS)
def test_a_failing_trial_is_recorded_and_the_search_goes_on(runs: Path, mode: str) -> None:
    result, summary = _search(runs, mode)
    assert result.exit_code == 0, result.output
    counts = summary["counts"]
    assert counts["finished"] == 3
    assert counts["complete"] >= 1  # the unchanged reference plan needs no recovery
    assert counts["failed"] >= 1
    assert f"{counts['failed']} failed" in result.output

    storage = f"sqlite:///{runs / 'optuna.db'}"
    trials = optuna.load_study(study_name=mode, storage=storage).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == counts["failed"]
    assert all(ERRORS[mode] in t.user_attrs["error"] for t in failed)
    assert all(ERRORS[mode] in t["error"] for t in summary["trials"] if t["state"] == "failed")

    children = {r["trial_number"]: r for r in read_trial_runs(f"sqlite:///{runs / 'mlflow.db'}", mode)}
    assert sorted(children) == [0, 1, 2]
    for trial in failed:
        run = children[trial.number]
        assert run["status"] == "FAILED"
        assert run["state"] == "failed"
        assert ERRORS[mode] in run["tags"]["orchestrator.error"]
    assert {r["status"] for n, r in children.items() if n not in {t.number for t in failed}} == {"FINISHED"}


def test_the_search_exits_1_when_every_trial_failed(runs: Path) -> None:
    result, summary = _search(runs, "memory", every_trial=True)
    assert summary["counts"]["failed"] == summary["counts"]["finished"] == 3
    assert result.exit_code == 1, result.output
    assert "every trial failed (3)" in result.output
    assert "MemoryError" in result.output
