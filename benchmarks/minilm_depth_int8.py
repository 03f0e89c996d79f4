"""B5: all-MiniLM-L6-v2 cut from 6 to 3 layers and quantized to 8 bits, recovered by feature-kd (and kd).

The ``cka`` scorer ranks the 6 encoder layers; the 3 least important are dropped (``depth``). The kept
layers' Linear layers and the token-embedding table go to 8 bits as in ``policies/minilm-int8.yaml``
(int8 kernels; the feed-forward output layers 8-bit weight-only). Recovery: ``feature-kd`` (hidden states
of the kept layers matched to the teacher's, plus the task loss) against ``kd`` with the same budget.
Each result is applied as ``orchestrate apply`` does: cosine to the original embeddings on 620 sentences,
artifact bytes, and latency measured side by side with the fp32 model (1 thread, interleaved rounds).
The seed is the task's (order of the training sentences).

    python benchmarks/minilm_depth_int8.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _docs import measured, write_row, write_section  # benchmarks/ is on sys.path when a script runs

from orchestrator import load_registry, parse_policy
from orchestrator.layers import droppable_blocks
from orchestrator.pipeline import apply_policy

SECTION = "## B5: MiniLM 6 -> 3 layers + 8 bits, feature-kd (minilm)"
LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def _dropped(registry: Any) -> list[str]:
    task = registry.components.create("task", "minilm")
    model = task.build_model()
    blocks = droppable_blocks(model, task.example_inputs(2))
    scores = registry.components.create("scorer", "cka").score(copy.deepcopy(model), task, blocks)
    return sorted(scores.ranked()[:3])


def _policy(dropped: list[str], distiller: str, epochs: float, seed: int, rounds: int) -> Any:
    layers: dict[str, Any] = {name: {"drop": True} for name in dropped}
    layers["bert.embeddings.word_embeddings"] = {"bits": 8}
    for i in range(6):
        block = f"bert.encoder.layer.{i}"
        if block in dropped:
            continue
        for linear in LINEARS:
            extra = {"quantizer": "inc"} if linear == "output.dense" else {}
            layers[f"{block}.{linear}"] = {"bits": 8, **extra}
    data = {
        "schema_version": 1,
        "task": {"name": "minilm", "options": {"seed": seed}},
        "pipeline": {
            "pruner": "depth",
            "distiller": {"name": distiller, "options": {"epochs": epochs, "lr": 1e-4}},
            "quantizer": [
                {"name": "torch-int8", "options": {"mode": "dynamic"}},
                {"name": "inc", "options": {"mode": "weight-only", "group_size": 32, "scheme": "asym"}},
            ],
        },
        "plan": {"layers": layers},
        "measure": {"batch_sizes": [1, 64], "threads": 1, "rounds": rounds},
    }
    return parse_policy(yaml.safe_dump(data, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    start = time.perf_counter()
    registry = load_registry()
    dropped = _dropped(registry)
    rows: dict[str, list[dict[str, float]]] = {"feature-kd": [], "kd": []}
    for seed in args.seeds:
        for distiller in rows:
            with tempfile.TemporaryDirectory() as tmp:
                report = apply_policy(
                    _policy(dropped, distiller, args.epochs, seed, args.rounds), registry, Path(tmp)
                )
            comp, ratios = report["compressed"], report["ratios"]
            rows[distiller].append({"cosine": comp["cosine"], **ratios})
            print(f"seed {seed} {distiller}: cosine {comp['cosine']:.4f} {ratios}", flush=True)
    lines = [
        "| recovery | cosine per seed | mean cosine | MACs ratio | bytes ratio | latency b1 ratio "
        "| latency b64 ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        mean = {k: statistics.mean(r[k] for r in results) for k in results[0]}
        per_seed = ", ".join(f"{r['cosine']:.4f}" for r in results)
        lines.append(
            f"| {name} | {per_seed} | **{mean['cosine']:.4f}** | {mean['macs_ratio']:.3f} "
            f"| {mean['size_bytes_ratio']:.3f} | **{mean['latency_ms_b1_ratio']:.3f}** "
            f"| **{mean['latency_ms_b64_ratio']:.3f}** |"
        )
    text = "\n".join(
        [
            SECTION,
            "",
            f"Dropped by CKA rank: {', '.join(dropped)}. Recovery: {args.epochs:g} epochs over the 100 "
            "training sentences, lr 1e-4. Ratios are against the fp32 6-layer model, means over the seeds "
            f"({', '.join(map(str, args.seeds))}); latency: 1 thread, {args.rounds} interleaved rounds.",
            "",
            "\n".join(lines),
            "",
            *measured(
                f"; the run took {(time.perf_counter() - start) / 60:.1f} min",
                f"benchmarks/minilm_depth_int8.py --epochs {args.epochs:g} --rounds {args.rounds}",
            ),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        means = {
            name: {k: statistics.mean(r[k] for r in results) for k in results[0]}
            for name, results in rows.items()
        }
        fkd, kd = means["feature-kd"], means["kd"]
        write_row(
            args.write,
            "B5",
            f"MiniLM 6 -> 3 layers + 8 bits, feature-kd vs kd ({len(args.seeds)} seeds)",
            f"cosine {fkd['cosine']:.3f} with feature-kd, {kd['cosine']:.3f} with kd; "
            f"{fkd['size_bytes_ratio']:.3f}x bytes; latency {fkd['latency_ms_b1_ratio']:.2f}x at b1, "
            f"{fkd['latency_ms_b64_ratio']:.2f}x at b64",
            f"benchmarks/minilm_depth_int8.py --epochs {args.epochs:g} --rounds {args.rounds}",
        )


if __name__ == "__main__":
    main()
