"""``orchestrate finalize``: re-train the Pareto plans of a study with the long recovery budget.

A search recovers each trial briefly (``pipeline.distiller``); the plans that end on the Pareto front
deserve the long budget of ``search.finalize.distiller``. Each is applied again from the cached baseline
with that distiller, saved and measured side by side with the baseline. Its metrics are stored on the
study (``final_metrics``, by trial number: a finished trial cannot be changed), shown as the Pareto
row's ``final`` in ``summary.json``, and logged to the trial's MLflow child run (``final_<metric>``).
Artifacts go to ``RUNS/STUDY/final/trial-NNNN/model.pt``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import OrchestratorError
from orchestrator.pipeline import Pipeline, ratios
from orchestrator.plan import CompressionPlan
from orchestrator.policy import parse_policy
from orchestrator.summary import FINAL_ATTR, build_summary, write_outputs

if TYPE_CHECKING:
    import optuna

    from orchestrator.registry import PluginRegistry

__all__ = ["finalize_study"]


def finalize_study(
    study: optuna.Study,
    registry: PluginRegistry,
    out_dir: Path,
    *,
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Re-train and measure every Pareto plan of ``study``; record and return their final metrics."""
    from orchestrator.tracking import log_final_metrics

    policy = parse_policy(study.user_attrs["policy"])
    if policy.search is None or policy.search.finalize is None:
        raise OrchestratorError(
            f"study '{study.study_name}' was searched with a policy without search.finalize; add "
            "'finalize: {distiller: {name: kd, options: {epochs: ...}}}' under search: and search again"
        )
    final_pipeline = policy.pipeline.model_copy(update={"distiller": policy.search.finalize.distiller})
    pipeline = Pipeline.from_policy(policy.model_copy(update={"pipeline": final_pipeline}), registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = pipeline.baseline(out_dir)
    _same_baseline(study, baseline.metrics, pipeline.task.metric)
    finals: dict[str, dict[str, float]] = dict(study.user_attrs.get(FINAL_ATTR, {}))
    results = []
    for row in build_summary(study, out_dir)["pareto"]:
        number = row["number"]
        plan = CompressionPlan.from_mapping({"layers": row["layers"]})
        target = out_dir / "final" / f"trial-{number:04d}"
        target.mkdir(parents=True, exist_ok=True)
        result = pipeline.finish(pipeline.compress(plan, baseline), baseline, target)
        metrics = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
        metrics.update(ratios(metrics, baseline.metrics))
        finals[str(number)] = metrics
        study.set_user_attr(FINAL_ATTR, finals)  # after each plan: an interrupted run keeps the others
        if tracking_uri is not None:
            log_final_metrics(tracking_uri, study.study_name, number, metrics)
        results.append({"number": number, "search": row["metrics"], "final": metrics})
    baseline.artifact.unlink(missing_ok=True)
    write_outputs(study, out_dir)
    return results


def _same_baseline(study: optuna.Study, metrics: dict[str, float], metric: str) -> None:
    """Refuse to finalize against another baseline than the one the study was searched with."""
    searched = study.user_attrs.get("baseline", {}).get(metric)
    now = metrics.get(metric)
    if searched is not None and now is not None and abs(searched - now) > 1e-6 * max(1.0, abs(searched)):
        raise OrchestratorError(
            f"the baseline now scores {metric} {now:.6g}, but study '{study.study_name}' was searched "
            f"against {searched:.6g}: another cached baseline (is ORCHESTRATOR_CACHE the same as during "
            "the search?)"
        )
