"""Apply a fixed plan and compare the compressed model with the baseline.

Prunes the ``digits-cnn`` baseline (channels really removed), recovers accuracy by distillation, quantizes
to int8 and measures both models: accuracy, params, MACs, artifact bytes and latency. Writes
``plan.yaml``, ``model.pt`` (TorchScript) and ``metrics.json`` into the output directory.

Run: python examples/03_apply.py [OUT_DIR] [POLICY]
     (default: a temporary directory and the policy below; e.g. policies/digits-apply.yaml as POLICY)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from orchestrator import load_policy, load_registry, parse_policy
from orchestrator.pipeline import apply_policy

POLICY = """
schema_version: 1
task: digits-cnn
pipeline:
  pruner: {name: torch-pruning, options: {importance: magnitude, round_to: 8}}
  distiller: {name: kd, options: {epochs: 2, lr: 0.002}}
  quantizer: {name: torch-int8, options: {mode: static}}
plan:
  layers:
    features.conv1: {prune_ratio: 0.5, bits: 8}
    features.conv2: {prune_ratio: 0.5, bits: 8}
    features.conv3: {prune_ratio: 0.5, bits: 8}
    classifier.fc1: {prune_ratio: 0.5, bits: 8}
    classifier.fc2: {bits: 8}
measure: {batch_sizes: [1, 64], threads: 1}
"""

out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="apply-"))
policy = load_policy(sys.argv[2]) if len(sys.argv) > 2 else parse_policy(POLICY)

apply_policy(policy, load_registry(), out_dir)

# Everything below is read back from metrics.json, as any other tool would.
report = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
baseline, compressed, ratios = report["baseline"], report["compressed"], report["ratios"]
metric = report["metric"]


def show(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


latencies = sorted((k for k in compressed if k.startswith("latency_ms_b")), key=lambda k: int(k[12:]))
print(f"{'':<16}{'baseline':>12}{'compressed':>12}{'ratio':>8}")
for key in [metric, "params", "macs", "size_bytes", *latencies]:
    ratio = ratios.get(f"{key}_ratio")
    shown = "" if ratio is None else f"{ratio:.3f}"
    print(f"{key:<16}{show(baseline[key]):>12}{show(compressed[key]):>12}{shown:>8}")
print(f"{metric} lost: {baseline[metric] - compressed[metric]:.2f} points")
print(f"wrote {out_dir / 'metrics.json'}, {out_dir / 'model.pt'}, {out_dir / 'plan.yaml'}")
