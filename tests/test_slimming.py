"""The ``slimming`` option of the torch-pruning pruner: sparsity-regularised fine-tuning, then pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from orchestrator_builtins import torch_pruning_pruner

from orchestrator import CompressionPlan, LayerDecision, PlanError

#: strong enough to act within a few epochs of the 1,347 training digits (21 steps per epoch)
BN_L1 = {"method": "bn-l1", "l1": 0.05, "lr": 0.1, "epochs": 5}
GROUP = {"method": "group", "l1": 0.03, "lr": 0.05, "epochs": 3}


def _plan(ratio: float, *names: str) -> CompressionPlan:
    return CompressionPlan(layers={n: LayerDecision(prune_ratio=ratio) for n in names})


def _near_zero_gammas(model: torch.nn.Module) -> float:
    """Share of BatchNorm scales below a tenth of the largest one of their layer (scale-free)."""
    shares = []
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            gamma = module.weight.detach().abs()
            shares.append(gamma < 0.1 * gamma.max())
    return float(torch.cat(shares).float().mean())


def test_bn_l1_makes_gammas_sparse_and_is_reused_across_plans(  # type: ignore[no-untyped-def]
    registry, digits_task, monkeypatch, record_property
) -> None:
    runs: list[int] = []
    finetune = torch_pruning_pruner._regularized_finetune
    monkeypatch.setattr(
        torch_pruning_pruner,
        "_regularized_finetune",
        lambda *args: (runs.append(1), finetune(*args))[1],
    )
    baseline = digits_task.build_model()
    pruner = registry.components.create("pruner", "torch-pruning", {"slimming": BN_L1})

    slim = pruner.sparsify(copy.deepcopy(baseline), digits_task)
    before, after = _near_zero_gammas(baseline), _near_zero_gammas(slim)
    record_property("near_zero_gammas", f"{before:.2f} -> {after:.2f}")
    assert before == 0.0
    assert after > 0.3
    assert digits_task.evaluate(slim)["accuracy"] > 90.0

    # a plan on another copy of the same baseline starts from the stored regularised weights
    pruned = pruner.prune(
        copy.deepcopy(baseline),
        _plan(0.5, "features.conv2", "features.conv3", "classifier.fc1"),
        digits_task,
    )
    assert runs == [1]
    assert pruned.get_submodule("features.conv2").out_channels == 32
    assert pruned.get_submodule("features.conv3").out_channels == 64
    assert pruned.get_submodule("classifier.fc1").out_features == 64  # no BatchNorm: ranked by magnitude
    kept = pruned.get_submodule("features.bn2").weight.detach().abs()
    dropped = slim.get_submodule("features.bn2").weight.detach().abs().sort().values[:32]
    assert float(kept.min()) >= float(dropped.max())  # the smallest gammas were the ones removed
    accuracy = digits_task.evaluate(pruned)["accuracy"]
    record_property("accuracy_after_pruning_without_recovery", accuracy)
    assert accuracy > 50.0

    other = registry.components.create("pruner", "torch-pruning", {"slimming": {**BN_L1, "seed": 1}})
    other.sparsify(copy.deepcopy(baseline), digits_task)
    assert runs == [1, 1]  # other options, other result


def test_group_regularised_model_loses_less_when_pruned(  # type: ignore[no-untyped-def]
    registry, digits_task, record_property
) -> None:
    baseline = digits_task.build_model()
    plan = _plan(0.75, "features.conv2", "features.conv3", "classifier.fc1")
    plain = registry.components.create("pruner", "torch-pruning").prune(
        copy.deepcopy(baseline), plan, digits_task
    )
    slimmed = registry.components.create("pruner", "torch-pruning", {"slimming": GROUP}).prune(
        copy.deepcopy(baseline), plan, digits_task
    )
    for model in (plain, slimmed):
        assert model.get_submodule("features.conv3").out_channels == 32
        assert model(*digits_task.example_inputs(3)).shape == (3, 10)
    plain_acc = digits_task.evaluate(plain)["accuracy"]
    slim_acc = digits_task.evaluate(slimmed)["accuracy"]
    record_property("accuracy_after_pruning_without_recovery", {"plain": plain_acc, "group": slim_acc})
    assert slim_acc > plain_acc + 10.0


def test_slimming_is_deterministic_and_leaves_unpruned_plans_alone(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    baseline = digits_task.build_model()
    options = {"slimming": {**GROUP, "epochs": 0.5}}
    one = registry.components.create("pruner", "torch-pruning", options).sparsify(
        copy.deepcopy(baseline), digits_task
    )
    two = registry.components.create("pruner", "torch-pruning", options).sparsify(
        copy.deepcopy(baseline), digits_task
    )
    for key, value in one.state_dict().items():
        assert torch.equal(value, two.state_dict()[key]), key

    untouched = copy.deepcopy(baseline)
    registry.components.create("pruner", "torch-pruning", options).prune(
        untouched, CompressionPlan(), digits_task
    )
    for key, value in untouched.state_dict().items():
        assert torch.equal(value, baseline.state_dict()[key]), key


def test_sparsify_needs_the_slimming_option(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PlanError, match="slimming"):
        registry.components.create("pruner", "torch-pruning").sparsify(digits_task.build_model(), digits_task)
