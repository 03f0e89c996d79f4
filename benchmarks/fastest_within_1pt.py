"""B2: the fastest plan within 1 point of fp32 accuracy, searched, against the fastest plain combination.

mnist-resnet, for each seed (the task's seed: data order and baseline training), one pipeline (``depth``,
then ``torch-pruning`` with L1 magnitude importance, ``kd`` recovery, ``torch-int8`` static) applies:

- **searched**: the plans of ``orchestrate search`` over the space of ``policies/mnist-depth-width.yaml``
  (blocks to drop, inner widths, int8 or float; objectives accuracy and latency at batch 64; at most 1 point
  lost) — the feasible trial fastest at batch 1 and the one fastest at batch 64, applied again;
- **plain combinations** a user would try first: uniform L1 channel pruning of every convolution at a few
  ratios + int8, and dropping all but the first residual block of each stage, in fp32 and in int8.

Every model gets the same recovery. All artifacts are saved, loaded back and timed side by side in one
process (1 thread, interleaved rounds, median and coefficient of variation), with the fp32 baseline. For
each batch size the fastest searched plan within 1 point is set against the fastest plain combination
within 1 point.

    python benchmarks/fastest_within_1pt.py --write docs/benchmarks.md
    python benchmarks/fastest_within_1pt.py --quick      # small task, for CI
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _common import MNIST_QUICK, run_search  # benchmarks/ is on sys.path when a script runs
from _docs import measured, write_row, write_section

from orchestrator import CompressionPlan, load_registry, parse_policy
from orchestrator.artifact import load_artifact
from orchestrator.events import TrialFinished
from orchestrator.layers import compressible_layers, droppable_blocks
from orchestrator.measure import Latency, compare_latency, load_average
from orchestrator.pipeline import Baseline, Pipeline
from orchestrator.policy import MeasureSpec

POLICY = Path(__file__).resolve().parents[1] / "policies" / "mnist-depth-width.yaml"
SECTION = "## B2: fastest plan within 1 point of fp32, searched vs plain combinations (mnist-resnet)"
BATCHES = (1, 64)
DROP = 1.0


@dataclass
class Candidate:
    label: str
    kind: str  # "searched" or "plain"
    accuracy: float
    macs_ratio: float
    bytes_ratio: float
    artifact: Path
    latency: dict[int, Latency] = field(default_factory=dict)


def _policy(seed: int, options: dict[str, Any], epochs: float, rounds: int, priors: bool) -> Any:
    data = yaml.safe_load(POLICY.read_text())
    if not priors:
        del data["search"]["priors"]
    data["task"] = {"name": "mnist-resnet", "options": {**options, "seed": seed}}
    data["pipeline"]["pruner"][1]["options"]["p"] = 1
    data["pipeline"]["distiller"]["options"]["epochs"] = epochs
    data["measure"]["rounds"] = rounds
    return parse_policy(yaml.safe_dump(data), path=POLICY)


def _plain_plans(model: Any, example: tuple[Any, ...], ratios: list[float]) -> dict[str, CompressionPlan]:
    layers = compressible_layers(model)
    convs = [n for n, m in layers.items() if type(m).__name__ == "Conv2d"]
    int8 = {n: {"bits": 8} for n in layers}
    later = [b for b in droppable_blocks(model, example) if not b.endswith(".0")]
    plans = {
        (f"uniform L1 {r:g} + int8" if r else "int8 only"): {
            n: {**int8[n], "prune_ratio": r} if n in convs and r else int8[n] for n in layers
        }
        for r in ratios
    }
    dropped = {b: {"drop": True} for b in later}
    kept = {n: d for n, d in int8.items() if not any(n.startswith(f"{b}.") for b in later)}
    plans["first block per stage"] = dropped
    plans["first block per stage + int8"] = {**dropped, **kept}
    return {label: CompressionPlan.model_validate({"layers": layers}) for label, layers in plans.items()}


def _apply(
    pipeline: Pipeline, baseline: Baseline, plan: CompressionPlan, out: Path
) -> tuple[float, float, float]:
    out.mkdir(parents=True)
    result = pipeline.finish(pipeline.compress(plan, baseline), baseline, out)
    m, b = result.metrics, baseline.metrics
    return m["accuracy"], m["macs"] / b["macs"], m["size_bytes"] / b["size_bytes"]


def one_seed(seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    registry = load_registry()
    policy = _policy(seed, MNIST_QUICK if args.quick else {}, args.epochs, 3, priors=not args.quick)
    events, _, search_seconds = run_search(policy, args.trials, seed, f"b2-{seed}")
    pipeline = Pipeline.from_policy(policy, registry)
    pipeline.measure = MeasureSpec(latency=False)
    baseline = pipeline.baseline(workdir)
    base_accuracy = baseline.metrics["accuracy"]
    feasible = [e for e in events if e.state == "complete" and e.metrics["accuracy"] >= base_accuracy - DROP]
    chosen: dict[int, TrialFinished] = {}
    for batch in BATCHES:
        if feasible:
            chosen[batch] = min(feasible, key=lambda e, b=batch: e.metrics[f"latency_ms_b{b}"])
    plans: dict[str, tuple[str, CompressionPlan]] = {}
    for event in chosen.values():
        label = f"searched: trial {event.number}"
        plans.setdefault(label, ("searched", CompressionPlan.model_validate({"layers": event.layers})))
    example = pipeline.task.example_inputs(2)
    for label, plan in _plain_plans(baseline.model, example, args.ratios).items():
        plans[label] = ("plain", plan)
    candidates = []
    for i, (label, (kind, plan)) in enumerate(plans.items()):
        accuracy, macs, size = _apply(pipeline, baseline, plan, workdir / str(i))
        candidates.append(Candidate(label, kind, accuracy, macs, size, workdir / str(i) / "model.pt"))
        print(f"seed {seed} {label}: {accuracy:.2f} %, {macs:.3f}x MACs, {size:.3f}x bytes", flush=True)
    models = {
        "fp32": load_artifact(baseline.artifact),
        **{c.label: load_artifact(c.artifact) for c in candidates},
    }
    spec = MeasureSpec(batch_sizes=list(BATCHES), threads=1, rounds=args.rounds, warmup=5, min_round_ms=50)
    load_before = load_average()
    latency = compare_latency(models, pipeline.task.example_inputs, spec)
    for c in candidates:
        c.latency = latency[c.label]
    return {
        "baseline": base_accuracy,
        "fp32": latency["fp32"],
        "candidates": candidates,
        "trials": len(events),
        "feasible": len(feasible),
        "search_seconds": search_seconds,
        "load": (load_before, load_average()),
    }


def _speedup(run: dict[str, Any], c: Candidate, batch: int) -> float:
    return float(run["fp32"][batch].median_ms / c.latency[batch].median_ms)


def _fastest(run: dict[str, Any], kind: str, batch: int) -> Candidate | None:
    within = [c for c in run["candidates"] if c.kind == kind and c.accuracy >= run["baseline"] - DROP]
    return max(within, key=lambda c: _speedup(run, c, batch)) if within else None


def seed_table(seed: int, run: dict[str, Any]) -> list[str]:
    lines = [
        f"Seed {seed}: baseline {run['baseline']:.2f} %, fp32 "
        + ", ".join(f"b{b} {run['fp32'][b].median_ms:.3f} ms ({run['fp32'][b].cv:.1%})" for b in BATCHES)
        + f"; search: {run['feasible']} of {run['trials']} trials within 1 point, "
        f"{run['search_seconds'] / 60:.1f} min; load average {run['load'][0]:.2f} / {run['load'][1]:.2f}.",
        "",
        "| model | accuracy % | MACs ratio | bytes ratio | "
        + " | ".join(f"b{b} ms (CV) | speed-up b{b}" for b in BATCHES)
        + " |",
        "|---|---|---|---|" + "---|---|" * len(BATCHES),
    ]
    for c in run["candidates"]:
        mark = "" if c.accuracy >= run["baseline"] - DROP else " (> 1 pt lost)"
        cells = [c.label, f"{c.accuracy:.2f}{mark}", f"{c.macs_ratio:.3f}", f"{c.bytes_ratio:.3f}"]
        for b in BATCHES:
            cells += [f"{c.latency[b].median_ms:.3f} ({c.latency[b].cv:.1%})", f"{_speedup(run, c, b):.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary(runs: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "| batch | seed | fastest searched within 1 pt | speed-up | MACs / bytes ratio "
        "| fastest plain within 1 pt | speed-up | MACs / bytes ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch in BATCHES:
        ours, theirs = [], []
        for seed, run in runs.items():
            cells = [f"b{batch}", str(seed)]
            for kind, into in (("searched", ours), ("plain", theirs)):
                best = _fastest(run, kind, batch)
                if best is None:
                    cells += ["none", "", ""]
                    continue
                into.append(_speedup(run, best, batch))
                cells += [
                    f"{best.label} ({best.accuracy:.2f} %)",
                    f"**{into[-1]:.2f}x**",
                    f"{best.macs_ratio:.3f} / {best.bytes_ratio:.3f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
        mean = [f"**{statistics.mean(v):.2f}x**" if v else "none within 1 pt" for v in (ours, theirs)]
        lines.append(f"| b{batch} | mean | | {mean[0]} | | | {mean[1]} | |")
    return lines


def _mean_speedups(runs: dict[int, dict[str, Any]], batch: int) -> str:
    parts = []
    for kind in ("searched", "plain"):
        best = [(run, _fastest(run, kind, batch)) for run in runs.values()]
        found = [_speedup(run, c, batch) for run, c in best if c is not None]
        within = f" ({len(found)} of {len(runs)} seeds within 1 pt)" if len(found) < len(runs) else ""
        parts.append(
            f"{kind} {statistics.mean(found):.2f}x{within}" if found else f"{kind}: none within 1 pt"
        )
    return f"b{batch}: " + " vs ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16, help="search trials per seed")
    parser.add_argument("--epochs", type=float, default=0.3, help="kd recovery epochs of every model")
    parser.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=[0.0, 0.125, 0.25],
        help="uniform L1 ratios tried (0: int8 only)",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds")
    parser.add_argument(
        "--quick", action="store_true", help="small task, 5 trials without priors, 1 seed (CI smoke test)"
    )
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.rounds, args.ratios = [0], 5, 5, [0.0, 0.25]
    start = time.perf_counter()
    runs = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs[seed] = one_seed(seed, args, Path(tmp))
    minutes = (time.perf_counter() - start) / 60
    command = (
        "benchmarks/fastest_within_1pt.py --quick"
        if args.quick
        else f"benchmarks/fastest_within_1pt.py --seeds {' '.join(map(str, args.seeds))} "
        f"--trials {args.trials} --epochs {args.epochs:g} "
        f"--ratios {' '.join(f'{r:g}' for r in args.ratios)} --rounds {args.rounds}"
    )
    text = "\n".join(
        [
            SECTION,
            "",
            f"One pipeline for every model: `depth`, `torch-pruning` (L1 magnitude), `kd` "
            f"({args.epochs:g} epoch), `torch-int8` static. Searched: {args.trials} trials of the "
            "`policies/mnist-depth-width.yaml` space (blocks to drop, inner widths, int8 or float; at most 1 "
            "point lost), the trial fastest at each batch size applied again. Plain: uniform L1 pruning of "
            f"every convolution at {', '.join(f'{r:g}' for r in args.ratios)} + int8 (0: int8 only), and "
            "all but the first residual block of each stage dropped, in fp32 and in int8. Speed-up = fp32 "
            "latency / latency, "
            f"the saved artifacts timed side by side in one process (1 thread, {args.rounds} interleaved "
            "rounds, median)."
            + (
                " Quick mode: the small task (3,000 training images, widths 8/16/32, 2 blocks), no priors."
                if args.quick
                else ""
            ),
            "",
            *summary(runs),
            "",
            *[line for seed, run in runs.items() for line in (*seed_table(seed, run), "")],
            *measured(f"; the run took {minutes:.1f} min (baselines trained when not cached)", command),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        write_row(
            args.write,
            "B2",
            "fastest plan within 1 point of fp32: searched vs the fastest plain combination (uniform L1 + "
            f"int8; first block per stage, fp32 or int8), speed-up vs fp32 (mnist-resnet, {len(runs)} seeds)",
            "; ".join(_mean_speedups(runs, batch) for batch in BATCHES),
            command,
        )


if __name__ == "__main__":
    main()
