"""Score-shaped search: priors narrow ranges, and warm starts come first."""

from __future__ import annotations

from pathlib import Path

import optuna

from orchestrator import load_policy, load_registry
from orchestrator.search import SearchSettings, run_search

POLICY = """\
schema_version: 1
task: digits-cnn
pipeline:
  pruner: {name: torch-pruning, options: {round_to: 4}}
search:
  space:
    - types: [Conv2d]
      prune_ratio: [0.0, 0.8]
      step: 0.05
  reference_plans: false
  priors: {scorer: magnitude, strength: 0.8, warm_starts: 3}
measure: {rounds: 3, batch_sizes: [8]}
"""


def test_priors_shape_the_search_and_warm_starts_run_first(tmp_path: Path) -> None:
    path = tmp_path / "shaped.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    settings = SearchSettings.resolve(policy, budget="6", runs_dir=tmp_path, track=False, progress=False)
    run_search(policy, load_registry(), settings)

    study = optuna.load_study(study_name="shaped", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    scores = study.user_attrs["prior_scores"]
    most = max(scores, key=scores.__getitem__)
    least = min(scores, key=scores.__getitem__)
    trials = study.trials
    assert len(trials) == 6
    # the most important conv may be pruned far less than the least important one
    highest = {name: max(t.params[f"{name}.prune_ratio"] for t in trials) for name in scores}
    assert highest[most] <= 0.8 * 0.2 + 1e-9
    assert highest[least] > highest[most]
    # warm starts: the first three trials prune each layer at 50, 75 and 100 % of its narrowed range
    warm = [t.params[f"{least}.prune_ratio"] for t in trials[:3]]
    assert warm == sorted(warm)
    assert warm[-1] == highest[least]
