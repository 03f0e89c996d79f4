"""Distillers: budgets, early stop with best weights restored, ``none``, and ``feature-kd``."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from orchestrator_builtins.depth import drop_blocks
from orchestrator_builtins.feature_kd import feature_pairs
from orchestrator_builtins.recovery import RecoveryOptions, train
from torch import nn

from orchestrator import CompressionPlan


def _loss(model: nn.Module, task: Any) -> Any:
    return lambda batch: task.loss(model(*task.inputs(batch)), batch)


def test_step_and_time_budgets_stop_training(digits_task: Any) -> None:
    model = copy.deepcopy(digits_task.build_model())
    report = train(model, digits_task, _loss(model, digits_task), RecoveryOptions(epochs=3, max_steps=5))
    assert report["recovery_steps"] == 5
    report = train(model, digits_task, _loss(model, digits_task), RecoveryOptions(epochs=3, max_seconds=1e-9))
    assert report["recovery_steps"] == 1  # the deadline is checked after each step


def test_early_stop_restores_the_best_validation_weights(digits_task: Any) -> None:
    torch.manual_seed(0)
    model = copy.deepcopy(digits_task.build_model())
    options = RecoveryOptions(epochs=4, lr=0.05, validation_fraction=0.2, patience=1, eval_every=2)
    report = train(model, digits_task, _loss(model, digits_task), options)  # lr 0.05 makes Adam diverge
    assert report["recovery_early_stop"] == 1.0
    held = list(digits_task.train_data())[-round(len(digits_task.train_data()) * 0.2) :]
    with torch.no_grad():
        now = sum(float(digits_task.loss(model(*digits_task.inputs(b)), b)) for b in held) / len(held)
    assert now == pytest.approx(report["recovery_validation_loss"], rel=1e-5)


def test_none_leaves_the_student_as_pruned(registry: Any, digits_task: Any) -> None:
    model = digits_task.build_model()
    student = copy.deepcopy(model)
    registry.components.create("distiller", "none").distill(student, model, digits_task)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), model.state_dict().values()))


class _Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(4))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_feature_pairs_follow_layers_that_moved_up_after_a_drop() -> None:
    teacher = _Stack()
    student = copy.deepcopy(teacher)
    drop_blocks(student, ["layers.1"])
    pairs = feature_pairs(
        student, teacher, (torch.randn(2, 8),), ["layers.0", "layers.1", "layers.2", "layers.3"]
    )
    assert [(name, s is student.layers[i]) for (name, s, _), i in zip(pairs, [0, 1, 2], strict=True)] == [
        ("layers.0", True),
        ("layers.2", True),
        ("layers.3", True),
    ]


def test_feature_kd_matches_features_through_adapters_after_depth_and_width_pruning(
    registry: Any, mnist_task: Any
) -> None:
    teacher = mnist_task.build_model()
    pruners = [
        registry.components.create("pruner", "depth"),
        registry.components.create("pruner", "torch-pruning"),
    ]
    plan = CompressionPlan.model_validate(
        {
            "layers": {
                "stages.1.1": {"drop": True},
                "stages.2.0.conv1": {"prune_ratio": 0.5},
                "stages.2.0.conv2": {"prune_ratio": 0.5},
            }
        }
    )
    student = copy.deepcopy(teacher)
    for pruner in pruners:
        student = pruner.prune(student, plan, mnist_task)
        if pruner.handles_drop:
            plan = plan.without_dropped_descendants()
    pairs = feature_pairs(student, teacher, mnist_task.example_inputs(2))
    assert [name for name, _, _ in pairs] == ["stages.0.0", "stages.0.1", "stages.2.1"]  # 1.1 is gone
    seen: list[int] = []
    hook = pairs[2][1].register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    with torch.no_grad():
        student(*mnist_task.example_inputs(2))
    hook.remove()
    assert seen[0] < 32  # stage 3 was thinned: its features need an adapter to the teacher's width
    before = mnist_task.evaluate(student)["accuracy"]
    distiller = registry.components.create("distiller", "feature-kd", {"epochs": 1, "beta": 1.0})
    torch.manual_seed(0)
    distiller.distill(student, teacher, mnist_task)
    assert mnist_task.evaluate(student)["accuracy"] > before
