"""B7: kd and feature-kd against plain fine-tuning, same step budget, at 16x fewer MACs (mnist-resnet).

For each seed (the task's seed: data order and baseline training), every convolution of the mnist-resnet
baseline is pruned by the same ratio (torch-pruning, magnitude, residual groups kept consistent), the ratio
bisected to 1/16 of the baseline's MACs. The pruned model is recovered three ways with the same number of
optimizer steps, learning rate and schedule: plain fine-tuning (task loss only: ``kd`` with alpha 0),
``kd`` (logits, T=4, alpha 0.7) and ``feature-kd`` (hidden features of every residual block, through width
adapters, plus the kd loss). Reported: accuracy per seed, mean, and the gap to the baseline.

    python benchmarks/recovery.py --write docs/benchmarks.md
    python benchmarks/recovery.py --quick      # small task, for CI
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import MNIST_QUICK  # benchmarks/ is on sys.path when a script runs
from _docs import measured, write_row, write_section

from orchestrator import CompressionPlan, Task, load_registry
from orchestrator.layers import compressible_layers
from orchestrator.measure import count_macs_params, threads

SECTION = "## B7: recovery methods at 16x fewer MACs (mnist-resnet)"
METHODS = {
    "fine-tune": ("kd", {"alpha": 0.0}),
    "kd": ("kd", {"alpha": 0.7, "temperature": 4.0}),
    "feature-kd": ("feature-kd", {"alpha": 0.7, "temperature": 4.0, "beta": 1.0}),
}


def _uniform_plan(model: torch.nn.Module, ratio: float) -> CompressionPlan:
    layers = {
        n: {"prune_ratio": ratio}
        for n, m in compressible_layers(model).items()
        if m.__class__.__name__ == "Conv2d"
    }
    return CompressionPlan.model_validate({"layers": layers})


def _pruned(registry: Any, task: Task[Any], model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    pruner = registry.components.create("pruner", "torch-pruning", {"round_to": 1})
    return pruner.prune(copy.deepcopy(model), _uniform_plan(model, ratio), task)


def _ratio_for(registry: Any, task: Task[Any], model: torch.nn.Module, target: float) -> tuple[float, float]:
    """The uniform ratio whose pruned model has ``target`` x the MACs (bisection), and that MACs ratio."""
    base, _ = count_macs_params(model, task.example_inputs())
    low, high = 0.0, 0.95
    for _ in range(12):
        mid = (low + high) / 2
        macs, _ = count_macs_params(_pruned(registry, task, model, mid), task.example_inputs())
        low, high = (mid, high) if macs / base > target else (low, mid)
    macs, _ = count_macs_params(_pruned(registry, task, model, high), task.example_inputs())
    return high, macs / base


def run(seeds: list[int], epochs: float, quick: bool) -> dict[str, Any]:
    registry = load_registry()
    rows: dict[str, list[float]] = {name: [] for name in METHODS}
    baselines, ratios = [], []
    for seed in seeds:
        options = {**(MNIST_QUICK if quick else {}), "seed": seed}
        task = registry.components.create("task", "mnist-resnet", options)
        assert isinstance(task, Task)
        with threads(2):
            teacher = task.build_model()
            baselines.append(task.evaluate(teacher)["accuracy"])
            ratio, macs_ratio = _ratio_for(registry, task, teacher, 1 / 16)
            ratios.append(macs_ratio)
            pruned = _pruned(registry, task, teacher, ratio)
            for name, (component, extra) in METHODS.items():
                options = {"epochs": epochs, "lr": 2e-3, "schedule": "cosine", **extra}
                distiller = registry.components.create("distiller", component, options)
                student = copy.deepcopy(pruned)
                torch.manual_seed(seed)
                distiller.distill(student, teacher, task)
                rows[name].append(task.evaluate(student)["accuracy"])
                print(f"seed {seed} {name}: {rows[name][-1]:.2f}", flush=True)
    return {"rows": rows, "baselines": baselines, "macs_ratios": ratios, "ratio": ratio}


def table(result: dict[str, Any], seeds: list[int]) -> str:
    base = statistics.mean(result["baselines"])
    lines = [
        "| recovery | " + " | ".join(f"seed {s}" for s in seeds) + " | mean accuracy % | vs baseline |",
        "|---|" + "---|" * len(seeds) + "---|---|",
        "| baseline (unpruned) | "
        + " | ".join(f"{b:.2f}" for b in result["baselines"])
        + f" | {base:.2f} | |",
    ]
    for name, values in result["rows"].items():
        mean = statistics.mean(values)
        lines.append(
            f"| {name} | "
            + " | ".join(f"{v:.2f}" for v in values)
            + f" | **{mean:.2f}** | {mean - base:+.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--epochs", type=float, default=1.0, help="recovery budget, the same for every method"
    )
    parser.add_argument("--quick", action="store_true", help="small task and budget (CI smoke test)")
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    epochs = 0.5 if args.quick else args.epochs
    started = time.perf_counter()
    result = run(args.seeds, epochs, args.quick)
    minutes = (time.perf_counter() - started) / 60
    macs = statistics.mean(result["macs_ratios"])
    quick = " --quick" if args.quick else ""
    text = "\n".join(
        [
            SECTION,
            "",
            f"Every convolution pruned by the same ratio, bisected to {macs:.4f}x the baseline's MACs "
            f"(1/{1 / macs:.1f}); recovery: {epochs:g} epoch(s) of the training data for every method, "
            "Adam, lr 2e-3, cosine schedule; the seed is the task's (data order and baseline training)."
            + (
                " Quick mode: the small task (3,000 training images, widths 8/16/32, 2 blocks)."
                if quick
                else ""
            ),
            "",
            table(result, args.seeds),
            "",
            *measured(
                f"; the run took {minutes:.1f} min (baselines trained when not cached)",
                f"benchmarks/recovery.py --seeds {' '.join(map(str, args.seeds))} --epochs {epochs:g}{quick}",
            ),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        means = {name: statistics.mean(v) for name, v in result["rows"].items()}
        write_row(
            args.write,
            "B7",
            f"kd and feature-kd vs plain fine-tuning, same steps, at {macs:.3f}x MACs (mnist-resnet, "
            f"{len(args.seeds)} seeds)",
            ", ".join(f"{name} {mean:.2f} %" for name, mean in means.items())
            + f" (baseline {statistics.mean(result['baselines']):.2f} %)",
            f"benchmarks/recovery.py --seeds {' '.join(map(str, args.seeds))} --epochs {epochs:g}{quick}",
        )


if __name__ == "__main__":
    main()
