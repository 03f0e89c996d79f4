"""The builtin components on small real models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from orchestrator import CompressionPlan, LayerDecision, PlanError


def _plan(**layers: dict) -> CompressionPlan:  # type: ignore[type-arg]
    return CompressionPlan(layers={k.replace("__", "."): LayerDecision(**v) for k, v in layers.items()})


def test_magnitude_ranks_a_zeroed_channel_last(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    with torch.no_grad():
        model.get_submodule("features.conv2").weight[5].zero_()
    scorer = registry.components.create("scorer", "magnitude", {"p": 2})
    scores = scorer.score(model, digits_task, ["features.conv1", "features.conv2"])
    channels = scores.channels["features.conv2"]
    assert len(channels) == 64
    assert min(range(64), key=channels.__getitem__) == 5
    assert set(scores.layers) == {"features.conv1", "features.conv2"}


def test_torch_pruning_removes_channels_per_layer(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    pruner = registry.components.create("pruner", "torch-pruning", {"round_to": 8})
    pruner.prune(
        model,
        _plan(features__conv1={"prune_ratio": 0.5}, features__conv3={"prune_ratio": 0.25}),
        digits_task,
    )
    assert model.get_submodule("features.conv1").out_channels == 16
    assert model.get_submodule("features.conv2").in_channels == 16
    assert model.get_submodule("features.conv2").out_channels == 64
    assert model.get_submodule("features.conv3").out_channels == 96
    assert model.get_submodule("classifier.fc1").in_features == 96 * 4
    assert model(*digits_task.example_inputs(3)).shape == (3, 10)


def test_output_layer_cannot_be_pruned(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    pruner = registry.components.create("pruner", "torch-pruning")
    with pytest.raises(PlanError, match=r"classifier\.fc2"):
        pruner.prune(digits_task.build_model(), _plan(classifier__fc2={"prune_ratio": 0.5}), digits_task)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.conv_a = nn.Conv2d(16, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(16, 16, 3, padding=1)
        self.act_a = nn.ReLU()
        self.act_b = nn.ReLU()
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.act_b(h + self.conv_b(self.act_a(self.conv_a(h))))
        return self.head(h.mean(dim=(2, 3)))


def test_residual_group_is_pruned_consistently(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = _Residual().eval()
    pruner = registry.components.create("pruner", "torch-pruning")
    pruner.prune(model, _plan(stem={"prune_ratio": 0.5}), digits_task)
    # stem and conv_b feed the same sum: both lose the same channels
    assert model.stem.out_channels == model.conv_b.out_channels == 8
    assert model.conv_a.in_channels == 8
    assert model.head.in_features == 8
    assert model.conv_a.out_channels == 16
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_int8_quantizes_only_the_layers_with_8_bits(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "torch-int8")
    plan = _plan(features__conv1={"bits": 8}, features__conv2={"bits": 8}, features__conv3={"bits": 32})
    q = quantizer.quantize(copy.deepcopy(model), plan, digits_task)
    kinds = {n: type(m).__module__ for n, m in q.named_modules()}
    assert "quantized" in kinds["features.conv1"]
    assert "quantized" in kinds["features.conv2"]
    assert "quantized" not in kinds["features.conv3"]  # bits 32: stays float
    assert "quantized" not in kinds["classifier.fc1"]  # not in the plan: stays float
    base = digits_task.evaluate(model)["accuracy"]
    assert digits_task.evaluate(q)["accuracy"] >= base - 1.0


def test_dynamic_int8_for_linear_layers(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "torch-int8")
    q = quantizer.quantize(copy.deepcopy(model), _plan(classifier__fc1={"bits": 8}), digits_task)
    assert "dynamic" in type(q.get_submodule("classifier.fc1")).__module__
    assert isinstance(q.get_submodule("features.conv1"), nn.Conv2d)


def test_kd_recovers_accuracy_of_a_heavily_pruned_model(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    teacher = digits_task.build_model()
    student = copy.deepcopy(teacher)
    pruner = registry.components.create("pruner", "torch-pruning")
    ratio = {"prune_ratio": 0.75}
    pruner.prune(
        student,
        _plan(features__conv1=ratio, features__conv2=ratio, features__conv3=ratio),
        digits_task,
    )
    before = digits_task.evaluate(student)["accuracy"]
    kd = registry.components.create("distiller", "kd", {"epochs": 2})
    seen: list[float] = []
    kd.distill(student, teacher, digits_task, monitor=lambda frac, _m: seen.append(frac))
    after = digits_task.evaluate(student)["accuracy"]
    assert after > before + 5
    assert seen[-1] == pytest.approx(1.0)


def test_baseline_is_cached_on_disk(digits_task) -> None:  # type: ignore[no-untyped-def]
    first = digits_task.build_model()
    path = digits_task.baseline_path()
    assert path.exists()
    second = digits_task.build_model()
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert digits_task.evaluate(first)["accuracy"] > 95


def test_bn_scale_importance_still_prunes_layers_without_batchnorm(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    pruner = registry.components.create("pruner", "torch-pruning", {"importance": "bn-scale"})
    pruner.prune(
        model, _plan(classifier__fc1={"prune_ratio": 0.5}, features__conv2={"prune_ratio": 0.5}), digits_task
    )
    assert model.get_submodule("classifier.fc1").out_features == 64
    assert model.get_submodule("features.conv2").out_channels == 32


def test_taylor_importance_leaves_batchnorm_statistics_alone(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    before = model.get_submodule("features.bn3").running_mean.clone()
    pruner = registry.components.create("pruner", "torch-pruning", {"importance": "taylor"})
    pruner.prune(model, _plan(features__conv2={"prune_ratio": 0.5}), digits_task)
    assert torch.equal(model.get_submodule("features.bn3").running_mean, before)
