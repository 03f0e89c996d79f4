"""Quantization: bytes, accuracy and CPU latency of the quantized artifacts against fp32, side by side.

Each policy is applied as ``orchestrate apply`` does (``apply_policy``): the fp32 baseline and the quantized
model are saved as artifacts, loaded back and timed in this one process, interleaved round by round (one
thread, median and coefficient of variation), so each row's ratios come from one measurement.

    python benchmarks/quantization.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import measured, write_section  # benchmarks/ is on sys.path when a script runs

from orchestrator import load_registry
from orchestrator.measure import load_average
from orchestrator.pipeline import apply_policy
from orchestrator.policy import load_policy

SECTION = "## Quantization (mnist-resnet, minilm)"
POLICIES = Path(__file__).resolve().parents[1] / "policies"
RUNS = {
    "mnist-resnet-int8.yaml": "torch-int8 static, every layer",
    "mnist-resnet-mixed.yaml": "stages 1-2 int8 (torch-int8), stage 3 4-bit (inc), stem and head float",
    "minilm-int8.yaml": "torch-int8 dynamic + 8-bit embeddings; FFN output layers 8-bit weight-only (inc)",
    "minilm-4bit.yaml": "inc 4-bit weight-only (RTN, groups of 32), embedding table included",
}


def run(rounds: int) -> list[dict[str, Any]]:
    registry = load_registry()
    rows = []
    for name, what in RUNS.items():
        policy = load_policy(POLICIES / name)
        policy = policy.model_copy(update={"measure": policy.measure.model_copy(update={"rounds": rounds})})
        with tempfile.TemporaryDirectory() as tmp:
            report = apply_policy(policy, registry, Path(tmp))
        rows.append({"policy": name, "what": what, **report})
        print(f"{name}: done", flush=True)
    return rows


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| policy | what | metric: fp32 → quantized | bytes: fp32 → artifact (ratio) | theoretical bytes "
        "| latency b1 ms (CV), ratio | latency b64 ms (CV), ratio | accelerates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base, comp, metric = row["baseline"], row["compressed"], row["metric"]
        cells = []
        for b in (1, 64):
            ratio = comp[f"latency_ms_b{b}"] / base[f"latency_ms_b{b}"]
            cells.append(
                f"{base[f'latency_ms_b{b}']:.2f} ({base[f'latency_cv_b{b}']:.1%}) → "
                f"{comp[f'latency_ms_b{b}']:.2f} ({comp[f'latency_cv_b{b}']:.1%}), **{ratio:.2f}x**"
            )
        accel = ", ".join(
            f"{q['name']} {'/'.join(b for b, yes in q['accelerates'].items() if yes) or 'none'}"
            for q in row["quantizers"] or []
        )
        lines.append(
            f"| `{row['policy']}` | {row['what']} | {metric} {base[metric]:.4g} → {comp[metric]:.4g} "
            f"| {_fmt_bytes(base['size_bytes'])} → {_fmt_bytes(comp['size_bytes'])} "
            f"(**{comp['size_bytes'] / base['size_bytes']:.3f}x**) | {_fmt_bytes(comp['theoretical_bytes'])} "
            f"| {cells[0]} | {cells[1]} | {accel} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), load_average()
    rows = run(args.rounds)
    minutes = (time.perf_counter() - started) / 60
    text = "\n".join(
        [
            SECTION,
            "",
            "Each row applies one policy of `policies/` to its task (mnist-resnet with default options; "
            "minilm = the pretrained all-MiniLM-L6-v2, metric = mean cosine to the original embeddings of "
            "620 sentences). Bytes are those of the saved TorchScript artifacts; theoretical bytes = "
            "params x bits / 8. Latency: the fp32 and quantized artifacts loaded back and timed side by "
            f"side in one process, 1 thread, {args.rounds} interleaved rounds, median (coefficient of "
            "variation).",
            "",
            table(rows),
            "",
            *measured(
                f", load average {load_before:.2f} before and {load_average():.2f} after; the run took "
                f"{minutes:.1f} min",
                f"benchmarks/quantization.py --rounds {args.rounds}",
            ),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()
