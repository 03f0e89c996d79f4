"""The outcome of a search, rebuilt from storage alone: counts, baseline, trials, Pareto set, plan files."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator._atomic import write_text
from orchestrator.plan import CompressionPlan
from orchestrator.policy import parse_policy

if TYPE_CHECKING:
    import optuna

__all__ = ["STATE_ATTR", "build_summary", "is_lost", "pareto_front", "write_outputs"]

#: trial user attribute holding our state (complete, infeasible, gated, failed)
STATE_ATTR = "state"
#: the states of trials that ran to an outcome: they are the ones a budget of trials counts
OUTCOMES = ("complete", "infeasible", "gated", "failed")
#: study attribute holding, by trial number, the metrics of plans re-trained by `orchestrate finalize`
FINAL_ATTR = "final_metrics"


def is_lost(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's worker stopped before recording an outcome: killed (its heartbeat stopped and
    another worker failed it), or interrupted with Ctrl-C. Optuna has it as failed, but not we: a lost
    trial is not counted in the budget, and a killed worker's plan is queued to run again."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and trial.user_attrs.get(STATE_ATTR) != "failed"


def _state(trial: optuna.trial.FrozenTrial) -> str:
    from optuna.trial import TrialState

    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "waiting"  # an enqueued plan no worker has started (the budget ran out first)
    if is_lost(trial):
        return "lost"
    ours = trial.user_attrs.get(STATE_ATTR)
    return str(ours) if ours else trial.state.name.lower()


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[float]) -> bool:
    better_or_equal = all(s * x >= s * y for x, y, s in zip(a, b, signs, strict=True))
    return better_or_equal and any(s * x > s * y for x, y, s in zip(a, b, signs, strict=True))


def pareto_front(points: Mapping[int, Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Keys of the non-dominated points (``directions``: maximize/minimize per value)."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    return sorted(
        k for k, v in points.items() if not any(_dominates(w, v, signs) for j, w in points.items() if j != k)
    )


def build_summary(study: optuna.Study, out_dir: Path) -> dict[str, Any]:
    """Everything ``summary.json`` holds, read from the study's storage."""
    attrs = study.user_attrs
    objectives = attrs.get("objectives", [])
    directions = [o["direction"] for o in objectives]
    trials = study.get_trials(deepcopy=False)
    rows: list[dict[str, Any]] = []
    points: dict[int, list[float]] = {}
    for trial in trials:
        state = _state(trial)
        feasible = all(v <= 0 for v in trial.constraints.values()) if trial.constraints else True
        metrics = {k: v for k, v in trial.user_attrs.get("metrics", {}).items() if _finite(v)}
        row: dict[str, Any] = {
            "number": trial.number,
            "state": state,
            "feasible": state == "complete" and feasible,
            "metrics": metrics,
            "constraints": dict(trial.constraints),
            "layers": trial.user_attrs.get("plan", {}).get("layers", {}),
            "error": trial.user_attrs.get("error"),
            "duration_s": trial.user_attrs.get("duration_s"),
            "worker": trial.user_attrs.get("worker"),
            "retry_of": trial.system_attrs.get("failed_trial"),
            "final": attrs.get(FINAL_ATTR, {}).get(str(trial.number)),
            "pareto": False,
            "plan": None,
        }
        rows.append(row)
        if row["feasible"] and trial.values is not None:
            points[trial.number] = list(trial.values)
    front = set(pareto_front(points, directions)) if directions else set()
    for row in rows:
        if row["number"] in front:
            row["pareto"] = True
            row["plan"] = str(out_dir / "plans" / f"trial-{row['number']:04d}.yaml")
    counts = {s: sum(r["state"] == s for r in rows) for s in OUTCOMES}
    counts["finished"] = sum(counts.values())
    counts["running"] = sum(r["state"] == "running" for r in rows)
    counts["waiting"] = sum(r["state"] == "waiting" for r in rows)
    counts["lost"] = sum(r["state"] == "lost" for r in rows)
    return {
        "study": study.study_name,
        "metric": attrs.get("metric"),
        "objectives": objectives,
        "constraints": attrs.get("constraints", {}),
        "counts": counts,
        "baseline": attrs.get("baseline", {}),
        "quantizers": attrs.get("quantizers"),
        "environment": attrs.get("environment", {}),
        "pareto": [r for r in rows if r["pareto"]],
        "trials": rows,
    }


def write_outputs(study: optuna.Study, out_dir: Path) -> dict[str, Any]:
    """Write ``summary.json``, ``plans/trial-NNNN.yaml`` for each Pareto trial, and the Pareto plots."""
    from orchestrator.report import write_pareto_html, write_pareto_png

    summary = build_summary(study, out_dir)
    plans = out_dir / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    policy_text = study.user_attrs.get("policy")
    if policy_text:
        policy = parse_policy(policy_text)
        for row in summary["pareto"]:
            plan = CompressionPlan.from_mapping({"layers": row["layers"]})
            write_text(Path(row["plan"]), policy.with_plan(plan).to_yaml())
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    if summary["objectives"]:
        write_pareto_html(summary, out_dir / "pareto.html")
        write_pareto_png(summary, out_dir / "pareto.png")
    return summary


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
