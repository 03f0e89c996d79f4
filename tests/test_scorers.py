"""The builtin scorers sensitivity, taylor, apoz and bn-scale on the digits CNN."""

from __future__ import annotations

import copy

import pytest
import torch

from orchestrator import CompressionPlan, LayerDecision, PolicyError
from orchestrator.layers import compressible_layers

LAYERS = ["features.conv1", "features.conv2", "features.conv3", "classifier.fc1", "classifier.fc2"]
WITH_BATCHNORM = ["features.conv1", "features.conv2", "features.conv3"]

#: small but complete settings: every scorer does its real work, quickly
FAST_OPTIONS: dict[str, dict[str, object]] = {
    "sensitivity": {"levels": [0.5], "eval_batches": 1},
    "taylor": {"batches": 2},
    "apoz": {"batches": 2},
    "bn-scale": {},
}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(FAST_OPTIONS))
def test_scorer_covers_the_layers_is_deterministic_and_leaves_the_model_alone(  # type: ignore[no-untyped-def]
    name, registry, digits_task
) -> None:
    model = digits_task.build_model()
    model.train()  # the scorer must not switch the caller's model to eval either
    before = _state(model)
    scorer = registry.components.create("scorer", name, FAST_OPTIONS[name])

    first = scorer.score(model, digits_task, LAYERS)
    second = scorer.score(model, digits_task, LAYERS)

    expected = WITH_BATCHNORM if name == "bn-scale" else LAYERS
    assert list(first.layers) == expected
    assert first.layers == second.layers
    assert first.channels == second.channels
    assert first.details == second.details
    if type(scorer).per_channel:
        assert {n: len(c) for n, c in first.channels.items()} == {
            n: compressible_layers(model)[n].weight.shape[0] for n in expected
        }
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def _kill_conv3_channels(model: torch.nn.Module, channels: range) -> None:
    """Make conv3's ``channels`` contribute nothing: zero weights, BatchNorm scale and shift, fc1 inputs."""
    conv3, bn3, fc1 = (model.get_submodule(n) for n in ("features.conv3", "features.bn3", "classifier.fc1"))
    per_channel = fc1.in_features // conv3.out_channels  # flatten after the last pool: channel-major
    with torch.no_grad():
        for c in channels:
            conv3.weight[c].zero_()
            conv3.bias[c] = 0.0
            bn3.weight[c] = 0.0
            bn3.bias[c] = 0.0
            fc1.weight[:, c * per_channel : (c + 1) * per_channel] = 0.0


def test_sensitivity_finds_a_layer_of_dead_channels_insensitive(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    _kill_conv3_channels(model, range(96))  # 3/4 of its 128 channels do nothing
    scorer = registry.components.create("scorer", "sensitivity", {"levels": [0.75, 0.25, 0.5]})
    scores = scorer.score(model, digits_task, LAYERS)

    curves = scores.details["prune_curve"]
    for name in LAYERS[:-1]:
        assert list(curves[name]) == [0.25, 0.5, 0.75]  # sorted, every level measured
    assert curves["classifier.fc2"] == {}  # the output layer is never channel-pruned...
    assert set(scores.details["quant_drop"]) == set(LAYERS)  # ...but its int8 drop is measured
    assert scores.layers["classifier.fc2"] == scores.details["quant_drop"]["classifier.fc2"]

    # removing up to 3/4 of conv3 removes only dead channels: nothing is lost
    assert max(abs(d) for d in curves["features.conv3"].values()) <= 0.5
    # the first convolution has no spare channels: the loss grows with the level
    conv1 = curves["features.conv1"]
    assert conv1[0.75] > 5.0
    assert conv1[0.25] <= conv1[0.5] <= conv1[0.75]
    assert scores.layers["features.conv1"] == conv1[0.5]  # the layer score is the middle level's drop
    assert scores.ranked().index("features.conv3") < scores.ranked().index("features.conv1")


def test_sensitivity_rejects_levels_outside_0_1(registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match="levels"):
        registry.components.create("scorer", "sensitivity", {"levels": [0.5, 1.0]})


def test_taylor_scores_a_zeroed_channel_0(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    with torch.no_grad():
        model.get_submodule("features.conv2").weight[5].zero_()
    scores = registry.components.create("scorer", "taylor").score(model, digits_task, LAYERS)
    channels = scores.channels["features.conv2"]
    assert channels[5] == 0.0
    assert min(c for i, c in enumerate(channels) if i != 5) > 0.0
    assert all(v > 0.0 for v in scores.layers.values())


def test_apoz_scores_an_always_dead_channel_0(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    with torch.no_grad():
        model.get_submodule("classifier.fc1").bias[3] = -1e4  # linear -> ReLU: always <= 0
        model.get_submodule("features.bn2").bias[7] = -1e4  # conv -> BatchNorm -> ReLU: dead after BN
    scores = registry.components.create("scorer", "apoz").score(model, digits_task, LAYERS)
    assert scores.channels["classifier.fc1"][3] == 0.0
    assert scores.channels["features.conv2"][7] == 0.0
    assert max(scores.channels["features.conv2"]) > 0.5
    assert scores.details["measured_at"]["features.conv2"] == "features.bn2"
    assert all(0.0 <= s <= 1.0 for s in scores.layers.values())


def test_bn_scale_ranks_a_zero_gamma_last_and_skips_layers_without_batchnorm(  # type: ignore[no-untyped-def]
    registry, digits_task
) -> None:
    model = digits_task.build_model()
    with torch.no_grad():
        model.get_submodule("features.bn2").weight[9] = 0.0
    scores = registry.components.create("scorer", "bn-scale").score(model, digits_task, LAYERS)
    channels = scores.channels["features.conv2"]
    assert min(range(len(channels)), key=channels.__getitem__) == 9
    assert channels[9] == 0.0
    assert scores.details["without_batchnorm"] == ["classifier.fc1", "classifier.fc2"]
    assert scores.layers["features.conv2"] == pytest.approx(
        float(model.get_submodule("features.bn2").weight.detach().abs().mean())
    )


def test_apoz_scores_drive_the_pruner_to_remove_dead_channels(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    dead = [1, 4, 8, 15]
    with torch.no_grad():
        for c in dead:
            model.get_submodule("features.bn1").bias[c] = -1e4
    scores = registry.components.create("scorer", "apoz").score(model, digits_task, LAYERS)
    pruned = copy.deepcopy(model)
    plan = CompressionPlan(layers={"features.conv1": LayerDecision(prune_ratio=0.125)})  # 4 of 32
    registry.components.create("pruner", "torch-pruning", {"importance": "scorer"}).prune(
        pruned, plan, digits_task, scores=scores
    )
    kept_bias = pruned.get_submodule("features.bn1").bias
    assert len(kept_bias) == 28
    assert bool((kept_bias > -1e3).all())  # every dead channel is gone
    assert digits_task.evaluate(pruned)["accuracy"] == pytest.approx(
        digits_task.evaluate(model)["accuracy"], abs=0.5
    )
