"""Tracking a search in MLflow: one parent run per study, one child run per trial.

The tracker is an observer of the lifecycle hooks (:mod:`orchestrator.hookspecs`): the search registers it
with :meth:`~orchestrator.registry.PluginRegistry.add_observer` and never calls it directly. It talks to
MLflow only through an ``MlflowClient`` bound to one tracking URI, so it sets no global MLflow state and
several trackers (or several processes sharing one study) can run side by side.

Runs are found by tags, not remembered: the parent of study ``S`` is the active run of the experiment
tagged ``orchestrator.study = S`` and ``orchestrator.role = parent``. A resumed search, or a second
worker on the same study, finds the same parent and adds its trials under it.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import MissingExtraError, OrchestratorError
from orchestrator.hookspecs import hookimpl

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from orchestrator.events import SearchFinished, SearchStarted, TrialFinished

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MlflowTracker",
    "log_final_metrics",
    "Tracker",
    "default_artifact_location",
    "default_tracking_uri",
    "read_trial_runs",
]

DEFAULT_EXPERIMENT = "orchestrator"

STUDY_TAG = "orchestrator.study"
ROLE_TAG = "orchestrator.role"
TRIAL_TAG = "orchestrator.trial_number"
STATE_TAG = "orchestrator.state"
ERROR_TAG = "orchestrator.error"
FEASIBLE_TAG = "orchestrator.feasible"
PARENT_TAG = "mlflow.parentRunId"

#: the error text kept in the ``orchestrator.error`` tag; the full text is the ``error.txt`` artifact
ERROR_TAG_CHARS = 5000

_PARAM_VALUE_CHARS = 6000  # MLflow's limit for a param value
_TAG_VALUE_CHARS = 8000  # ... for a tag value
_KEY_CHARS = 250  # ... for a param, metric or tag key
_BATCH = 100  # params (and tags) per log_batch request
_PAGE = 1000
_NOT_KEY = re.compile(r"[^\w.\- :]")  # MLflow also allows '/', which would make keys look like paths


class Tracker(Protocol):
    """What the search expects of a tracker: the three lifecycle hooks.

    The search calls them through :meth:`~orchestrator.registry.PluginRegistry.notify`, which turns an
    exception into a warning: a tracker that cannot reach its store never stops a search.
    """

    def orchestrator_search_started(self, event: SearchStarted) -> None: ...

    def orchestrator_trial_finished(self, event: TrialFinished) -> None: ...

    def orchestrator_search_finished(self, event: SearchFinished) -> None: ...


def default_tracking_uri(root: Path) -> str:
    """``sqlite:///<root>/mlflow.db`` with ``root`` made absolute; creates ``root`` if missing.

    The tracker puts artifacts of such a store beside the database, in ``<root>/mlflow-artifacts``
    (see :func:`default_artifact_location`).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root.as_posix()}/mlflow.db"


