from __future__ import annotations

import os
from pathlib import Path

import pytest

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
