"""Several `orchestrate search` processes on one study: a shared PostgreSQL study and MLflow store, one
global budget, and workers killed with SIGKILL mid-trial."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient

from orchestrator.storage import budget_lock
from orchestrator.summary import is_lost
from orchestrator.tracking import read_trial_runs

from .postgres import PostgresServer

# mlflow's stores trigger this sqlalchemy deprecation when they open; nothing to act on here
pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.slow,
]

#: trials of about a second: a few recovery steps, no quantizer calibration, latency at one batch size
POLICY = """\
schema_version: 1
task: digits-cnn
pipeline:
  pruner:
    name: torch-pruning
    options: {importance: magnitude, p: 2, round_to: 4}
  distiller:
    name: kd
    options: {epochs: 1, max_steps: 4}
search:
  space:
    - types: [Conv2d]
      prune_ratio: [0.0, 0.6]
      step: 0.05
  objectives:
    - {metric: accuracy, direction: maximize}
    - {metric: macs, direction: minimize}
  sampler: random
  reference_plans: false
measure:
  batch_sizes: [8]
  threads: 1
  rounds: 3
"""

#: trials of about two seconds for the tests that signal a worker mid-trial: with ``POLICY``'s trials of a
#: few tenths of a second, a worker spends too little of its time inside one for the test to catch it there
SLOW_POLICY = POLICY.replace("{epochs: 1, max_steps: 4}", "{epochs: 100, max_seconds: 1.5}")
assert SLOW_POLICY != POLICY

HOST = socket.gethostname()
TIMEOUT = 600  # seconds a group of workers may take on a busy 2-core machine before the test gives up


@pytest.fixture(scope="module")
def mlflow_url(postgres: PostgresServer) -> str:
    """One MLflow database for the module (its tables take seconds to create); studies keep runs apart."""
    return postgres.create_database("mlflow")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def slow_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(SLOW_POLICY)
    return path


def _worker(policy: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "orchestrator", "search", str(policy), "--no-progress", *args]
    log = open(policy.parent / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        command,
        cwd=policy.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_as_in_a_terminal,
    )


def _as_in_a_terminal() -> None:
    """Ctrl-C reaches the worker as it does in a terminal, also when pytest itself was started in the
    background (a shell's background jobs inherit SIGINT ignored, and so would the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(workers: Sequence[subprocess.Popen[bytes]]) -> list[int]:
    codes = []
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=TIMEOUT))
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
    return codes


def _logs(policy: Path) -> str:
    """The end of each worker's output, for the failure message."""
    logs = sorted(policy.parent.glob("worker-*.log"))
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _started_trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or none while the worker has not created it yet."""
    database = storage.removeprefix("sqlite:///")
    if database != storage and not Path(database).exists():
        return []
    with budget_lock(storage):  # as the workers do while they create the tables
        try:
            return _trials(storage, study)
        except KeyError:
            return []


def _signal_mid_trial(
    worker: subprocess.Popen[bytes], storage: str, study: str, *, after: int, sig: int = signal.SIGKILL
) -> int:
    """Send ``sig`` to ``worker`` while it runs a trial, once ``after`` trials of the study have finished;
    the number of the trial it was running."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker ended before it could be killed"
        trials = _started_trials(storage, study)
        done = sum(t.state.is_finished() for t in trials)
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        mine = [t for t in running if t.user_attrs.get("worker") == f"{HOST}:{worker.pid}"]
        if done >= after and mine and _still_running_once_paused(worker, storage, study, mine[0].number):
            worker.send_signal(sig)
            worker.send_signal(signal.SIGCONT)  # a paused worker takes Ctrl-C once it runs again
            return mine[0].number
        time.sleep(0.3)
    raise AssertionError("the worker never ran a trial")


def _still_running_once_paused(
    worker: subprocess.Popen[bytes], storage: str, study: str, number: int
) -> bool:
    """Pause ``worker`` and look at trial ``number`` again: still running, the signal will land inside it
    (a trial of a second can end between the first look and the signal). Resumes the worker if not."""
    worker.send_signal(signal.SIGSTOP)
    time.sleep(0.2)  # a commit the worker sent just before it stopped reaches the database
    try:
        running = any(
            t.number == number and t.state == optuna.trial.TrialState.RUNNING for t in _trials(storage, study)
        )
    except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError):
        running = False  # sqlite, locked by a worker paused in the middle of a write: look again later
    if not running:
        worker.send_signal(signal.SIGCONT)
    return running


def _check_budget(trials: list[optuna.trial.FrozenTrial], budget: int) -> dict[int, Any]:
    """Exactly ``budget`` trials ran to an outcome and none is left running or waiting; by number."""
    by_number = {t.number: t for t in trials}
    assert len(by_number) == len(trials)
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state) for t in trials]
    counted = [t for t in trials if not is_lost(t)]
    assert len(counted) == budget
    return by_number


