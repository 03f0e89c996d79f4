"""Export a pruned float model to pt2 (torch.export) and ONNX, load each back and compare outputs.

The plan prunes channels and recovers accuracy by distillation but keeps float weights: pt2 and ONNX
carry float and bit-packed layers, while torch.ao int8 models only go to TorchScript. ONNX needs the
``onnx`` extra (``pip install 'compression-orchestrator[onnx]'``); without it only pt2 is written.

Run: python examples/04_export.py [OUT_DIR]   (default: a temporary directory)
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

from orchestrator import load_registry, parse_policy
from orchestrator.export import export_model, load_exported, max_difference
from orchestrator.pipeline import Pipeline

POLICY = """
schema_version: 1
task: digits-cnn
pipeline:
  pruner: {name: torch-pruning, options: {round_to: 8}}
  distiller: {name: kd, options: {epochs: 1}}
plan:
  layers:
    features.conv2: {prune_ratio: 0.5}
    features.conv3: {prune_ratio: 0.5}
    classifier.fc1: {prune_ratio: 0.5}
"""

out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="export-"))
policy = parse_policy(POLICY)
registry = load_registry()

# Apply the plan (what `orchestrate export` does before writing): baseline, then prune + recover.
pipeline = Pipeline.from_policy(policy, registry)
with tempfile.TemporaryDirectory() as workdir:
    baseline = pipeline.baseline(Path(workdir))
    compressed = pipeline.compress(policy.plan, baseline)
model, example = compressed.model, pipeline.task.example_inputs(2)
print(f"pruned model: accuracy {compressed.metrics['accuracy']:.2f}, {compressed.metrics['params']:,} params")

formats = ["pt2"] + (["onnx"] if importlib.util.find_spec("onnxscript") else [])
batch = pipeline.task.example_inputs(16)  # another batch size than at export: the batch dimension is dynamic
for fmt in formats:
    path = export_model(model, example, fmt, out_dir / f"digits-pruned.{fmt}", policy=policy)
    reloaded = load_exported(path, registry, trusted=True)  # our own file: pt2 unpickles its weights
    with torch.no_grad():
        difference = max_difference(reloaded(*batch), model(*batch))
    print(f"{fmt}: wrote {path} ({path.stat().st_size:,} bytes); max |output difference| {difference:.3g}")
