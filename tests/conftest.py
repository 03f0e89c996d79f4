from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .postgres import postgres  # noqa: F401  (a session fixture: a throwaway PostgreSQL server)

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One baseline cache per test session; no telemetry; no stray plugin blocking."""
    os.environ.setdefault("ORCHESTRATOR_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("ORCHESTRATOR_BLOCK", None)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))


@pytest.fixture
def registry():  # type: ignore[no-untyped-def]
    from orchestrator import load_registry

    return load_registry()


@pytest.fixture(scope="session")
def digits_task():  # type: ignore[no-untyped-def]
    from orchestrator import load_registry

    return load_registry().components.create("task", "digits-cnn")


#: an mnist-resnet configuration that trains in a few seconds (the default trains on all 50,000 images)
MNIST_SMALL = {
    "train_size": 3000,
    "eval_size": 500,
    "epochs": 1,
    "widths": [8, 16, 32],
    "blocks": 2,
    "stem_stride": 2,
    "batch_size": 64,
    "lr": 0.05,
}


@pytest.fixture(scope="module")
def mnist_task() -> Iterator[Any]:
    """The small mnist-resnet task, run with one thread (small convolutions: as fast, and immune to
    busy neighbours)."""
    from orchestrator import Task, load_registry
    from orchestrator.measure import threads

    made = load_registry().components.create("task", "mnist-resnet", MNIST_SMALL)
    assert isinstance(made, Task)
    with threads(1):
        yield made
