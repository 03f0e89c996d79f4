"""B1: a searched per-layer plan against torch-pruning's uniform and global pruning at 16x fewer MACs.

mnist-resnet at the ResNet-20 shape (stride-1 stem, 31.5 M MACs, 50,000 training images, the 10,000 test
images), for each seed (the task's seed: data order and baseline training):

- **searched**: ``orchestrate search`` (in-process) over per-stage widths, per-block inner widths and which
  blocks to drop, constrained to ``max_macs_ratio: 0.0625``, maximizing accuracy after a short recovery per
  trial (the proxy); its most accurate feasible plan is pruned again from the baseline;
- **uniform L1**: torch-pruning's ``MetaPruner`` with L1 magnitude importance and one ratio for every layer,
  as a user writes it, the ratio chosen so that its MACs are within +3 % of the searched plan's (never
  fewer);
- **global L1**: the same with ``global_pruning=True``.

Every pruned model then gets the same final recovery, the plain script a user writes: one epoch of the
50,000 images, SGD lr 0.05, Nesterov momentum 0.9, weight decay 5e-4, cosine schedule. The search's own
cost (trials, wall time) is reported beside it.

    python benchmarks/pruning_16x.py --write docs/benchmarks.md
    python benchmarks/pruning_16x.py --quick      # small task, for CI
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/ is on sys.path when a script runs
    MNIST_QUICK,
    plain_finetune,
    ratio_for_macs,
    run_search,
    torch_pruning_l1,
)
from _docs import measured, write_row, write_section
from torch import nn

from orchestrator import CompressionPlan, Task, load_registry, parse_policy
from orchestrator.measure import count_macs_params, threads
from orchestrator.pipeline import Pipeline

SECTION = "## B1: searched plan vs torch-pruning uniform and global pruning at 16x fewer MACs (mnist-resnet)"
TARGET = 1 / 16


def _search_policy(seed: int, options: dict[str, Any], epochs: float, blocks: int) -> Any:
    """Per-stage output widths, per-block inner widths and block drops, at most 1/16 of the MACs."""
    stages = [
        {
            "name": f"stage{s}",
            "layers": [f"stages.{s}.*.conv2", f"stages.{s}.0.downsample.0"]
            + (["stem.conv"] if s == 0 else []),
            "prune_ratio": [0.55, 0.95],
            "step": 0.025,
            "share": True,
        }
        for s in range(3)
    ]
    data = {
        "schema_version": 1,
        "task": {"name": "mnist-resnet", "options": {**options, "seed": seed}},
        "pipeline": {
            "pruner": ["depth", {"name": "torch-pruning", "options": {"importance": "magnitude", "p": 1}}],
            "distiller": {"name": "kd", "options": {"epochs": epochs}},
        },
        "search": {
            "space": [
                {
                    "name": "blocks",
                    "layers": [f"stages.*.{b}" for b in range(1, blocks)],
                    "drop": [False, True],
                },
                {"name": "inner", "layers": ["stages.*.conv1"], "prune_ratio": [0.55, 0.95], "step": 0.025},
                *stages,
            ],
            "objectives": [{"metric": "accuracy", "direction": "maximize"}],
            "constraints": {"max_macs_ratio": TARGET},
            "reference_plans": False,
        },
        "measure": {"latency": False},
    }
    import yaml

    return parse_policy(yaml.safe_dump(data), path=Path(f"b1-seed{seed}.yaml"))


def searched(seed: int, options: dict[str, Any], trials: int, epochs: float, blocks: int) -> dict[str, Any]:
    """Run the search; return its most accurate feasible plan, its counts and how long it took."""
    policy = _search_policy(seed, options, epochs, blocks)
    events, _, seconds = run_search(policy, trials, seed, f"b1-{seed}")
    complete = [e for e in events if e.state == "complete"]
    if not complete:
        raise SystemExit(f"seed {seed}: no feasible plan in {trials} trials")
    best = max(complete, key=lambda e: e.metrics["accuracy"])
    return {
        "policy": policy,
        "plan": CompressionPlan.model_validate({"layers": best.layers}),
        "trial": best.number,
        "trial_accuracy": best.metrics["accuracy"],
        "complete": len(complete),
        "infeasible": sum(e.state == "infeasible" for e in events),
        "seconds": seconds,
    }


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    registry = load_registry()
    options = MNIST_QUICK if args.quick else {}
    task = registry.components.create("task", "mnist-resnet", {**options, "seed": seed})
    assert isinstance(task, Task)
    row: dict[str, Any] = {}
    with threads(2):
        teacher = task.build_model()
        row["baseline"] = task.evaluate(teacher)["accuracy"]
        base_macs = count_macs_params(teacher, task.example_inputs())[0]
        search = searched(seed, options, args.trials, args.search_epochs, 2 if args.quick else 3)
        row["search"] = search
        pipeline = Pipeline.from_policy(search["policy"], registry)
        models: dict[str, nn.Module] = {}
        with tempfile.TemporaryDirectory() as tmp:
            baseline = pipeline.baseline(Path(tmp))
            models["searched"] = pipeline.prune(search["plan"], baseline)
        target = count_macs_params(models["searched"], task.example_inputs())[0] / base_macs
        for label, global_ in (("uniform L1", False), ("global L1", True)):
            ratio, models[label], _ = ratio_for_macs(
                lambda r, g=global_: torch_pruning_l1(teacher, task, r, global_=g), task, base_macs, target
            )
            row[f"{label} ratio"] = ratio
        for label in METHODS:
            model = models[label]
            row[f"{label} macs"] = count_macs_params(model, task.example_inputs())[0] / base_macs
            start = time.perf_counter()
            row[label] = plain_finetune(model, task, args.epochs, seed)
            row[f"{label} seconds"] = time.perf_counter() - start
            print(f"seed {seed} {label}: {row[label]:.2f} % at {row[f'{label} macs']:.4f}x MACs", flush=True)
    return row


METHODS = ("searched", "uniform L1", "global L1")


def table(rows: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "| method | "
        + " | ".join(f"seed {s}" for s in rows)
        + " | mean accuracy % | vs baseline | MACs ratio |",
        "|---|" + "---|" * len(rows) + "---|---|---|",
    ]
    base = statistics.mean(r["baseline"] for r in rows.values())
    lines.append(
        "| baseline (unpruned) | "
        + " | ".join(f"{r['baseline']:.2f}" for r in rows.values())
        + f" | {base:.2f} | | 1 |"
    )
    for method in METHODS:
        values = [r[method] for r in rows.values()]
        macs = statistics.mean(r[f"{method} macs"] for r in rows.values())
        mean = statistics.mean(values)
        lines.append(
            f"| {method} | "
            + " | ".join(f"{v:.2f}" for v in values)
            + f" | **{mean:.2f}** | {mean - base:+.2f} | {macs:.4f} |"
        )
    return lines


def details(rows: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "| seed | MACs ratio: searched / uniform / global | uniform ratio | global ratio "
        "| search: feasible / trials | best trial (accuracy in search) | search time |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, r in rows.items():
        s = r["search"]
        total = s["complete"] + s["infeasible"]
        macs = " / ".join(f"{r[f'{m} macs']:.4f}" for m in METHODS)
        lines.append(
            f"| {seed} | {macs} | {r['uniform L1 ratio']:.3f} | {r['global L1 ratio']:.3f} "
            f"| {s['complete']} / {total} | {s['trial']} ({s['trial_accuracy']:.2f} %) "
            f"| {s['seconds'] / 60:.1f} min |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=40, help="search trials per seed")
    parser.add_argument("--search-epochs", type=float, default=0.1, help="kd epochs per search trial")
    parser.add_argument("--epochs", type=float, default=1.0, help="recovery of every method's final model")
    parser.add_argument("--quick", action="store_true", help="small task, 8 trials, 1 seed (CI smoke test)")
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials = [0], 8
    start = time.perf_counter()
    rows = {seed: one_seed(seed, args) for seed in args.seeds}
    minutes = (time.perf_counter() - start) / 60
    command = (
        "benchmarks/pruning_16x.py --quick"
        if args.quick
        else f"benchmarks/pruning_16x.py --seeds {' '.join(map(str, args.seeds))} --trials {args.trials} "
        f"--search-epochs {args.search_epochs:g} --epochs {args.epochs:g}"
    )
    text = "\n".join(
        [
            SECTION,
            "",
            "Three ways to 1/16 of the baseline's MACs (the ResNet-20 shape: stride-1 stem, 50,000 training "
            "images, the 10,000 test images), each followed by the same final recovery, the plain script a "
            f"user writes: {args.epochs:g} epoch(s), SGD lr 0.05, Nesterov momentum 0.9, weight decay 5e-4, "
            "cosine schedule. The searched plan comes from "
            f"{args.trials} trials of `orchestrate search` (per-stage widths, per-block inner widths, blocks "
            f"to drop; `max_macs_ratio: 0.0625`; {args.search_epochs:g} epoch of kd per trial with the "
            "task's recipe, BatchNorm recalibrated after pruning; infeasible plans cost no training). "
            "torch-pruning "
            "is called directly (`MetaPruner`, L1 magnitude importance, the classifier left alone), its "
            "ratio the largest that keeps at least the searched plan's MACs (the closest one ratio comes; "
            "never a smaller model)."
            + (
                " Quick mode: the small task (3,000 training images, widths 8/16/32, 2 blocks, stride 2)."
                if args.quick
                else ""
            ),
            "",
            *table(rows),
            "",
            *details(rows),
            "",
            *measured(f"; the run took {minutes:.1f} min (baselines trained when not cached)", command),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        means = {m: statistics.mean(r[m] for r in rows.values()) for m in (*METHODS, "baseline")}
        write_row(
            args.write,
            "B1",
            "searched plan vs torch-pruning uniform L1 vs global L1 at 1/16 MACs (MACs at or just above "
            "the searched plan's), "
            f"same final recovery: 1 epoch SGD (ResNet-20 shape, 50k/10k, {len(rows)} seeds)",
            ", ".join(f"{m} {means[m]:.2f} %" for m in METHODS)
            + f" (baseline {means['baseline']:.2f} %); searched - uniform "
            f"{means['searched'] - means['uniform L1']:+.2f} points",
            command,
        )


if __name__ == "__main__":
    main()
