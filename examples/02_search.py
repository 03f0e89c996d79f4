"""Search per-layer pruning ratios and bit-widths on the digits task and print the Pareto set.

Optuna samples a plan per trial; each plan is applied for real (pruning, distillation, int8) and measured.
The policy below searches the ratio of every layer and float-or-int8 per layer, with two objectives
(accuracy up, MACs down) and a limit of 1.5 points of accuracy lost. The study, the MLflow runs,
``summary.json`` and one plan file per Pareto trial go to the runs directory; running the script again
with the same directory resumes the study (the budget counts the trials already stored).

Run: python examples/02_search.py [RUNS_DIR] [BUDGET]   (default: a temporary directory, 6 trials)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from orchestrator import load_registry, parse_policy
from orchestrator.search import SearchSettings, run_search

POLICY = """
schema_version: 1
task: digits-cnn
pipeline:
  pruner: {name: torch-pruning, options: {round_to: 4}}
  distiller: {name: kd, options: {epochs: 2, lr: 0.002}}
  quantizer: {name: torch-int8, options: {mode: static}}
search:
  space:
    - {name: convs, types: [Conv2d], prune_ratio: [0.0, 0.85], step: 0.05, bits: [8, 32]}
    - {name: hidden, layers: [classifier.fc1], prune_ratio: [0.0, 0.85], step: 0.05, bits: [8, 32]}
    - {name: head, layers: [classifier.fc2], bits: [8, 32]}
  objectives:
    - {metric: accuracy, direction: maximize}
    - {metric: macs, direction: minimize}
  constraints: {max_accuracy_drop: 1.5}
  study: digits-example
measure: {batch_sizes: [1, 64], rounds: 3}
"""

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # as `orchestrate search` does: no set-up chatter
runs_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="search-"))
budget = sys.argv[2] if len(sys.argv) > 2 else "6"  # trials for the whole study, or a time: 90s, 5m

policy = parse_policy(POLICY)
registry = load_registry()
policy.check_components(registry.components)  # unknown names or bad options fail here, before any work
settings = SearchSettings.resolve(policy, budget=budget, runs_dir=runs_dir)
summary = run_search(policy, registry, settings)

counts, baseline = summary["counts"], summary["baseline"]
print(
    f"{counts['finished']} trials: {counts['complete']} complete, {counts['infeasible']} infeasible, "
    f"{counts['gated']} gated, {counts['failed']} failed"
)
print(f"baseline: accuracy {baseline['accuracy']:.2f}, {baseline['macs']:,} MACs")
print(f"Pareto set ({len(summary['pareto'])} plans):")
print(f"{'trial':>5}  {'accuracy':>8}  {'MACs ratio':>10}  plan")
for trial in sorted(summary["pareto"], key=lambda t: -t["metrics"]["accuracy"]):
    metrics = trial["metrics"]
    macs_ratio = metrics["macs"] / baseline["macs"]
    print(f"{trial['number']:>5}  {metrics['accuracy']:>8.2f}  {macs_ratio:>10.3f}  {trial['plan']}")
print(f"summary: {settings.runs_dir / settings.study / 'summary.json'}; MLflow runs: {settings.tracking_uri}")
