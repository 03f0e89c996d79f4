"""Recovery trains with the task's own recipe unless the policy changes a part of it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from orchestrator_builtins.kd import KDOptions
from orchestrator_builtins.recovery import recipe_of
from pydantic import ValidationError

from orchestrator import Rebatched, TrainingRecipe, load_registry


class _SGDDigits:
    """digits-cnn whose declared recipe is SGD with Nesterov momentum (a task that trains with SGD)."""

    RECIPE = TrainingRecipe(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)


@pytest.fixture
def sgd_task(digits_task: Any) -> Any:
    task = copy.copy(digits_task)
    task.training_recipe = lambda: _SGDDigits.RECIPE  # type: ignore[method-assign]
    return task


def test_recovery_uses_the_tasks_recipe_when_the_policy_names_none(sgd_task: Any) -> None:
    teacher = sgd_task.build_model()
    student = copy.deepcopy(teacher)
    kd = load_registry().components.create(
        "distiller", "kd", {"alpha": 0.0, "max_steps": 2, "schedule": "constant"}
    )
    kd.distill(student, teacher, sgd_task)

    # the same two steps written by hand with the task's recipe
    expected = copy.deepcopy(teacher)
    optimizer = torch.optim.SGD(expected.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    expected.train()
    for batch, _ in zip(sgd_task.train_data(), range(2), strict=False):
        loss = sgd_task.loss(expected(*sgd_task.inputs(batch)), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (name, got), want in zip(student.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.allclose(got, want, atol=1e-6), name


def test_policy_options_change_a_part_of_the_recipe(sgd_task: Any) -> None:
    assert recipe_of(KDOptions(), sgd_task) == _SGDDigits.RECIPE
    lower = recipe_of(KDOptions(lr=0.01), sgd_task)
    assert lower.model_dump() == {**_SGDDigits.RECIPE.model_dump(), "lr": 0.01}
    adam = recipe_of(KDOptions(optimizer="adam"), sgd_task)  # another optimizer: its own defaults
    assert (adam.optimizer, adam.lr, adam.momentum, adam.nesterov) == ("adam", 1e-3, 0.0, False)
    assert adam.weight_decay == _SGDDigits.RECIPE.weight_decay


def test_the_builtin_tasks_declare_the_recipe_their_baseline_trained_with() -> None:
    components = load_registry().components
    resnet = components.create("task", "mnist-resnet", {"lr": 0.05}).training_recipe()  # type: ignore[attr-defined]
    assert resnet == TrainingRecipe(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    digits = components.create("task", "digits-cnn").training_recipe()  # type: ignore[attr-defined]
    assert (digits.optimizer, digits.lr) == ("adam", 2e-3)


def test_momentum_is_refused_for_adam() -> None:
    with pytest.raises(ValidationError, match="momentum and nesterov are options of sgd"):
        KDOptions(optimizer="adam", momentum=0.9)
    with pytest.raises(ValidationError, match="nesterov needs momentum"):
        TrainingRecipe(optimizer="sgd", nesterov=True)


def test_batch_size_joins_and_cuts_the_tasks_batches_in_order() -> None:
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    batches = [(x[i : i + 3], y[i : i + 3]) for i in range(0, 10, 3)]  # sizes 3, 3, 3, 1
    rebatched = Rebatched(batches, 4)
    got = list(rebatched)
    assert [len(b[1]) for b in got] == [4, 4, 2]
    assert len(rebatched) == 3
    assert torch.equal(torch.cat([b[1] for b in got]), y)
    assert torch.equal(torch.cat([b[0] for b in got]), x)