def test_the_budget_lock_serializes_connections_and_dies_with_its_holder(postgres: PostgresServer) -> None:
    url = postgres.create_database("locking")
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with budget_lock(url):
            events.append("first in")
            held.set()
            time.sleep(0.5)
            events.append("first out")

    def second() -> None:
        held.wait(timeout=60)
        with budget_lock(url):
            events.append("second in")

    threads = [threading.Thread(target=first, daemon=True), threading.Thread(target=second, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert events == ["first in", "first out", "second in"]

    code = "import sys, time\nfrom orchestrator.storage import budget_lock\nwith budget_lock(sys.argv[1]):\n"
    code += "    print('held', flush=True)\n    time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)
    with holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        holder.kill()  # SIGKILL: its connection closes, and the server releases the lock
    taken = threading.Thread(target=second, daemon=True)
    taken.start()
    taken.join(timeout=60)
    assert events == ["first in", "first out", "second in", "second in"]


def test_three_workers_share_one_study_one_budget_and_one_parent_run(
    postgres: PostgresServer, mlflow_url: str, policy: Path
) -> None:
    storage = postgres.create_database("shared")
    args = ["--budget", "30", "--storage", storage, "--tracking-uri", mlflow_url, "--study", "shared"]
    workers = [_worker(policy, *args) for _ in range(3)]
    assert _finish(workers) == [0, 0, 0], _logs(policy)

    trials = _trials(storage, "shared")
    assert len(trials) == 30  # no worker started one beyond the budget
    _check_budget(trials, 30)
    assert sorted(t.number for t in trials) == list(range(30))
    assert len({t.user_attrs["worker"] for t in trials}) > 1  # the work was shared
    children = read_trial_runs(mlflow_url, "shared")
    assert sorted(c["trial_number"] for c in children) == list(range(30))
    (parent,) = {c["parent_run_id"] for c in children}
    assert MlflowClient(mlflow_url).get_run(parent).info.status == "FINISHED"  # by the last to stop


def test_a_killed_worker_s_trial_fails_and_runs_again_within_the_budget(
    postgres: PostgresServer, mlflow_url: str, slow_policy: Path
) -> None:
    storage = postgres.create_database("killed")
    args = ["--budget", "15", "--storage", storage, "--tracking-uri", mlflow_url, "--study", "killed"]
    workers = [_worker(slow_policy, *args, "--heartbeat", "1") for _ in range(3)]
    killed = _signal_mid_trial(workers[0], storage, "killed", after=3)
    assert _finish(workers) == [-signal.SIGKILL, 0, 0], _logs(slow_policy)

    trials = _check_budget(_trials(storage, "killed"), 15)
    assert trials[killed].state == optuna.trial.TrialState.FAIL
    assert is_lost(trials[killed])
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert not is_lost(retry)
    assert retry.params == trials[killed].params  # the same plan, run by a live worker
    children = read_trial_runs(mlflow_url, "killed")
    assert len(children) == 15
    assert killed not in {c["trial_number"] for c in children}
    assert len({c["parent_run_id"] for c in children}) == 1


def test_kill_and_rerun_resumes_without_losing_a_completed_trial(slow_policy: Path) -> None:
    """On the default sqlite storage: the heartbeat works there too."""
    runs = slow_policy.parent / "runs"
    args = ["--budget", "6", "--runs-dir", str(runs), "--heartbeat", "1"]
    first = _worker(slow_policy, *args)
    storage = f"sqlite:///{runs / 'optuna.db'}"
    killed = _signal_mid_trial(first, storage, "policy", after=2)
    assert _finish([first]) == [-signal.SIGKILL]
    before = {t.number: t.values for t in _trials(storage, "policy") if t.state.is_finished()}
    assert len(before) >= 2

    assert _finish([_worker(slow_policy, *args)]) == [0], _logs(slow_policy)
    trials = _check_budget(_trials(storage, "policy"), 6)
    assert {n: trials[n].values for n in before} == before  # kept as they were
    assert is_lost(trials[killed])
    assert [t.number for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    children = read_trial_runs(f"sqlite:///{runs / 'mlflow.db'}", "policy")
    counted = sorted(n for n, t in trials.items() if not is_lost(t))
    assert sorted(c["trial_number"] for c in children) == counted


def test_a_trial_left_running_by_a_worker_killed_as_it_started_it_is_not_left_behind(policy: Path) -> None:
    """A worker killed between starting a trial and its first heartbeat leaves a running trial no
    heartbeat will ever mark stale; the next worker fails it, uncounted, and still meets the budget."""
    runs = policy.parent / "runs"
    args = ["--runs-dir", str(runs), "--no-track", "--budget"]
    assert _finish([_worker(policy, *args, "1")]) == [0], _logs(policy)
    storage = f"sqlite:///{runs / 'optuna.db'}"
    orphan = optuna.load_study(study_name="policy", storage=storage).ask()  # started, then killed

    assert _finish([_worker(policy, *args, "3")]) == [0], _logs(policy)
    trials = _check_budget(_trials(storage, "policy"), 3)
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert is_lost(trials[orphan.number])
    assert [t.number for t in trials.values() if t.system_attrs.get("failed_trial") == orphan.number]


def test_ctrl_c_stops_with_a_summary_and_the_running_trial_not_counted(slow_policy: Path) -> None:
    runs = slow_policy.parent / "runs"
    worker = _worker(slow_policy, "--budget", "20", "--runs-dir", str(runs), "--no-track")
    storage = f"sqlite:///{runs / 'optuna.db'}"
    running = _signal_mid_trial(worker, storage, "policy", after=1, sig=signal.SIGINT)
    assert _finish([worker]) == [130], _logs(slow_policy)

    assert "interrupted: run the same command again to resume" in _logs(slow_policy)
    summary = json.loads((runs / "policy" / "summary.json").read_text())
    trials = {t.number: t for t in _trials(storage, "policy")}
    assert all(t.state.is_finished() for t in trials.values())  # told, not left running
    lost = [n for n, t in trials.items() if is_lost(t)]
    assert lost in ([running], [])  # [] if the trial ended in the instant before Ctrl-C
    assert all("interrupted" in trials[n].user_attrs["error"] for n in lost)
    assert summary["counts"]["lost"] == len(lost)
    assert summary["counts"]["finished"] == len(trials) - len(lost) < 20
