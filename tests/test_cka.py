"""Scorer ``cka``: 1 - linear CKA between the full model and the model without one block."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from orchestrator_builtins.cka import linear_cka
from torch import nn

from orchestrator import OrchestratorError, Scorer, Task, load_registry
from orchestrator.layers import compressible_layers

from .test_depth import RESNET_BLOCKS


@pytest.fixture(scope="module")
def task(mnist_task: Task[Any]) -> Task[Any]:
    return mnist_task


def _scorer(**options: Any) -> Scorer[Any]:
    scorer = load_registry().components.create("scorer", "cka", options)
    assert isinstance(scorer, Scorer)
    assert scorer.targets == "blocks"
    return scorer


def test_linear_cka_is_one_for_the_same_representation_up_to_rotation_and_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ rotation + 1.0) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(200, 16, generator=gen)) < 0.2
    wide = torch.randn(50, 300, generator=gen, dtype=torch.float64)  # more features than samples
    mixed = wide[:, :20] @ torch.randn(20, 300, generator=gen, dtype=torch.float64)
    xc, yc = wide - wide.mean(0), mixed - mixed.mean(0)
    by_features = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(wide, mixed) == pytest.approx(float(by_features), rel=1e-9)  # via Gram matrices


def test_a_block_whose_branch_is_zero_is_the_least_important(task: Task[Any]) -> None:
    model = task.build_model()
    first = _scorer(batches=2).score(model, task, RESNET_BLOCKS)
    target = first.ranked()[-1]  # the most important block ...
    silenced = copy.deepcopy(model)
    bn2 = silenced.get_submodule(f"{target}.bn2")
    with torch.no_grad():  # ... made a no-op: relu(x + 0) == x on the previous relu's output
        bn2.weight.zero_()
        bn2.bias.zero_()
    scores = _scorer(batches=2).score(silenced, task, RESNET_BLOCKS)
    assert scores.ranked()[0] == target
    assert scores.layers[target] == pytest.approx(0.0, abs=1e-9)
    assert all(scores.layers[n] > 1e-3 for n in RESNET_BLOCKS if n != target)


def test_scores_are_deterministic_and_leave_the_model_unchanged(task: Task[Any]) -> None:
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = _scorer(batches=2)
    first = scorer.score(model, task, RESNET_BLOCKS)
    assert first.layers == scorer.score(model, task, RESNET_BLOCKS).layers
    assert set(first.layers) == set(RESNET_BLOCKS)
    assert all(0.0 <= v <= 1.0 for v in first.layers.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, nn.Identity) for m in model.modules())
    on_logits = _scorer(batches=2, features="output").score(model, task, RESNET_BLOCKS)
    assert on_logits.details["features"] == "model output"
    assert first.details["features"] == "input of 'head'"


def test_layer_names_that_are_not_blocks_are_skipped_or_refused(task: Task[Any]) -> None:
    model = task.build_model()
    convs = list(compressible_layers(model))
    with pytest.raises(OrchestratorError, match=r"droppable blocks are: stages\.0\.0, stages\.0\.1"):
        _scorer(batches=1).score(model, task, convs)
    mixed = _scorer(batches=1).score(model, task, ["stem.conv", "stages.1.1"])
    assert list(mixed.layers) == ["stages.1.1"]
    assert mixed.details["skipped"] == ["stem.conv"]
