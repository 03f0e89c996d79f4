"""Optuna search over per-layer plans: space, objectives, constraints, budget, storage, early gate.

The loop uses Optuna's ask-and-tell interface so that every trial ends in a state we chose:
``complete`` (measured), ``infeasible`` (rejected from the plan alone, before any training), ``gated``
(stopped during recovery because it could no longer meet ``max_accuracy_drop``) or ``failed`` (raised or
produced a non-finite metric). Infeasible and gated trials are stored as Optuna ``PRUNED`` trials with
their constraint values, which the constraint-aware samplers learn from.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import socket
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.budget import Budget, parse_budget
from orchestrator.components import RecoveryStopped, SamplerFactory, Scorer
from orchestrator.environment import policy_environment
from orchestrator.errors import OrchestratorError, PolicyError
from orchestrator.events import SearchFinished, SearchStarted, TrialFinished, TrialState
from orchestrator.measure import count_macs_params, theoretical_bytes
from orchestrator.pipeline import Baseline, Pipeline
from orchestrator.space import SearchSpace, rank_importance
from orchestrator.storage import (
    Heartbeat,
    beating,
    budget_lock,
    default_storage_url,
    exact_budget,
    open_storage,
)
from orchestrator.summary import STATE_ATTR, is_lost, write_outputs

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from orchestrator.plan import CompressionPlan
    from orchestrator.policy import Policy, SearchSpec
    from orchestrator.registry import PluginRegistry

__all__ = ["DEFAULT_RUNS_DIR", "Search", "SearchSettings", "derived_metrics", "run_search"]

DEFAULT_RUNS_DIR = Path("orchestrate-runs")
#: trial user attributes: the worker (``host:pid``) that ran it, and its heartbeat interval in seconds
WORKER_ATTR = "worker"
HEARTBEAT_ATTR = "heartbeat_s"
#: how often a worker that found the budget spent looks again at the trials other workers still run
_WAIT_S = 2.0


@dataclass(frozen=True)
class SearchSettings:
    """Where and how long a search runs; command-line values override the policy's ``search:``."""

    budget: Budget
    study: str
    storage: str
    runs_dir: Path
    seed: int
    tracking_uri: str | None = None
    experiment: str = "orchestrator"
    progress: bool = True
    #: crash detection of running trials; ``None`` turns it off
    heartbeat: Heartbeat | None = field(default_factory=Heartbeat)

    @classmethod
    def resolve(
        cls,
        policy: Policy,
        *,
        budget: str | None = None,
        study: str | None = None,
        storage: str | None = None,
        runs_dir: Path | None = None,
        seed: int | None = None,
        tracking_uri: str | None = None,
        track: bool = True,
        progress: bool = True,
        heartbeat: int = Heartbeat.interval,
        retries: int = Heartbeat.retries,
    ) -> SearchSettings:
        """``heartbeat`` is the heartbeat interval in seconds (0 turns crash detection off); ``retries``
        how often the plan of a trial whose worker died is run again."""
        from orchestrator.tracking import default_tracking_uri

        spec = _spec(policy)
        raw_budget = budget if budget is not None else spec.budget
        if raw_budget is None:
            raise PolicyError(
                "no budget: pass --budget (50 trials, or a time such as 30m) or set search.budget",
                path=policy.path,
                field="search.budget",
            )
        runs = (runs_dir or DEFAULT_RUNS_DIR).resolve()
        name = study or spec.study or (policy.path.stem if policy.path else "search")
        uri = tracking_uri or spec.tracking.uri or default_tracking_uri(runs)
        return cls(
            budget=parse_budget(raw_budget),
            study=name,
            storage=storage or spec.storage or default_storage_url(runs),
            runs_dir=runs,
            seed=policy.seed if seed is None else seed,
            tracking_uri=uri if track and spec.tracking.enabled else None,
            experiment=spec.tracking.experiment,
            progress=progress,
            heartbeat=Heartbeat(interval=heartbeat, retries=retries) if heartbeat > 0 else None,
        )


def _spec(policy: Policy) -> SearchSpec:
    if policy.search is None:
        raise PolicyError("this policy has no 'search:' section", path=policy.path, field="search")
    return policy.search