def default_artifact_location(tracking_uri: str) -> str | None:
    """``mlflow-artifacts/`` beside the database file of a ``sqlite:///`` store, as a ``file:`` URI.

    ``None`` for any other store: an MLflow server chooses its own artifact location.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = tracking_uri[len(prefix) :].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / "mlflow-artifacts").as_uri()


class MlflowTracker:
    """Logs a search to MLflow: a parent run per study, a nested child run per trial.

    ``tracking_uri`` is any URI ``MlflowClient`` accepts (``sqlite:///...``, ``postgresql://...``,
    ``http://host:5000``).
    The experiment is created when missing, for a sqlite store with its artifacts beside the database
    unless ``artifact_location`` says otherwise. Nothing is opened until the first hook is called.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str = DEFAULT_EXPERIMENT,
        artifact_location: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location or default_artifact_location(tracking_uri)
        self._lock = threading.RLock()
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._parents: dict[str, str] = {}  # study -> parent run id
        self._created: set[str] = set()  # parent run ids this tracker created
        self._confirmed: set[str] = set()  # studies whose parent was checked again after start-up
        self._started: dict[str, SearchStarted] = {}

    def __repr__(self) -> str:
        return f"MlflowTracker(tracking_uri={self.tracking_uri!r}, experiment={self.experiment!r})"

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def orchestrator_search_started(self, event: SearchStarted) -> None:
        """Find or create the study's parent run, mark it running and log policy and baseline."""
        with self._lock:
            self._started[event.study_name] = event
            self._on_parent(event.study_name, partial(self._log_started, event=event), confirm=False)

    @hookimpl
    def orchestrator_trial_finished(self, event: TrialFinished) -> None:
        """Log one trial as a child run of the study's parent run."""
        with self._lock:
            self._on_parent(event.study_name, partial(self._log_trial, event=event), confirm=True)

    @hookimpl
    def orchestrator_search_finished(self, event: SearchFinished) -> None:
        """Log the summary and the trial counts on the parent run and mark it finished."""
        with self._lock:
            self._on_parent(event.study_name, partial(self._log_finished, event=event), confirm=True)

    # -- MLflow objects ------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = _mlflow_client(self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        """The experiment's id, creating the experiment if it does not exist yet."""
        if self._experiment_id is None:
            self._experiment_id = _get_or_create_experiment(
                self.client, self.experiment, self.artifact_location, self.tracking_uri
            )
        return self._experiment_id

    def parent_run_id(self, study_name: str) -> str:
        """The id of the study's parent run (found, or created if there is none)."""
        with self._lock:
            return self._parent(study_name, confirm=False)

    def _parent(self, study: str, *, confirm: bool) -> str:
        """The parent run of ``study``, found or created on first use.

        Several processes starting one study at the same moment may each create a parent. Right after
        creating one, and once more before the first trial is logged (when every racing process has
        committed its own), the earliest active parent wins; a losing parent this tracker created is
        deleted, and the policy and baseline are logged on the winner too.
        """
        current = self._parents.get(study)
        if current is None:
            current = self._find_or_create(study)
            self._parents[study] = current
        elif confirm and study not in self._confirmed:
            self._confirmed.add(study)
            winner = self._find_or_create(study, mine=current)
            if winner != current:
                self._parents[study] = winner
                started = self._started.get(study)
                if started is not None:
                    self._log_started(winner, event=started)
            current = winner
        return current

    def _on_parent(self, study: str, action: Callable[[str], None], *, confirm: bool) -> None:
        """``action(parent_run_id)``; once more on the winning parent if another worker deleted ours."""
        from mlflow.exceptions import MlflowException

        parent = self._parent(study, confirm=confirm)
        try:
            action(parent)
        except MlflowException:
            if self.client.get_run(parent).info.lifecycle_stage == "active":
                raise
            del self._parents[study]
            action(self._parent(study, confirm=False))

    def _find_or_create(self, study: str, mine: str | None = None) -> str:
        parents = _find_parents(self.client, self.experiment_id, study)
        if not parents:
            run = self.client.create_run(
                self.experiment_id, tags={STUDY_TAG: study, ROLE_TAG: "parent"}, run_name=study
            )
            mine = str(run.info.run_id)
            self._created.add(mine)
            parents = _find_parents(self.client, self.experiment_id, study) or [run]
        winner = str(parents[0].info.run_id)
        active = {r.info.run_id for r in parents}
        if mine is not None and mine != winner and mine in self._created and mine in active:
            self.client.delete_run(mine)
        return winner

    # -- what is logged ------------------------------------------------------------------------

    def _log_started(self, parent: str, *, event: SearchStarted) -> None:
        if self.client.get_run(parent).info.status != "RUNNING":
            self.client.update_run(parent, status="RUNNING")  # a resumed search
        params = {
            "study_name": event.study_name,
            "storage": event.storage,
            "output_dir": str(event.output_dir),
        }
        if event.policy_path is not None:
            params["policy_path"] = str(event.policy_path)
        params.update({f"env.{key}": value for key, value in event.environment.items()})
        self._log_new_params(parent, _params(params))
        metrics = {f"baseline_{k}": v for k, v in event.baseline.items()}
        _log_batch(self.client, parent, metrics=_metrics(metrics))
        self.client.log_text(parent, _policy_yaml(event.policy), "policy.yaml")
        if event.policy_path is not None and Path(event.policy_path).is_file():
            self.client.log_artifact(parent, str(event.policy_path), artifact_path="source")

    def _log_new_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Log the params the run does not have yet: a param cannot change once logged, so a resumed
        search keeps the first values. A worker logging the same params at the same moment makes the
        first attempt fail; the second then finds them logged."""
        from mlflow.exceptions import MlflowException

        for attempt in range(2):
            existing = self.client.get_run(run_id).data.params
            new = {k: v for k, v in params.items() if k not in existing}
            if not new:
                return
            try:
                _log_batch(self.client, run_id, params=new)
                return
            except MlflowException:
                if attempt:
                    raise

    def _log_finished(self, parent: str, *, event: SearchFinished) -> None:
        summary = dict(event.summary)
        self.client.log_text(parent, json.dumps(summary, indent=2, default=str), "summary.json")
        _log_batch(self.client, parent, metrics=_counts(summary))
        if not any(row.get("state") == "running" for row in summary.get("trials", ())):
            # other workers still running trials finish it: the last one to stop marks it finished
            self.client.set_terminated(parent, "FINISHED")

    def _log_trial(self, parent: str, *, event: TrialFinished) -> None:
        now = time.time()
        tags = {
            PARENT_TAG: parent,
            STUDY_TAG: event.study_name,
            ROLE_TAG: "trial",
            TRIAL_TAG: str(event.number),
            STATE_TAG: event.state,
        }
        if event.state == "complete":
            feasible = all(v <= 0 for v in event.constraints.values())
            tags[FEASIBLE_TAG] = str(feasible).lower()
        if event.error:
            tags[ERROR_TAG] = event.error[:ERROR_TAG_CHARS]
        run = self.client.create_run(
            self.experiment_id,
            start_time=int((now - max(_finite(event.duration_s) or 0.0, 0.0)) * 1000),
            tags={k: v[:_TAG_VALUE_CHARS] for k, v in tags.items()},
            run_name=f"trial-{event.number:04d}",
        )
        run_id = run.info.run_id
        try:
            _log_batch(self.client, run_id, metrics=_trial_metrics(event), params=_trial_params(event))
            if event.plan_yaml:
                self.client.log_text(run_id, event.plan_yaml, "plan.yaml")
            if event.error:
                self.client.log_text(run_id, event.error, "error.txt")
        except Exception:
            self.client.set_terminated(run_id, "FAILED")
            raise
        status = "FAILED" if event.state == "failed" else "FINISHED"
        self.client.set_terminated(run_id, status, end_time=int(now * 1000))


def read_trial_runs(
    tracking_uri: str, study_name: str, *, experiment: str = DEFAULT_EXPERIMENT
) -> list[dict[str, Any]]:
    """The trial runs of a study, by trial number: ids, state, status, params, metrics and tags."""
    client = _mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = _search_runs(client, found.experiment_id, {ROLE_TAG: "trial", STUDY_TAG: study_name})
    rows = [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "trial_number": int(run.data.tags.get(TRIAL_TAG, "-1")),
            "state": run.data.tags.get(STATE_TAG),
            "status": run.info.status,
            "parent_run_id": run.data.tags.get(PARENT_TAG),
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags),
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "artifact_uri": run.info.artifact_uri,
        }
        for run in runs
    ]
    return sorted(rows, key=lambda row: (row["trial_number"], row["start_time"] or 0))


def log_final_metrics(
    tracking_uri: str,
    study_name: str,
    trial_number: int,
    metrics: Mapping[str, Any],
    *,
    experiment: str = DEFAULT_EXPERIMENT,
) -> str | None:
    """Add ``final_<metric>`` to the child run of a trial (after ``orchestrate finalize``); its run id."""
    client = _mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    tags = {ROLE_TAG: "trial", STUDY_TAG: study_name, TRIAL_TAG: str(trial_number)}
    runs = _search_runs(client, found.experiment_id, tags)
    if not runs:
        return None
    run_id: str = runs[-1].info.run_id
    finals = {f"final_{key}": value for key, value in _metrics(metrics).items()}
    _log_batch(client, run_id, metrics=finals)
    return run_id


# -- helpers -----------------------------------------------------------------------------------


def _mlflow_client(tracking_uri: str) -> MlflowClient:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MissingExtraError("mlflow", "ui") from exc
    return MlflowClient(tracking_uri=tracking_uri)


def _get_or_create_experiment(
    client: MlflowClient, name: str, artifact_location: str | None, tracking_uri: str
) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it first
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise OrchestratorError(
            f"MLflow experiment '{name}' in {tracking_uri} is deleted; restore it, delete it for "
            f"good, or track into another experiment"
        )
    return str(found.experiment_id)


def _find_parents(client: MlflowClient, experiment_id: str, study: str) -> list[Run]:
    """Active parent runs of ``study``, earliest first (ties broken by run id)."""
    runs = _search_runs(client, experiment_id, {ROLE_TAG: "parent", STUDY_TAG: study})
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _search_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list[Run]:
    """Active runs carrying exactly these tags, all pages."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs([experiment_id], _tag_filter(tags), max_results=_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]


def _tag_filter(tags: Mapping[str, str]) -> str:
    """An MLflow filter string for tag equality. A value holding both quote characters cannot be
    written in the filter language; it is left out here and matched by the caller."""
    clauses = []
    for key, value in tags.items():
        if "'" not in value:
            clauses.append(f"tags.`{key}` = '{value}'")
        elif '"' not in value:
            clauses.append(f'tags.`{key}` = "{value}"')
    return " and ".join(clauses)


def _key(name: str) -> str:
    """A valid MLflow param/metric key for ``name``: unsupported characters become ``_``."""
    key = _NOT_KEY.sub("_", str(name))
    if key in {"", "."} or key.startswith(".."):
        key = "_" + key
    return key[:_KEY_CHARS]


def _unique(key: str, taken: Mapping[str, object]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate, n = key[: _KEY_CHARS - len(suffix)] + suffix, n + 1
    return candidate


def _params(values: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        out[_unique(_key(name), out)] = str(value)[:_PARAM_VALUE_CHARS]
    return out


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers only: MLflow stores NaN, but a NaN metric only hides a failure."""
    out: dict[str, float] = {}
    for name, value in values.items():
        number = _finite(value)
        if number is not None:
            out[_unique(_key(name), out)] = number
    return out


def _trial_params(event: TrialFinished) -> dict[str, str]:
    values: dict[str, Any] = {}
    for layer, decision in event.layers.items():
        for field, value in decision.items():
            values[f"{layer}.{field}"] = value
    # Optuna's own names may coincide with the layer keys but hold the unrounded value
    values.update({f"optuna.{name}": value for name, value in event.params.items()})
    return _params(values)


def _trial_metrics(event: TrialFinished) -> dict[str, float]:
    values: dict[str, Any] = dict(event.metrics)
    values.update({f"constraint_{name}": value for name, value in event.constraints.items()})
    values["duration_s"] = event.duration_s
    return _metrics(values)


def _counts(summary: Mapping[str, Any]) -> dict[str, float]:
    trials = [t for t in summary.get("trials") or () if isinstance(t, Mapping)]
    counts: dict[str, float] = {"n_trials": float(len(trials))}
    for state in ("complete", "infeasible", "gated", "failed", "lost"):
        counts[f"n_{state}"] = float(sum(t.get("state") == state for t in trials))
    counts["n_feasible"] = float(sum(bool(t.get("feasible")) for t in trials))
    counts["n_pareto"] = float(len(summary.get("pareto") or ()))
    return counts


def _policy_yaml(policy: Mapping[str, Any]) -> str:
    import yaml

    plain = json.loads(json.dumps(dict(policy), default=str))
    return str(yaml.safe_dump(plain, sort_keys=False))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
) -> None:
    """``log_batch`` in requests that respect MLflow's per-request limits."""
    from mlflow.entities import Metric, Param

    stamp = int(time.time() * 1000)
    metric_list = [Metric(k, v, stamp, 0) for k, v in (metrics or {}).items()]
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    metric_chunks = list(_chunks(metric_list, _BATCH))
    param_chunks = list(_chunks(param_list, _BATCH))
    for i in range(max(len(metric_chunks), len(param_chunks))):
        client.log_batch(
            run_id,
            metrics=metric_chunks[i] if i < len(metric_chunks) else [],
            params=param_chunks[i] if i < len(param_chunks) else [],
        )
