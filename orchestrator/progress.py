"""The progress bar of a search: trials (or time) spent, best feasible result so far, time left."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from orchestrator.budget import Budget
    from orchestrator.events import TrialFinished

__all__ = ["SearchProgress"]


class SearchProgress:
    """A rich progress bar on stderr; does nothing when disabled."""

    def __init__(self, *, budget: Budget, metric: str, enabled: bool, study: optuna.Study) -> None:
        self.budget = budget
        self.metric = metric
        self.enabled = enabled
        self.study = study
        self.best: tuple[float, float | None, int] | None = None
        self.counts: dict[str, int] = {}
        self._progress: Any = None
        self._task: Any = None
        self._start = time.monotonic()

    def __enter__(self) -> SearchProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
        if self.budget.trials is not None:
            columns.append(MofNCompleteColumn())
        columns += [TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self._progress.__enter__()
        total = self.budget.trials if self.budget.trials is not None else self.budget.seconds
        self._task = self._progress.add_task("search", total=total, completed=self._done())
        return self

    def _done(self) -> float:
        if self.budget.trials is None:
            return time.monotonic() - self._start
        from optuna.trial import TrialState

        from orchestrator.summary import is_lost

        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(not is_lost(t) for t in self.study.get_trials(deepcopy=False, states=finished))

    def update(self, event: TrialFinished) -> None:
        self.counts[event.state] = self.counts.get(event.state, 0) + 1
        feasible = event.state == "complete" and all(v <= 0 for v in event.constraints.values())
        if feasible and self.metric in event.metrics:
            # the cheapest plan that meets every constraint (then the most accurate)
            candidate = (event.metrics[self.metric], event.metrics.get("macs_ratio"), event.number)
            if self.best is None or _cheaper(candidate, self.best):
                self.best = candidate
        if self._progress is None:
            return
        text = f"#{event.number} {event.state}"
        if self.best is not None:
            value, macs, number = self.best
            text += f" | best #{number}: {self.metric} {value:.2f}"
            text += f", {macs:.2f}x MACs" if macs is not None else ""
        self._progress.update(self._task, completed=self._done(), description=text)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)


def _cheaper(a: tuple[float, float | None, int], b: tuple[float, float | None, int]) -> bool:
    """Lower MACs ratio first, then the higher metric."""
    return (a[1] if a[1] is not None else 1.0, -a[0]) < (b[1] if b[1] is not None else 1.0, -b[0])
