"""BatchNorm recalibration after pruning: re-estimated statistics, and ``accuracy_pruned`` it changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orchestrator import CompressionPlan, load_registry, parse_policy, recalibrate_batchnorm
from orchestrator.pipeline import Pipeline


class _Data:
    """A task stand-in: two training batches, inputs first."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(32, 3, generator=gen) * 2 + 5, torch.zeros(32)) for _ in range(2)]

    def train_data(self) -> list[tuple[torch.Tensor, ...]]:
        return self.batches

    def inputs(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (batch[0],)


def test_statistics_are_the_average_over_the_batches_and_nothing_else_changes() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    weights = copy.deepcopy(model.state_dict())
    data = _Data()
    assert recalibrate_batchnorm(model, data, batches=2) == 2  # type: ignore[arg-type]
    with torch.no_grad():
        outs = [model[0](b[0]) for b in data.batches]
    bn = model[1]
    assert torch.allclose(bn.running_mean, torch.stack([o.mean(0) for o in outs]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([o.var(0) for o in outs]).mean(0), atol=1e-4)
    assert bn.momentum == 0.1
    assert not model.training
    for key in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.equal(model.state_dict()[key], weights[key])


POLICY = """
schema_version: 1
task: {name: digits-cnn}
pipeline:
  pruner: {name: torch-pruning, options: {importance: magnitude}}
  bn_recalibration: BATCHES
plan:
  layers:
    features.conv1: {prune_ratio: 0.6}
    features.conv2: {prune_ratio: 0.6}
    features.conv3: {prune_ratio: 0.6}
measure: {latency: false}
"""


def _accuracy_pruned(batches: int, tmp_path: Path) -> tuple[float, float]:
    policy = parse_policy(POLICY.replace("BATCHES", str(batches)), path=Path("p.yaml"))
    pipeline = Pipeline.from_policy(policy, load_registry())
    baseline = pipeline.baseline(tmp_path)
    assert policy.plan is not None
    result = pipeline.compress(policy.plan, baseline)
    return result.metrics["accuracy_pruned"], baseline.metrics["accuracy"]


def test_recalibration_raises_the_accuracy_of_the_pruned_model(tmp_path: Path) -> None:
    recalibrated, baseline = _accuracy_pruned(16, tmp_path)
    stale, _ = _accuracy_pruned(0, tmp_path)
    assert stale < recalibrated <= baseline + 1
    assert recalibrated - stale > 5, (stale, recalibrated)


def test_a_plan_that_prunes_nothing_reports_the_baseline(tmp_path: Path, digits_task: Any) -> None:
    policy = parse_policy(POLICY.replace("BATCHES", "16"), path=Path("p.yaml"))
    pipeline = Pipeline.from_policy(policy, load_registry())
    baseline = pipeline.baseline(tmp_path)
    result = pipeline.compress(CompressionPlan(), baseline)
    assert result.metrics["accuracy_pruned"] == baseline.metrics["accuracy"]
