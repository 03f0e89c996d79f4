"""The MLflow tracker against a real sqlite store: one parent run per study, one child run per trial."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import SearchFinished, SearchStarted, TrialFinished
from orchestrator.registry import load_registry
from orchestrator.tracking import (
    ERROR_TAG_CHARS,
    MlflowTracker,
    default_tracking_uri,
    read_trial_runs,
)

# mlflow's sqlite store triggers this sqlalchemy deprecation when it opens; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

LAYERS = {
    "features.conv1": {"prune_ratio": 0.25, "bits": 8, "drop": False},
    "classifier.fc2": {"prune_ratio": 0.0, "bits": 32, "drop": False},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One sqlite store for the module: opening a new one costs seconds."""
    root = tmp_path_factory.mktemp("runs")
    uri = default_tracking_uri(root)
    MlflowTracker(tracking_uri=uri).experiment_id  # create the database and the experiment once
    return root, uri


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _started(study: str, tmp_path: Path) -> SearchStarted:
    return SearchStarted(
        study_name=study,
        storage=f"sqlite:///{tmp_path}/optuna.db",
        output_dir=tmp_path / study,
        policy={"schema_version": 1, "task": "digits-cnn", "objectives": [{"metric": "accuracy"}]},
        baseline={"accuracy": 97.5, "macs": 1.2e6, "latency_ms_b1": float("nan")},
    )


def _trial(study: str, number: int, **kw: Any) -> TrialFinished:
    fields: dict[str, Any] = {
        "state": "complete",
        "duration_s": 2.5,
        "params": {"features.conv1.prune_ratio": 0.2731},
        "layers": LAYERS,
        "metrics": {"accuracy": 96.0 - number, "macs": 6.0e5, "size_bytes": 40_000.0},
        "constraints": {"accuracy_drop": -0.5},
        "plan_yaml": "layers:\n  features.conv1: {prune_ratio: 0.25, bits: 8}\n",
    }
    fields.update(kw)
    return TrialFinished(study_name=study, number=number, **fields)


def _parents(uri: str, study: str) -> list[Any]:
    client = _client(uri)
    experiment = client.get_experiment_by_name("orchestrator")
    return list(
        client.search_runs(
            [experiment.experiment_id],
            f"tags.`orchestrator.study` = '{study}' and tags.`orchestrator.role` = 'parent'",
        )
    )


def _artifact(uri: str, run_id: str, name: str, dst: Path) -> str:
    return Path(_client(uri).download_artifacts(run_id, name, str(dst))).read_text()


def test_default_store_keeps_database_and_artifacts_under_the_root(
    store: tuple[Path, str], tmp_path: Path
) -> None:
    root, uri = store
    assert uri == f"sqlite:///{root.resolve().as_posix()}/mlflow.db"
    tracker = MlflowTracker(tracking_uri=uri)
    tracker.orchestrator_search_started(_started("artifacts-here", tmp_path))
    tracker.orchestrator_trial_finished(_trial("artifacts-here", 0))
    assert (root / "mlflow.db").is_file()
    (run,) = read_trial_runs(uri, "artifacts-here")
    plan = root / "mlflow-artifacts" / run["run_id"] / "artifacts" / "plan.yaml"
    assert "features.conv1" in plan.read_text()
    experiment = _client(uri).get_experiment_by_name("orchestrator")
    assert experiment.artifact_location == (root / "mlflow-artifacts").resolve().as_uri()


