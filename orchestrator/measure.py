"""What a compressed model costs: params, MACs, bytes on disk, latency on this machine.

Latency is measured the way this machine's drifting timings require: a fixed thread count, all models of
one comparison in one process, rounds interleaved between them (order alternating), and median and
coefficient of variation over rounds, with the load average recorded beside them.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from torch import nn

    from orchestrator.policy import MeasureSpec

__all__ = [
    "Latency",
    "compare_latency",
    "count_macs_params",
    "latency_metrics",
    "layer_costs",
    "load_average",
    "theoretical_bytes",
    "threads",
]


@dataclass(frozen=True)
class Latency:
    """Per-call latency at one batch size: median over rounds (ms) and coefficient of variation."""

    median_ms: float
    cv: float
    rounds: int


def count_macs_params(model: nn.Module, example_inputs: tuple[Any, ...]) -> tuple[int, int]:
    """MACs of one forward pass on ``example_inputs`` and the parameter count (torch-pruning's counter).

    Counts a float model; count before quantization, which does not change either number.
    """
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


def layer_costs(model: nn.Module, example_inputs: tuple[Any, ...]) -> dict[str, tuple[int, int]]:
    """(MACs, params) of every named module for one forward pass; a container sums its children."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        _, _, flops, _params = tp.utils.count_ops_and_params(model, example_inputs, layer_wise=True)
    out: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if not name:
            continue
        leaves = [m for m in module.modules() if not list(m.children())]
        macs = sum(int(flops.get(m) or 0) for m in leaves)
        count = sum(p.numel() for p in module.parameters())
        out[name] = (macs, count)
    return out


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(count)``, restoring the previous value."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_calls(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000.0


def compare_latency(
    models: Mapping[str, Callable[..., Any]],
    inputs_for: Callable[[int], tuple[Any, ...]],
    spec: MeasureSpec,
) -> dict[str, dict[int, Latency]]:
    """Latency of each model at each of ``spec.batch_sizes``, rounds interleaved between the models."""
    import torch

    names = list(models)
    result: dict[str, dict[int, Latency]] = {n: {} for n in names}
    with threads(spec.threads), torch.inference_mode():
        for batch in spec.batch_sizes:
            inputs = inputs_for(batch)
            calls = {n: functools.partial(models[n], *inputs) for n in names}
            per_round: dict[str, int] = {}
            for n in names:
                for _ in range(spec.warmup):
                    calls[n]()
                once = _time_calls(calls[n], 1)
                per_round[n] = max(1, math.ceil(spec.min_round_ms / max(once, 1e-3)))
            samples: dict[str, list[float]] = {n: [] for n in names}
            for r in range(spec.rounds):
                for n in names if r % 2 == 0 else reversed(names):
                    samples[n].append(_time_calls(calls[n], per_round[n]))
            for n in names:
                med = statistics.median(samples[n])
                mean = statistics.fmean(samples[n])
                cv = statistics.pstdev(samples[n]) / mean if mean > 0 else 0.0
                result[n][batch] = Latency(median_ms=med, cv=cv, rounds=spec.rounds)
    return result


def latency_metrics(latencies: Mapping[int, Latency]) -> dict[str, float]:
    """Flat metric names: ``latency_ms_b{batch}`` and ``latency_cv_b{batch}``."""
    out: dict[str, float] = {}
    for batch, lat in sorted(latencies.items()):
        out[f"latency_ms_b{batch}"] = lat.median_ms
        out[f"latency_cv_b{batch}"] = lat.cv
    return out


def load_average() -> float:
    """One-minute load average of this machine (0.0 where the OS does not tell)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def theoretical_bytes(model: nn.Module, bits: Mapping[str, int]) -> int:
    """Sum of parameters x bits / 8, with 32 bits for every parameter outside a quantized layer."""
    total = 0.0
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        width = bits.get(name, 32)
        total += sum(p.numel() for p in own) * width / 8
    return int(total)
