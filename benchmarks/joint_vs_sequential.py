"""B3: joint search of pruning ratios and bit-widths against prune-then-quantize, same trial budget.

Objectives: accuracy (maximize) and artifact bytes (minimize), on digits-cnn, at most 1.5 points lost.

- **joint**: the quickstart space, per-layer ratios and bits in {8, float}, searched together for N trials;
- **sequential**: a prune-only search (the same ratios, no bits) for N - K trials, then each of its K
  most accurate feasible plans applied again with every layer in int8 (K more trials).

Each method's feasible points form a Pareto front; its hypervolume is measured in the plane (artifact bytes
/ baseline bytes, accuracy) against the reference point (1.0, baseline accuracy - 1.5 points): larger is
better. Three seeds (sampler seed), the same reference plans enqueued for both.

    python benchmarks/joint_vs_sequential.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import run_search  # benchmarks/ is on sys.path when a script runs
from _docs import measured, write_row, write_section

from orchestrator import CompressionPlan, load_registry, parse_policy
from orchestrator.events import TrialFinished
from orchestrator.pipeline import Pipeline

POLICY = Path(__file__).resolve().parents[1] / "policies" / "quickstart.yaml"
SECTION = "## B3: joint search vs prune-then-quantize (digits-cnn)"
DROP = 1.5


def _policy(bits: bool, epochs: float) -> Any:
    data = yaml.safe_load(POLICY.read_text())
    data["pipeline"]["distiller"]["options"]["epochs"] = epochs
    data["measure"]["latency"] = False
    search = data["search"]
    search["objectives"] = [
        {"metric": "accuracy", "direction": "maximize"},
        {"metric": "size_bytes", "direction": "minimize"},
    ]
    search["constraints"] = {"max_accuracy_drop": DROP}
    for rule in search["space"]:
        if not bits:
            rule.pop("bits", None)
    search["space"] = [r for r in search["space"] if "prune_ratio" in r or bits]
    return parse_policy(yaml.safe_dump(data), path=POLICY)


def _search(policy: Any, trials: int, seed: int, name: str) -> tuple[list[TrialFinished], dict[str, float]]:
    events, search, _ = run_search(policy, trials, seed, name)
    assert search.baseline is not None
    return events, dict(search.baseline.metrics)


def _points(events: list[TrialFinished], base: dict[str, float]) -> list[tuple[float, float]]:
    return [
        (e.metrics["size_bytes"] / base["size_bytes"], e.metrics["accuracy"])
        for e in events
        if e.state == "complete" and e.metrics.get("accuracy", -1) >= base["accuracy"] - DROP
    ]


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (size ratio minimized, accuracy maximized) up to ``reference``."""
    ref_size, ref_acc = reference
    front = sorted(p for p in points if p[0] < ref_size and p[1] > ref_acc)
    area, best = 0.0, ref_acc
    for i, (size, acc) in enumerate(front):
        best = max(best, acc)
        right = front[i + 1][0] if i + 1 < len(front) else ref_size
        area += (right - size) * (best - ref_acc)
    return area


def sequential(trials: int, keep: int, seed: int, epochs: float) -> tuple[list[tuple[float, float]], dict]:
    events, base = _search(_policy(False, epochs), trials - keep, seed, f"prune-{seed}")
    points = _points(events, base)
    complete = [
        e for e in events if e.state == "complete" and e.metrics["accuracy"] >= base["accuracy"] - DROP
    ]
    chosen = sorted(complete, key=lambda e: -e.metrics["accuracy"])[:keep]
    policy = _policy(True, epochs)
    pipeline = Pipeline.from_policy(policy, load_registry())
    with tempfile.TemporaryDirectory() as tmp:
        baseline = pipeline.baseline(Path(tmp))
        for i, event in enumerate(chosen):
            layers = {n: {**d, "bits": 8} for n, d in event.layers.items()}
            plan = CompressionPlan.model_validate({"layers": layers})
            result = pipeline.finish(pipeline.compress(plan, baseline), baseline, Path(tmp) / str(i))
            if result.metrics["accuracy"] >= base["accuracy"] - DROP:
                points.append((result.metrics["size_bytes"] / base["size_bytes"], result.metrics["accuracy"]))
    return points, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--keep", type=int, default=4, help="prune-only plans quantized afterwards")
    parser.add_argument("--epochs", type=float, default=3.0, help="kd recovery epochs per trial")
    parser.add_argument("--quick", action="store_true", help="6 trials, 1 seed (CI smoke test)")
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    seeds, trials, keep = ([0], 6, 2) if args.quick else (args.seeds, args.trials, args.keep)
    start = time.perf_counter()
    rows = []
    for seed in seeds:
        events, base = _search(_policy(True, args.epochs), trials, seed, f"joint-{seed}")
        reference = (1.0, base["accuracy"] - DROP)
        joint = hypervolume(_points(events, base), reference)
        points, base = sequential(trials, keep, seed, args.epochs)
        seq = hypervolume(points, reference)
        rows.append((seed, joint, seq))
        print(f"seed {seed}: joint {joint:.4f} sequential {seq:.4f}", flush=True)
    lines = [
        "| seed | joint hypervolume | sequential hypervolume | joint / sequential |",
        "|---|---|---|---|",
    ]
    for seed, joint, seq in rows:
        lines.append(
            f"| {seed} | {joint:.4f} | {seq:.4f} | **{joint / seq:.2f}x** |"
            if seq
            else f"| {seed} | {joint:.4f} | {seq:.4f} | |"
        )
    j, s = statistics.mean(r[1] for r in rows), statistics.mean(r[2] for r in rows)
    lines.append(
        f"| mean | {j:.4f} | {s:.4f} | **{j / s:.2f}x** |" if s else f"| mean | {j:.4f} | {s:.4f} | |"
    )
    quick = " --quick" if args.quick else f" --trials {trials} --keep {keep} --epochs {args.epochs:g}"
    text = "\n".join(
        [
            SECTION,
            "",
            f"{trials} trials per method and seed (sequential: {trials - keep} prune-only trials, then its "
            f"{keep} most accurate feasible plans in int8); kd {args.epochs:g} epochs per trial; objectives "
            f"accuracy and artifact bytes; hypervolume in (bytes ratio, accuracy) against (1.0, baseline "
            f"- {DROP} points).",
            "",
            "\n".join(lines),
            "",
            *measured(
                f"; the run took {(time.perf_counter() - start) / 60:.1f} min",
                f"benchmarks/joint_vs_sequential.py{quick}",
            ),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        per_seed = ", ".join(f"{r[1] / r[2]:.2f}x" for r in rows if r[2])
        write_row(
            args.write,
            "B3",
            f"joint search vs prune-only search then int8, {trials} trials each (digits-cnn, "
            f"{len(seeds)} seeds)",
            f"hypervolume {j / s:.2f}x of sequential (per seed {per_seed})" if s else "no sequential front",
            f"benchmarks/joint_vs_sequential.py{quick}",
        )


if __name__ == "__main__":
    main()