def derived_metrics(
    metrics: dict[str, float], baseline: dict[str, float], *, metric: str, higher_is_better: bool
) -> dict[str, float]:
    """``<metric>_drop`` and the cost ratios against the baseline, from raw metrics."""
    out: dict[str, float] = {}
    if metric in metrics and metric in baseline:
        delta = baseline[metric] - metrics[metric]
        out[f"{metric}_drop"] = delta if higher_is_better else -delta
    for key in ("macs", "params", "size_bytes"):
        if key in metrics and baseline.get(key):
            out[f"{key.removesuffix('_bytes')}_ratio"] = metrics[key] / baseline[key]
    latency = [metrics[k] / baseline[k] for k in metrics if k.startswith("latency_ms_b") and baseline.get(k)]
    if latency:
        out["latency_ratio"] = max(latency)
    return out


@dataclass
class _Outcome:
    state: TrialState
    metrics: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    values: list[float] | None = None
    error: str | None = None


class Search:
    """One process's part in a study: it runs trials until the study's budget is spent."""

    def __init__(self, policy: Policy, registry: PluginRegistry, settings: SearchSettings) -> None:
        self.policy = policy
        self.spec = _spec(policy)
        self.registry = registry
        self.settings = settings
        self.pipeline = Pipeline.from_policy(policy, registry)
        sampler = registry.components.create("sampler", self.spec.sampler.name, self.spec.sampler.options)
        assert isinstance(sampler, SamplerFactory)
        self.sampler_factory = sampler
        self.out_dir = settings.runs_dir / settings.study
        self.baseline: Baseline | None = None
        self.space: SearchSpace | None = None
        #: set when Ctrl-C stopped the search; the summary is still written
        self.interrupted = False
        self._storage: optuna.storages.RDBStorage | None = None
        self._study_id: int | None = None
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        self.environment = policy_environment(policy, registry.components)

    # -- set-up ---------------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        return self.pipeline.task.metric

    def _check_objectives(self, baseline: Baseline) -> None:
        known = dict(baseline.metrics)
        if self.pipeline.measure.latency:  # measured on each trial's artifact, beside the baseline's
            for batch in self.pipeline.measure.batch_sizes:
                known[f"latency_ms_b{batch}"] = known[f"latency_cv_b{batch}"] = 0.0
            known["latency_ratio"] = 0.0
        known.update(
            derived_metrics(
                baseline.metrics,
                baseline.metrics,
                metric=self.metric,
                higher_is_better=self.pipeline.task.higher_is_better,
            )
        )
        for index, objective in enumerate(self.spec.objectives):
            if objective.metric not in known:
                close = difflib.get_close_matches(objective.metric, list(known), n=1)
                guess = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.policy.error(
                    f"unknown metric '{objective.metric}'{guess}; trials report: {', '.join(sorted(known))}",
                    ("search", "objectives", index, "metric"),
                )

    def _open_study(self) -> optuna.Study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with budget_lock(self.settings.storage):  # several workers may create the tables at once
            return self._create_study()

    def _create_study(self) -> optuna.Study:
        import optuna

        storage = self._storage = open_storage(self.settings.storage, self.settings.heartbeat)
        directions = [o.direction for o in self.spec.objectives]
        try:
            existing = optuna.load_study(study_name=self.settings.study, storage=storage)
            done = len(existing.trials)
        except KeyError:
            done = 0
        sampler = self.sampler_factory.create(seed=self.settings.seed + done)
        try:
            study = optuna.create_study(
                study_name=self.settings.study,
                storage=storage,
                directions=directions,
                sampler=sampler,
                load_if_exists=True,
            )
        except ValueError as exc:
            raise PolicyError(str(exc), path=self.policy.path, field="search.objectives") from exc
        if [d.name.lower() for d in study.directions] != directions:
            raise PolicyError(
                f"study '{self.settings.study}' exists in {self.settings.storage} with other "
                "objectives; choose another name with --study",
                path=self.policy.path,
                field="search.objectives",
            )
        return study

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, *, stop: Callable[[TrialFinished], bool] | None = None) -> dict[str, Any]:
        """Run trials until the budget is spent (or ``stop`` returns true after a trial).

        Returns the summary, which is also written to ``runs_dir/<study>``.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        baseline = self.pipeline.baseline(self.out_dir)
        self.baseline = baseline
        space = SearchSpace.from_policy(self.policy, baseline.model, self.pipeline.task.example_inputs(2))
        self._check_objectives(baseline)
        study = self._open_study()
        if self.settings.budget.trials is not None and not exact_budget(self.settings.storage):
            warnings.warn(
                f"{self.settings.storage.split(':', 1)[0]} storage: workers count the budget without a "
                "lock, so several workers may run one trial each beyond it; use PostgreSQL or sqlite",
                RuntimeWarning,
                stacklevel=2,
            )
        with budget_lock(self.settings.storage):
            self.space, enqueue = self._shape(study, space, baseline)
            self._record_study(study, baseline, enqueue)
        tracker = self._start_tracking()
        try:
            with budget_lock(self.settings.tracking_uri or ""):  # one process creates MLflow's tables
                self.registry.notify(
                    "orchestrator_search_started",
                    event=SearchStarted(
                        study_name=self.settings.study,
                        storage=self.settings.storage,
                        output_dir=self.out_dir,
                        policy=self.policy.model_dump(mode="json"),
                        baseline=dict(baseline.metrics),
                        policy_path=self.policy.path,
                        environment=self.environment,
                    ),
                )
            try:
                self._loop(study, stop)
            except KeyboardInterrupt:
                self.interrupted = True  # the running trial is recorded as failed; keep what is done
            summary = write_outputs(study, self.out_dir)
            self.registry.notify(
                "orchestrator_search_finished",
                event=SearchFinished(
                    study_name=self.settings.study, summary=summary, output_dir=self.out_dir
                ),
            )
        finally:
            if tracker is not None:
                self.registry.remove_observer(tracker)
        return summary

    def _shape(
        self, study: optuna.Study, space: SearchSpace, baseline: Baseline
    ) -> tuple[SearchSpace, list[dict[str, Any]]]:
        """Apply the policy's priors; return the space and the plans to try first.

        Scores are computed once per study and kept in its storage, so resumed runs and other workers
        shape the space the same way. Reference plans use the unshaped ranges, so they are the same
        with and without priors.
        """
        priors = self.spec.priors
        enqueue: list[dict[str, Any]] = []
        if priors is None:
            if self.spec.reference_plans:
                enqueue = space.reference_params()
            return space, enqueue
        if priors.drop_scorer is not None:
            order = study.user_attrs.get("prior_drop_order")
            if order is None:
                scores = self._prior_scores(
                    priors.drop_scorer.name, priors.drop_scorer.options, baseline, space
                )
                order = sorted(scores, key=lambda n: scores[n])
                study.set_user_attr("prior_drop_order", order)
            space = space.ordered_drops(order)
        if self.spec.reference_plans:
            enqueue = space.reference_params()
        if priors.scorer is not None:
            layer_scores: dict[str, float] | None = study.user_attrs.get("prior_scores")
            if layer_scores is None:
                layer_scores = self._prior_scores(priors.scorer.name, priors.scorer.options, baseline, space)
                study.set_user_attr("prior_scores", layer_scores)
            space = space.narrowed(rank_importance(layer_scores), strength=priors.strength)
        enqueue += [p for p in space.warm_start_params(priors.warm_starts) if p not in enqueue]
        return space, enqueue

    def _prior_scores(
        self, name: str, options: dict[str, Any], baseline: Baseline, space: SearchSpace
    ) -> dict[str, float]:
        """Scores of the layers (or blocks) of ``space`` on the baseline."""
        import copy

        from orchestrator.pipeline import targets_of

        scorer = self.registry.components.create("scorer", name, options)
        assert isinstance(scorer, Scorer)
        model = copy.deepcopy(baseline.model)
        wanted = {layer.layer for layer in space.layers}
        targets = [t for t in targets_of(scorer, model, self.pipeline.task.example_inputs(1)) if t in wanted]
        return {k: float(v) for k, v in scorer.score(model, self.pipeline.task, targets).layers.items()}

    def _record_study(self, study: optuna.Study, baseline: Baseline, enqueue: list[dict[str, Any]]) -> None:
        if "policy" in study.user_attrs:
            return
        study.set_user_attr("policy", self.policy.to_yaml())
        study.set_user_attr("metric", self.metric)
        study.set_user_attr("quantizers", self.pipeline.quantizer_report())
        study.set_user_attr("objectives", [o.model_dump() for o in self.spec.objectives])
        study.set_user_attr("constraints", self.spec.constraints.model_dump(exclude_none=True))
        study.set_user_attr("baseline", {k: v for k, v in baseline.metrics.items() if math.isfinite(v)})
        study.set_user_attr("environment", self.environment)  # of the worker that measured the baseline
        if not study.trials:
            for params in enqueue:
                study.enqueue_trial(params, skip_if_exists=True)

    def _start_tracking(self) -> object | None:
        if self.settings.tracking_uri is None:
            return None
        from orchestrator.tracking import MlflowTracker

        tracker = MlflowTracker(tracking_uri=self.settings.tracking_uri, experiment=self.settings.experiment)
        self.registry.add_observer(tracker, name="mlflow-tracker")
        return tracker

    def _next_trial(self, study: optuna.Study, deadline: float | None) -> optuna.Trial | None:
        """Start the next trial, or ``None`` when the budget is spent.

        Counting and starting happen under :func:`budget_lock`, so workers sharing the study never
        start more trials than the budget in all. Lost trials (see :func:`~orchestrator.summary.is_lost`)
        are not counted. When the budget is spent but other workers still run trials with a heartbeat,
        this worker waits: if one of them dies, its trial goes stale and is run again here.
        """
        from optuna.trial import TrialState as OptunaState

        heartbeat = self.settings.heartbeat
        while deadline is None or time.monotonic() < deadline:
            with budget_lock(self.settings.storage):
                self._fail_stale(study)
                self._fail_unclaimed(study)
                if self.settings.budget.trials is None:
                    return self._ask(study)
                spent = [
                    t
                    for t in study.get_trials(deepcopy=False)
                    if t.state != OptunaState.WAITING and not is_lost(t)
                ]
                if len(spent) < self.settings.budget.trials:
                    return self._ask(study)
                watched = [
                    t for t in spent if t.state == OptunaState.RUNNING and HEARTBEAT_ATTR in t.user_attrs
                ]
                if heartbeat is None or not watched:
                    return None
            time.sleep(min(heartbeat.interval, _WAIT_S))
        return None

    def _fail_stale(self, study: optuna.Study) -> None:
        """Fail the running trials whose heartbeat stopped, and queue their plans again."""
        import optuna
        from optuna.exceptions import ExperimentalWarning

        if self.settings.heartbeat is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)

    def _fail_unclaimed(self, study: optuna.Study) -> None:
        """Fail the running trials no worker claimed: their worker died between ``ask`` and recording
        itself. Both happen under the budget lock, so a trial seen unclaimed under it has no live worker.
        Such a trial is lost (not counted); with heartbeats its retry is queued as for a stale one."""
        import optuna
        from optuna.trial import TrialState as OptunaState

        if not exact_budget(self.settings.storage):
            return
        storage = self._rdb_storage
        for trial in study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,)):
            if WORKER_ATTR in trial.user_attrs:
                continue
            trial_id = self._trial_id(trial)
            try:
                if not storage.set_trial_state_values(trial_id, state=OptunaState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            retry = storage.get_heartbeat_stale_trial_callback()
            if retry is not None:
                retry(study, storage.get_trial(trial_id))

    def _ask(self, study: optuna.Study) -> optuna.Trial:
        """``study.ask()``, the trial's first heartbeat, and the worker that runs it."""
        with warnings.catch_warnings():
            # Optuna records heartbeats itself only in study.optimize; `beating` does it here
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = study.ask()
        heartbeat = self.settings.heartbeat
        if heartbeat is not None:
            self._rdb_storage.record_heartbeat(self._trial_id(trial))
            trial.set_user_attr(HEARTBEAT_ATTR, heartbeat.interval)
        trial.set_user_attr(WORKER_ATTR, self._worker)
        return trial

    @property
    def _rdb_storage(self) -> optuna.storages.RDBStorage:
        assert self._storage is not None, "the study is opened by _open_study"
        return self._storage

    def _trial_id(self, trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
        """The storage's id of ``trial`` (what heartbeats are recorded under)."""
        storage = self._rdb_storage
        if self._study_id is None:
            self._study_id = storage.get_study_id_from_name(self.settings.study)
        return int(storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number))

    def _heartbeat(self, trial: optuna.Trial) -> AbstractContextManager[None]:
        if self.settings.heartbeat is None:
            return contextlib.nullcontext()
        return beating(self._rdb_storage, self._trial_id(trial), self.settings.heartbeat.interval)

    def _loop(self, study: optuna.Study, stop: Callable[[TrialFinished], bool] | None) -> None:
        from orchestrator.progress import SearchProgress

        budget = self.settings.budget
        deadline = time.monotonic() + budget.seconds if budget.seconds is not None else None
        with SearchProgress(
            budget=budget, metric=self.metric, enabled=self.settings.progress, study=study
        ) as progress:
            while (trial := self._next_trial(study, deadline)) is not None:
                event = self._run_trial(study, trial)
                progress.update(event)
                if stop is not None and stop(event):
                    break

    def _run_trial(self, study: optuna.Study, trial: optuna.Trial) -> TrialFinished:
        import optuna

        start = time.perf_counter()
        plan: CompressionPlan | None = None
        with self._heartbeat(trial):
            try:
                plan = self._sample(trial)
                outcome = self._evaluate(plan)
            except RecoveryStopped as stop:
                outcome = self._gated(stop)
            except KeyboardInterrupt:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    trial.set_user_attr("error", "interrupted (Ctrl-C); not counted in the budget")
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            except Exception as exc:  # a plugin's bug, a non-finite metric, MemoryError: this trial only
                outcome = _Outcome(state="failed", error=_error_text(exc))
            duration = time.perf_counter() - start
            try:
                self._tell(study, trial, outcome, duration)
                recorded = True
            except optuna.exceptions.UpdateFinishedTrialError:
                recorded = False
        event = TrialFinished(
            study_name=self.settings.study,
            number=trial.number,
            state=outcome.state,
            duration_s=duration,
            params=dict(trial.params),
            layers={n: d.model_dump() for n, d in plan.layers.items()} if plan else {},
            metrics=outcome.metrics,
            constraints=outcome.constraints,
            plan_yaml=self.policy.with_plan(plan).to_yaml() if plan else None,
            error=outcome.error,
        )
        if not recorded:
            grace = self.settings.heartbeat.grace_period if self.settings.heartbeat else 0
            warnings.warn(
                f"trial {trial.number} was failed by another worker while it ran here (no heartbeat "
                f"for {grace} s: was this process paused?); its result is not recorded",
                RuntimeWarning,
                stacklevel=2,
            )
            return event
        self._record_baseline_latency(study)
        self.registry.notify("orchestrator_trial_finished", event=event)
        return event

    def _tell(self, study: optuna.Study, trial: optuna.Trial, outcome: _Outcome, duration: float) -> None:
        import optuna

        for key, value in outcome.constraints.items():
            trial.set_constraint(key, value)
        trial.set_user_attr("metrics", {k: v for k, v in outcome.metrics.items() if math.isfinite(v)})
        trial.set_user_attr("duration_s", duration)
        if outcome.error:
            trial.set_user_attr("error", outcome.error[:8000])
        trial.set_user_attr(STATE_ATTR, outcome.state)
        if outcome.state == "complete":
            study.tell(trial, outcome.values)
        elif outcome.state == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def _record_baseline_latency(self, study: optuna.Study) -> None:
        """The baseline's latency is measured beside the first measured trial: keep it with the study."""
        assert self.baseline is not None
        stored = study.user_attrs.get("baseline", {})
        fresh = {k: v for k, v in self.baseline.metrics.items() if k not in stored and math.isfinite(v)}
        if fresh:
            study.set_user_attr("baseline", {**stored, **fresh})

    def _sample(self, trial: optuna.Trial) -> CompressionPlan:
        assert self.space is not None
        with warnings.catch_warnings():
            # reference plans keep the unshaped ranges on purpose (see _shape): Optuna warns of them
            warnings.filterwarnings("ignore", message="Fixed parameter .* out of range", category=UserWarning)
            plan = self.space.sample(trial)
        trial.set_user_attr("plan", plan.to_dict())
        return plan

    # -- one trial ------------------------------------------------------------------------------------
    def _derived(self, metrics: dict[str, float]) -> dict[str, float]:
        assert self.baseline is not None
        return derived_metrics(
            metrics,
            self.baseline.metrics,
            metric=self.metric,
            higher_is_better=self.pipeline.task.higher_is_better,
        )

    def _constraints(self, metrics: dict[str, float], *, static: bool) -> dict[str, float]:
        """Constraint values (feasible when <= 0) of the constraints ``metrics`` can decide."""
        limits = self.spec.constraints
        checks: list[tuple[str, float | None, str, bool]] = [
            ("max_macs_ratio", limits.max_macs_ratio, "macs_ratio", True),
            ("max_params_ratio", limits.max_params_ratio, "params_ratio", True),
            ("max_size_bytes", limits.max_size_bytes, "theoretical_bytes" if static else "size_bytes", True),
            ("max_accuracy_drop", limits.max_accuracy_drop, f"{self.metric}_drop", False),
            ("max_latency_ratio", limits.max_latency_ratio, "latency_ratio", False),
        ]
        out: dict[str, float] = {}
        for name, limit, key, from_plan in checks:
            if limit is None or (static and not from_plan) or key not in metrics:
                continue
            out[name] = metrics[key] - limit
        return out

    def _evaluate(self, plan: CompressionPlan) -> _Outcome:
        assert self.baseline is not None
        pruned = self.pipeline.prune(plan, self.baseline)
        static = self._static_metrics(pruned, plan)
        constraints = self._constraints(static, static=True)
        if any(v > 0 for v in constraints.values()):
            return _Outcome(state="infeasible", metrics=static, constraints=constraints)
        result = self.pipeline.compress(plan, self.baseline, monitor=self._gate(), pruned=pruned)
        with tempfile.TemporaryDirectory(prefix="orchestrate-trial-") as tmp:
            self.pipeline.finish(result, self.baseline, Path(tmp))
        metrics = dict(result.metrics)
        metrics.update(self._derived(metrics))
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"metric '{key}' is {value}")
        values = [metrics[o.metric] for o in self.spec.objectives]
        return _Outcome(
            state="complete",
            metrics=metrics,
            constraints=self._constraints(metrics, static=False),
            values=values,
        )

    def _static_metrics(self, pruned: nn.Module, plan: CompressionPlan) -> dict[str, float]:
        macs, params = count_macs_params(pruned, self.pipeline.task.example_inputs())
        metrics: dict[str, float] = {
            "macs": macs,
            "params": params,
            "theoretical_bytes": theoretical_bytes(pruned, plan.bits()),
        }
        metrics.update(self._derived(metrics))
        return metrics

    def _gate(self) -> Callable[[float, nn.Module], None] | None:
        limit = self.spec.constraints.max_accuracy_drop
        if limit is None or not self.spec.gate.enabled:
            return None
        margin = self.spec.gate.margin

        def check(fraction: float, student: nn.Module) -> None:
            if fraction >= 1.0:
                return
            metrics = dict(self.pipeline.task.evaluate(student))
            drop = self._derived(metrics)[f"{self.metric}_drop"]
            if drop > limit + margin:
                metrics[f"{self.metric}_drop"] = drop
                raise RecoveryStopped(
                    f"{self.metric} drop {drop:.2f} after {fraction:.0%} of recovery exceeds "
                    f"max_accuracy_drop {limit} + gate margin {margin}",
                    metrics,
                )

        return check

    def _gated(self, stop: RecoveryStopped) -> _Outcome:
        limit = self.spec.constraints.max_accuracy_drop
        drop = stop.metrics.get(f"{self.metric}_drop", math.inf)
        constraints = {"max_accuracy_drop": drop - (limit or 0.0)}
        return _Outcome(state="gated", metrics=dict(stop.metrics), constraints=constraints, error=stop.reason)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OrchestratorError):
        return f"{type(exc).__name__}: {exc}"
    lines = traceback.format_exception(exc)
    return "".join(lines[-12:])


def run_search(policy: Policy, registry: PluginRegistry, settings: SearchSettings) -> dict[str, Any]:
    """Run (or resume) the policy's search; return the summary written to ``runs_dir/<study>``.

    The summary's ``interrupted`` is true when Ctrl-C stopped the search early.
    """
    search = Search(policy, registry, settings)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        summary = search.run()
    summary["interrupted"] = search.interrupted
    return summary
