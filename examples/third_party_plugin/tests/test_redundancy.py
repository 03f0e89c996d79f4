"""The plugin's components pass compression-orchestrator's contract suites, and do what they say."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import orchestrator_redundancy
import pytest
import torch
from orchestrator_redundancy import ActivationVariance, FPGMPruner
from torch import nn

from orchestrator import CompressionPlan, LayerDecision
from orchestrator.testing import PrunerContract, ScorerContract

if TYPE_CHECKING:
    from orchestrator import PluginRegistry
    from orchestrator.testing import TinyDigits


class TestActivationVariance(ScorerContract):
    component = ActivationVariance
    plugin = orchestrator_redundancy


class TestFPGM(PrunerContract):
    component = FPGMPruner
    plugin = orchestrator_redundancy


@pytest.mark.orchestrator_plugins(orchestrator_redundancy)
def test_components_load_beside_the_builtins(orchestrator_registry: PluginRegistry) -> None:
    components = orchestrator_registry.components
    assert components.info("scorer", "activation-variance").plugin == "orchestrator_redundancy"
    assert components.get("pruner", "fpgm") is FPGMPruner
    assert "torch-pruning" in components.names("pruner")


def _conv1(model: nn.Module) -> nn.Conv2d:
    conv = model.get_submodule("features.conv1")
    assert isinstance(conv, nn.Conv2d)
    return conv


def test_a_constant_channel_scores_no_variance(tiny_task: TinyDigits) -> None:
    model = tiny_task.build_model()
    with torch.no_grad():
        _conv1(model).weight[3].zero_()  # channel 3 outputs its bias, whatever the input
    scores = ActivationVariance().score(model, tiny_task, ["features.conv1", "features.conv2"])
    channels = scores.channels["features.conv1"]
    assert channels[3] == pytest.approx(0.0, abs=1e-12)
    assert min(v for i, v in enumerate(channels) if i != 3) > 1e-3
    assert 0.0 < scores.layers["features.conv1"] < 1.0


def test_fpgm_removes_the_filter_at_the_geometric_median(tiny_task: TinyDigits) -> None:
    model = tiny_task.build_model()
    conv = _conv1(model)
    with torch.no_grad():  # filter 5 becomes the centre of the others: the one they can best stand in for
        others = [i for i in range(8) if i != 5]
        conv.weight[5] = conv.weight[others].mean(0)
    before = conv.weight.detach().clone()
    plan = CompressionPlan(layers={"features.conv1": LayerDecision(prune_ratio=0.125)})
    pruned = FPGMPruner().prune(copy.deepcopy(model), plan, tiny_task)
    assert torch.equal(_conv1(pruned).weight, before[others])
    assert pruned.get_submodule("features.conv2").in_channels == 7
