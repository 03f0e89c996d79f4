"""What several benchmarks share: the small mnist-resnet of their quick modes, and an in-process search."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator import load_registry
from orchestrator.events import TrialFinished
from orchestrator.search import Search, SearchSettings

#: mnist-resnet options of the quick modes (the tests' configuration): trains in seconds
MNIST_QUICK: dict[str, Any] = {
    "train_size": 3000,
    "eval_size": 500,
    "epochs": 1,
    "widths": [8, 16, 32],
    "blocks": 2,
    "stem_stride": 2,
    "batch_size": 64,
    "lr": 0.05,
}


def run_search(policy: Any, trials: int, seed: int, study: str) -> tuple[list[TrialFinished], Search, float]:
    """Search ``trials`` trials in a throwaway runs directory, no tracking; every trial's event, the
    search (its baseline) and the wall time in seconds."""
    events: list[TrialFinished] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings.resolve(
            policy,
            budget=str(trials),
            study=study,
            runs_dir=Path(tmp),
            seed=seed,
            track=False,
            progress=False,
        )
        search = Search(policy, load_registry(), settings)
        search.run(stop=lambda event: events.append(event) or False)
    return events, search, time.perf_counter() - start
