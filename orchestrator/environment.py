"""What a result was measured with: versions, machine and threads, recorded beside every search and apply
so that a figure can be traced to the software and hardware that produced it."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from orchestrator.components import ComponentKind
    from orchestrator.policy import Policy
    from orchestrator.registry import ComponentRegistry

__all__ = ["DISTRIBUTIONS", "describe_environment", "policy_environment"]

#: the distributions whose versions decide our results, when installed
DISTRIBUTIONS = (
    "compression-orchestrator",
    "torch",
    "torch-pruning",
    "neural-compressor-pt",
    "optuna",
    "mlflow",
    "mlflow-skinny",
    "transformers",
    "numpy",
    "scikit-learn",
    "pydantic",
)


def describe_environment(distributions: Iterable[str] = ()) -> dict[str, str]:
    """Python, platform, CPU, core count, torch's thread count and quantization engine, and the versions
    of :data:`DISTRIBUTIONS` and ``distributions`` (those of the plugins in use) that are installed."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model() or platform.machine(),
        "cpu_count": str(os.cpu_count() or 0),
    }
    try:
        import torch

        env["torch_threads"] = str(torch.get_num_threads())
        env["quantized_engine"] = str(torch.backends.quantized.engine)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for name in dict.fromkeys([*DISTRIBUTIONS, *distributions]):
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return env


def policy_environment(policy: Policy, components: ComponentRegistry) -> dict[str, str]:
    """:func:`describe_environment` with the versions of the plugins that give the policy's task and
    pipeline."""
    named: list[tuple[ComponentKind, str]] = [("task", policy.task.name)]
    named += [(kind, spec.name) for kind, spec, _ in policy.pipeline.steps()]
    distributions = [components.info(kind, name).distribution for kind, name in named]
    return describe_environment(d for d in distributions if not d.startswith("<"))


def _cpu_model() -> str | None:
    """The CPU's model name on Linux (``platform.processor()`` is empty there)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return None