def test_resumed_search_finds_the_same_parent_run(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    first = MlflowTracker(tracking_uri=uri)
    first.orchestrator_search_started(_started("resume", tmp_path))
    first.orchestrator_trial_finished(_trial("resume", 0))
    first.orchestrator_search_finished(SearchFinished("resume", {"trials": []}, tmp_path))

    second = MlflowTracker(tracking_uri=uri)  # a new process resuming the study
    second.orchestrator_search_started(_started("resume", tmp_path))
    second.orchestrator_trial_finished(_trial("resume", 1))

    parents = _parents(uri, "resume")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == first.parent_run_id("resume") == second.parent_run_id("resume")
    assert parent.info.status == "RUNNING"  # running again after the resume
    assert parent.data.params["study_name"] == "resume"
    assert parent.data.params["storage"].endswith("optuna.db")
    assert parent.data.metrics["baseline_accuracy"] == 97.5
    assert "baseline_latency_ms_b1" not in parent.data.metrics  # NaN is not logged
    policy = _artifact(uri, parent.info.run_id, "policy.yaml", tmp_path)
    assert "task: digits-cnn" in policy
    runs = read_trial_runs(uri, "resume")
    assert [r["trial_number"] for r in runs] == [0, 1]
    assert {r["parent_run_id"] for r in runs} == {parent.info.run_id}


def test_each_trial_is_a_child_run_with_its_layer_decisions(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    tracker = MlflowTracker(tracking_uri=uri)
    tracker.orchestrator_search_started(_started("children", tmp_path))
    tracker.orchestrator_trial_finished(_trial("children", 0))
    tracker.orchestrator_trial_finished(_trial("children", 1, state="infeasible", metrics={"macs": 9e5}))
    tracker.orchestrator_trial_finished(
        _trial("children", 2, state="gated", constraints={"accuracy_drop": 3.0})
    )

    runs = read_trial_runs(uri, "children")
    assert [r["run_name"] for r in runs] == ["trial-0000", "trial-0001", "trial-0002"]
    assert [r["state"] for r in runs] == ["complete", "infeasible", "gated"]
    assert {r["status"] for r in runs} == {"FINISHED"}
    assert {r["parent_run_id"] for r in runs} == {tracker.parent_run_id("children")}

    first = runs[0]
    assert first["params"]["features.conv1.prune_ratio"] == "0.25"
    assert first["params"]["features.conv1.bits"] == "8"
    assert first["params"]["classifier.fc2.drop"] == "False"
    assert first["params"]["optuna.features.conv1.prune_ratio"] == "0.2731"
    assert first["metrics"]["accuracy"] == 96.0
    assert first["metrics"]["constraint_accuracy_drop"] == -0.5
    assert first["metrics"]["duration_s"] == 2.5
    assert first["tags"]["orchestrator.feasible"] == "true"
    assert first["end_time"] - first["start_time"] >= 2000  # the trial's duration, not the logging's
    assert runs[2]["metrics"]["constraint_accuracy_drop"] == 3.0
    assert "bits: 8" in _artifact(uri, first["run_id"], "plan.yaml", tmp_path)


def test_failed_trial_is_a_failed_run_carrying_its_error(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    tracker = MlflowTracker(tracking_uri=uri)
    error = "Traceback (most recent call last):\n" + "x" * 7000 + "\nRuntimeError: shapes do not match"
    tracker.orchestrator_trial_finished(
        _trial("failing", 4, state="failed", metrics={"accuracy": float("nan")}, error=error, plan_yaml=None)
    )

    (run,) = read_trial_runs(uri, "failing")
    assert run["status"] == "FAILED"
    assert run["state"] == "failed"
    assert run["tags"]["orchestrator.error"] == error[:ERROR_TAG_CHARS]
    assert "accuracy" not in run["metrics"]
    assert _artifact(uri, run["run_id"], "error.txt", tmp_path).endswith("shapes do not match")
    assert len(_parents(uri, "failing")) == 1  # created on the fly without a search_started


def test_awkward_names_are_logged_not_rejected(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    tracker = MlflowTracker(tracking_uri=uri)
    layers = {f"blocks[{i}]/conv@1": {"prune_ratio": 0.5, "bits": None} for i in range(60)}
    tracker.orchestrator_trial_finished(
        _trial('it\'s "odd"', 0, layers=layers, params={"note": "y" * 10_000}, metrics={"top-1 (%)": 91.0})
    )
    (run,) = read_trial_runs(uri, 'it\'s "odd"')
    assert run["params"]["blocks_0__conv_1.prune_ratio"] == "0.5"
    assert len([k for k in run["params"] if k.startswith("blocks_")]) == 120  # more than one batch
    assert len(run["params"]["optuna.note"]) == 6000
    assert run["metrics"]["top-1 ___"] == 91.0


def test_search_finished_logs_summary_and_counts(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    tracker = MlflowTracker(tracking_uri=uri)
    tracker.orchestrator_search_started(_started("finished", tmp_path))
    trials = [
        {"number": 0, "state": "complete", "feasible": True, "pareto": True},
        {"number": 1, "state": "complete", "feasible": False, "pareto": False},
        {"number": 2, "state": "failed", "feasible": False, "pareto": False},
    ]
    summary = {"study": "finished", "trials": trials, "pareto": trials[:1], "plan_dir": tmp_path}
    tracker.orchestrator_search_finished(SearchFinished("finished", summary, tmp_path))

    (parent,) = _parents(uri, "finished")
    assert parent.info.status == "FINISHED"
    metrics = parent.data.metrics
    assert (metrics["n_trials"], metrics["n_complete"], metrics["n_failed"]) == (3, 2, 1)
    assert (metrics["n_feasible"], metrics["n_pareto"]) == (1, 1)
    written = json.loads(_artifact(uri, parent.info.run_id, "summary.json", tmp_path))
    assert written["pareto"][0]["number"] == 0
    assert written["plan_dir"] == str(tmp_path)


def test_the_parent_stays_running_while_another_worker_runs_a_trial(
    store: tuple[Path, str], tmp_path: Path
) -> None:
    _, uri = store
    first, last = MlflowTracker(tracking_uri=uri), MlflowTracker(tracking_uri=uri)
    for tracker in (first, last):
        tracker.orchestrator_search_started(_started("shared", tmp_path))
    done = {"number": 0, "state": "complete", "feasible": True, "pareto": True}
    running = {"number": 1, "state": "running", "feasible": False, "pareto": False}
    first.orchestrator_search_finished(SearchFinished("shared", {"trials": [done, running]}, tmp_path))
    (parent,) = _parents(uri, "shared")
    assert parent.info.status == "RUNNING"

    done_too = {**running, "state": "complete", "feasible": True}
    last.orchestrator_search_finished(SearchFinished("shared", {"trials": [done, done_too]}, tmp_path))
    (parent,) = _parents(uri, "shared")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_complete"] == 2


def test_workers_starting_together_share_one_parent(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    """Three workers start one study at the same instant; each may create a parent run at first."""
    trackers = [MlflowTracker(tracking_uri=uri) for _ in range(3)]
    barrier = threading.Barrier(len(trackers), timeout=60)
    errors: list[BaseException] = []

    def work(index: int, tracker: MlflowTracker) -> None:
        try:
            barrier.wait()
            tracker.orchestrator_search_started(_started("together", tmp_path))
            barrier.wait()  # a trial takes a while: every worker has started before the first ends
            tracker.orchestrator_trial_finished(_trial("together", index))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(trackers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    (parent,) = _parents(uri, "together")
    assert {t.parent_run_id("together") for t in trackers} == {parent.info.run_id}
    runs = read_trial_runs(uri, "together")
    assert sorted(r["trial_number"] for r in runs) == [0, 1, 2]
    assert {r["parent_run_id"] for r in runs} == {parent.info.run_id}


def test_tracker_is_an_observer_of_the_lifecycle_hooks(store: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = store
    registry = load_registry(entry_points_group=None)
    registry.add_observer(MlflowTracker(tracking_uri=uri), name="mlflow")
    registry.notify("orchestrator_search_started", event=_started("observed", tmp_path))
    registry.notify("orchestrator_trial_finished", event=_trial("observed", 3))
    assert [r["trial_number"] for r in read_trial_runs(uri, "observed")] == [3]


def test_unreachable_store_warns_instead_of_stopping_the_search(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    registry = load_registry(entry_points_group=None)
    registry.add_observer(MlflowTracker(tracking_uri=f"sqlite:///{blocker}/mlflow.db"), name="mlflow")
    with pytest.warns(RuntimeWarning, match="plugin 'mlflow' raised in orchestrator_trial_finished"):
        registry.notify("orchestrator_trial_finished", event=_trial("nowhere", 0))


def test_importing_the_tracker_does_not_import_mlflow() -> None:
    code = "import sys, orchestrator.tracking; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
