"""Lifecycle events handed to the ``orchestrator_search_*`` and ``orchestrator_trial_*`` hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["SearchFinished", "SearchStarted", "TrialFinished", "TrialState"]

#: ``complete``: measured and feasible or not; ``infeasible``: rejected from the plan alone, before any
#: training; ``gated``: stopped during recovery because it could no longer meet the accuracy constraint;
#: ``failed``: raised or produced a non-finite metric.
TrialState = Literal["complete", "infeasible", "gated", "failed"]


@dataclass(frozen=True)
class SearchStarted:
    study_name: str
    storage: str
    output_dir: Path
    policy: Mapping[str, Any]
    baseline: Mapping[str, float]
    policy_path: Path | None = None
    #: versions, machine and threads of this worker (:func:`orchestrator.environment.describe_environment`)
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialFinished:
    study_name: str
    number: int
    state: TrialState
    duration_s: float
    params: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    constraints: Mapping[str, float] = field(default_factory=dict)
    plan_yaml: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SearchFinished:
    study_name: str
    summary: Mapping[str, Any]
    output_dir: Path
