"""Depth vs width at equal MACs on mnist-resnet: drop whole blocks, or thin every convolution?

1. Rank the droppable residual blocks of the cached mnist-resnet baseline with the ``cka`` scorer and drop
   the lower-ranked half (``depth`` pruner); recover with ``kd``.
2. Prune the same fraction of output channels from every convolution (``torch-pruning``), the fraction found
   by bisection so that the MACs match the depth-pruned model's; recover with the same ``kd``.
3. Save the three models as artifacts, load them back, and measure their latency side by side in this one
   process (``compare_latency``: one thread, interleaved rounds, median and CV) at batch 1 and 64.

    python benchmarks/depth_vs_width.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _docs import write_row, write_section  # benchmarks/ is on sys.path when a script runs
from torch import nn

from orchestrator import CompressionPlan, Distiller, Task, load_registry
from orchestrator.artifact import load_artifact, save_artifact
from orchestrator.layers import droppable_blocks
from orchestrator.measure import Latency, compare_latency, count_macs_params, load_average
from orchestrator.policy import MeasureSpec

SECTION = "## B4: CKA depth pruning vs uniform channel pruning at equal MACs (mnist-resnet)"
BATCHES = (1, 64)


@dataclass
class Result:
    label: str
    model: nn.Module
    accuracy: float
    macs: int
    params: int
    before_kd: float | None = None
    latency: dict[int, Latency] = field(default_factory=dict)


def _measured(label: str, model: nn.Module, task: Any, before_kd: float | None = None) -> Result:
    macs, params = count_macs_params(model, task.example_inputs(1))
    accuracy = task.evaluate(model)["accuracy"]
    return Result(label, model.eval(), accuracy, macs, params, before_kd)


def _recover(student: nn.Module, teacher: nn.Module, task: Any, kd: Any) -> nn.Module:
    torch.manual_seed(0)
    return kd.distill(student, teacher, task)  # type: ignore[no-any-return]


def cka_depth(baseline: nn.Module, task: Any, registry: Any) -> tuple[nn.Module, list[str], dict[str, float]]:
    """The baseline without the lower-ranked half of its droppable blocks (by CKA score)."""
    blocks = droppable_blocks(baseline, task.example_inputs(2))
    scores = registry.components.create("scorer", "cka").score(baseline, task, blocks)
    dropped = scores.ranked()[: len(blocks) // 2]
    plan = CompressionPlan.from_mapping({"layers": {name: {"drop": True} for name in dropped}})
    pruned = registry.components.create("pruner", "depth").prune(copy.deepcopy(baseline), plan, task)
    return pruned, dropped, dict(scores.layers)


def _uniform(baseline: nn.Module, task: Any, registry: Any, ratio: float) -> nn.Module:
    convs = [name for name, m in baseline.named_modules() if isinstance(m, nn.Conv2d)]
    plan = CompressionPlan.from_mapping({"layers": {name: {"prune_ratio": ratio} for name in convs}})
    pruner = registry.components.create("pruner", "torch-pruning")
    return pruner.prune(copy.deepcopy(baseline), plan, task)  # type: ignore[no-any-return]


def uniform_width(baseline: nn.Module, task: Any, registry: Any, macs: int) -> tuple[nn.Module, float]:
    """The same ratio on every convolution, bisected until the MACs are within 2 % of ``macs``."""
    low, high = 0.0, 0.95
    best: tuple[float, nn.Module, float] | None = None
    for _ in range(20):
        ratio = (low + high) / 2
        model = _uniform(baseline, task, registry, ratio)
        got = count_macs_params(model, task.example_inputs(1))[0]
        error = abs(got - macs) / macs
        if best is None or error < best[0]:
            best = (error, model, ratio)
        if error <= 0.02:
            break
        low, high = (ratio, high) if got > macs else (low, ratio)
    assert best is not None
    if best[0] > 0.05:
        raise SystemExit(f"no uniform ratio matches the depth-pruned MACs within 5 % (best {best[0]:.1%})")
    return best[1], best[2]


def measure_latency(results: list[Result], task: Any, rounds: int, workdir: Path) -> None:
    """Save, reload and time every model side by side (one thread, interleaved rounds)."""
    loaded = {}
    for r in results:
        path = workdir / f"{r.label}.pt"
        save_artifact(r.model, task.example_inputs(2), path)
        loaded[r.label] = load_artifact(path)
    spec = MeasureSpec(batch_sizes=list(BATCHES), threads=1, rounds=rounds, warmup=5, min_round_ms=50)
    latencies = compare_latency(loaded, task.example_inputs, spec)
    for r in results:
        r.latency = latencies[r.label]


def table(results: list[Result]) -> list[str]:
    base = results[0]
    lines = [
        "| model | accuracy % (before kd) | MACs | MACs ratio | params ratio | "
        + " | ".join(f"latency b{b} ms (CV) | ratio b{b}" for b in BATCHES)
        + " |",
        "|---|---|---|---|---|" + "---|---|" * len(BATCHES),
    ]
    for r in results:
        before = f" ({r.before_kd:.2f})" if r.before_kd is not None else ""
        cells = [
            r.label,
            f"{r.accuracy:.2f}{before}",
            f"{r.macs / 1e6:.2f} M",
            f"{r.macs / base.macs:.3f}",
            f"{r.params / base.params:.3f}",
        ]
        for b in BATCHES:
            lat = r.latency[b]
            cells += [
                f"{lat.median_ms:.3f} ({lat.cv:.1%})",
                f"{lat.median_ms / base.latency[b].median_ms:.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(results: list[Result]) -> list[str]:
    base, depth, width = results
    drop = base.accuracy - depth.accuracy
    slower = [b for b in BATCHES if width.latency[b].median_ms > depth.latency[b].median_ms]
    return [
        f"- Dropping the lower half by CKA + kd loses {drop:.2f} points of accuracy: the <= 1 point "
        f"criterion {'HOLDS' if drop <= 1.0 else 'FAILS'}.",
        "- Uniform channel pruning to the same MACs is slower than depth pruning at batch "
        + (", ".join(str(b) for b in slower) or "none")
        + f": the 'higher latency at batch 1 and at batch 64' criterion "
        f"{'HOLDS' if len(slower) == len(BATCHES) else 'FAILS'}.",
    ]


def section(results: list[Result], facts: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        SECTION,
        "",
        "At equal MACs, is it better to drop whole residual blocks or to thin every convolution? The "
        "mnist-resnet baseline (default options: 3 stages of 3 BasicBlocks, widths 16/32/64, 20,000 "
        "training images, 2,000 test images) is cut two ways and each cut is recovered by `kd` "
        f"({args.kd_epochs:g} epochs, default options):",
        "",
        f"- **depth**: the {len(facts['dropped'])} lower-ranked of the {len(facts['cka'])} droppable "
        f"blocks by `cka` score (1 - CKA of the penultimate features) dropped by `depth`: "
        + ", ".join(f"`{n}` ({facts['cka'][n]:.3f})" for n in facts["dropped"])
        + "; kept: "
        + ", ".join(f"`{n}` ({facts['cka'][n]:.3f})" for n in facts["cka"] if n not in facts["dropped"])
        + ";",
        f"- **width**: {facts['ratio']:.3f} of the output channels of every convolution removed by "
        "`torch-pruning` (magnitude importance, residual groups kept consistent), the ratio bisected "
        "to match the depth model's MACs.",
        "",
        f"Latency of the saved artifacts, measured side by side in one process: 1 thread, {args.rounds} "
        "interleaved rounds, median and coefficient of variation.",
        "",
        *table(results),
        "",
        *verdict(results),
        "",
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}, load average {facts['load_before']:.2f} before and "
        f"{facts['load_after']:.2f} after the latency measurement; the run took "
        f"{facts['seconds'] / 60:.1f} min (plus a few minutes to train the baseline when it is not "
        "cached yet). Reproduce with:",
        "",
        "```bash",
        f"python {command(args)} --write docs/benchmarks.md",
        "```",
        "",
    ]
    return "\n".join(lines)


def one_seed(seed: int, args: argparse.Namespace, registry: Any) -> tuple[list[Result], dict[str, Any]]:
    """Baseline, depth cut and width cut of the mnist-resnet of this seed, recovered and timed."""
    start = time.perf_counter()
    task = registry.components.create("task", "mnist-resnet", {"seed": seed})
    kd = registry.components.create("distiller", "kd", {"epochs": args.kd_epochs})
    assert isinstance(task, Task)
    assert isinstance(kd, Distiller)
    baseline = task.build_model()
    results = [_measured("baseline", baseline, task)]

    depth, dropped, cka = cka_depth(baseline, task, registry)
    cut = task.evaluate(depth)["accuracy"]
    print(f"seed {seed} depth: dropped {dropped}; {cut:.2f} % before kd", flush=True)
    results.append(_measured("depth (CKA)", _recover(depth, baseline, task, kd), task, cut))

    width, ratio = uniform_width(baseline, task, registry, results[1].macs)
    cut = task.evaluate(width)["accuracy"]
    print(f"seed {seed} width: ratio {ratio:.3f}; {cut:.2f} % before kd", flush=True)
    results.append(_measured("width (uniform)", _recover(width, baseline, task, kd), task, cut))

    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        measure_latency(results, task, args.rounds, Path(tmp))
    facts = {
        "dropped": dropped,
        "cka": cka,
        "ratio": ratio,
        "load_before": load_before,
        "load_after": load_average(),
        "seconds": time.perf_counter() - start,
    }
    return results, facts


def seeds_table(runs: dict[int, list[Result]]) -> list[str]:
    """Accuracy and latency ratios of both cuts for every seed, and their means."""
    lines = [
        "| seed | baseline % | depth % | width % | depth MACs ratio | width MACs ratio | "
        + " | ".join(f"depth b{b} ratio | width b{b} ratio" for b in BATCHES)
        + " |",
        "|---|---|---|---|---|---|" + "---|---|" * len(BATCHES),
    ]
    rows = []
    for seed, (base, depth, width) in runs.items():
        row = [base.accuracy, depth.accuracy, width.accuracy, depth.macs / base.macs, width.macs / base.macs]
        for b in BATCHES:
            row += [r.latency[b].median_ms / base.latency[b].median_ms for r in (depth, width)]
        rows.append(row)
        lines.append(f"| {seed} | " + " | ".join(f"{v:.3f}" if v < 2 else f"{v:.2f}" for v in row) + " |")
    means = [sum(col) / len(col) for col in zip(*rows, strict=True)]
    lines.append("| mean | " + " | ".join(f"**{v:.3f}**" if v < 2 else f"**{v:.2f}**" for v in means) + " |")
    return lines


def summary_row(runs: dict[int, list[Result]]) -> tuple[str, str]:
    """What B4 compares and its mean result over the seeds, for the summary table."""

    def mean(pick: Any) -> float:
        return sum(pick(*r) for r in runs.values()) / len(runs)

    def speed(b: int, i: int) -> float:
        return mean(lambda *r: r[i].latency[b].median_ms / r[0].latency[b].median_ms)

    compared = (
        f"CKA depth pruning vs uniform channel pruning at equal MACs, kd (mnist-resnet, {len(runs)} seeds)"
    )
    result = (
        f"accuracy {mean(lambda b, d, w: d.accuracy):.2f} vs {mean(lambda b, d, w: w.accuracy):.2f} % "
        f"(baseline {mean(lambda b, d, w: b.accuracy):.2f}); latency "
        + ", ".join(f"b{b} {speed(b, 1):.2f}x vs {speed(b, 2):.2f}x" for b in BATCHES)
    )
    return compared, result


def command(args: argparse.Namespace) -> str:
    return (
        f"benchmarks/depth_vs_width.py --kd-epochs {args.kd_epochs:g} --rounds {args.rounds} "
        f"--seeds {' '.join(map(str, args.seeds))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kd-epochs", type=float, default=2.0, help="recovery epochs for both models")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and scoring")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="task seeds (baselines)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file to put the section in")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    registry = load_registry()
    start = time.perf_counter()
    runs, first = {}, None
    for seed in args.seeds:
        results, facts = one_seed(seed, args, registry)
        runs[seed] = results
        first = first or (results, facts)
    assert first is not None
    first[1]["seconds"] = time.perf_counter() - start  # the whole run, every seed
    text = section(*first, args)
    if len(runs) > 1:
        extra = [
            "",
            f"Every seed (the task's seed: a baseline trained for each), the table above being seed "
            f"{args.seeds[0]}:",
            "",
            *seeds_table(runs),
            "",
        ]
        head, _, tail = text.partition("\nMeasured ")
        text = head + "\n".join(extra) + "\nMeasured " + tail
    print(text)
    if args.write is not None:
        write_section(args.write, SECTION, text)
        write_row(args.write, "B4", *summary_row(runs), command(args))


if __name__ == "__main__":
    main()
