"""Depth pruning: which blocks can be dropped, dropping them, and refusing what cannot be dropped."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import yaml
from orchestrator_builtins.depth import DepthPruner
from orchestrator_builtins.mnist_resnet import build_resnet
from torch import nn
from typer.testing import CliRunner

from orchestrator import CompressionPlan, PlanError, Pruner, Task, load_policy, load_registry
from orchestrator.cli import app
from orchestrator.layers import droppable_blocks
from orchestrator.measure import count_macs_params
from orchestrator.pipeline import Pipeline

from .conftest import MNIST_SMALL as SMALL

#: identity-shortcut blocks of ``build_resnet((8, 16, 32), blocks=2)``; stages.1.0 and stages.2.0 downsample
RESNET_BLOCKS = ["stages.0.0", "stages.0.1", "stages.1.1", "stages.2.1"]


@pytest.fixture(scope="module")
def task(mnist_task: Task[Any]) -> Task[Any]:
    return mnist_task


def _plan(layers: dict[str, dict[str, Any]]) -> CompressionPlan:
    return CompressionPlan.from_mapping({"layers": layers})


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- which blocks are droppable ---------------------------------------------------------------------


def test_resnet_blocks_with_identity_shortcut_are_droppable() -> None:
    model = build_resnet((8, 16, 32), 2).eval()
    found = droppable_blocks(model, (torch.randn(1, 1, 28, 28),))
    assert found == RESNET_BLOCKS  # not stages.1.0 (downsampling), nor stages.0 (a whole stage), nor convs


class _Residual(nn.Module):
    def __init__(self, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(x, self.branch(x))


def _inplace_add(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f += x
    return f


@pytest.mark.parametrize(
    ("combine", "droppable"),
    [
        (lambda x, f: x + f, True),
        (lambda x, f: f + x, True),
        (torch.add, True),
        (_inplace_add, True),
        (lambda x, f: F.relu(x + f), True),
        (lambda x, f: x * f, False),  # gated, not residual
        (lambda x, f: f, False),  # a plain layer with the same shape in and out
        (lambda x, f: 2 * x + f, False),  # the shortcut is not the input itself
        (lambda x, f: torch.tanh(f) + torch.sigmoid(f), False),
    ],
)
def test_residual_blocks_are_recognised_by_their_graph(
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], droppable: bool
) -> None:
    model = nn.Sequential(nn.Linear(4, 6), _Residual(combine), nn.Linear(6, 2))
    assert droppable_blocks(model, (torch.randn(3, 4),)) == (["1"] if droppable else [])


class _Layer(nn.Module):
    """Stands for a Hugging Face encoder layer: keyword hidden states in, a tuple out."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.norm(hidden_states + torch.tanh(self.mix(hidden_states)))
        return out, out.mean(dim=-1)


class _Encoder(nn.Module):
    def __init__(self, layers: int = 3, width: int = 8) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=layers)
        self.embed = nn.Embedding(20, width)
        self.layer = nn.ModuleList(_Layer(width) for _ in range(layers))
        self.head = nn.Linear(width, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids)
        for layer in self.layer:
            hidden = layer(hidden_states=hidden)[0]
        return self.head(hidden[:, 0])  # type: ignore[no-any-return]


class _Stages(nn.Module):
    """A ModuleList whose items change the width: none of them can go."""

    def __init__(self) -> None:
        super().__init__()
        self.items = nn.ModuleList([nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for item in self.items:
            x = item(x)
        return x


def test_layers_of_a_stack_of_identical_layers_are_droppable() -> None:
    ids = torch.randint(0, 20, (2, 5))
    assert droppable_blocks(_Encoder(), (ids,)) == ["layer.0", "layer.1", "layer.2"]
    assert droppable_blocks(_Stages(), (torch.randn(2, 4),)) == []


class _StubTask(Task[Any]):
    """Just enough of a task for a pruner: example inputs."""

    name: ClassVar[str] = "stub"

    def __init__(self, example: Callable[[int], tuple[torch.Tensor, ...]]) -> None:
        super().__init__()
        self._example = example

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return self._example(batch_size)

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def train_data(self) -> list[Any]:
        raise NotImplementedError

    def eval_data(self) -> list[Any]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError


def test_depth_pruner_removes_a_layer_from_a_stack() -> None:
    model = _Encoder(layers=4).eval()
    first, third, last = model.layer[0], model.layer[2], model.layer[3]
    task = _StubTask(lambda b: (torch.randint(0, 20, (b, 5)),))
    plan = _plan({"layer.1": {"drop": True}})
    pruned = DepthPruner().prune(model, plan, task)
    assert list(pruned.layer) == [first, third, last]
    assert pruned.config.num_hidden_layers == 3
    assert pruned(torch.randint(0, 20, (3, 5))).shape == (3, 2)


# -- the depth pruner on the ResNet ----------------------------------------------------------------


def test_depth_pruner_replaces_dropped_blocks_by_identity(task: Task[Any]) -> None:
    baseline = task.build_model()
    model = copy.deepcopy(baseline)
    plan = _plan({"stages.0.1": {"drop": True}, "stages.2.1": {"drop": True}})
    pruner = load_registry().components.create("pruner", "depth")
    assert isinstance(pruner, Pruner)
    assert pruner.handles_drop
    pruned = pruner.prune(model, plan, task)
    assert isinstance(pruned.get_submodule("stages.0.1"), nn.Identity)
    assert isinstance(pruned.get_submodule("stages.2.1"), nn.Identity)
    assert not isinstance(pruned.get_submodule("stages.1.1"), nn.Identity)
    example = task.example_inputs(1)
    macs, params = count_macs_params(pruned, example)
    base_macs, base_params = count_macs_params(baseline, example)
    assert macs < base_macs
    assert params < base_params
    accuracy = task.evaluate(pruned)["accuracy"]
    assert 10.0 < accuracy <= 100.0  # it still classifies, untrained after the cut


def test_dropping_a_module_that_is_not_a_block_is_a_plan_error(task: Task[Any]) -> None:
    model = task.build_model()
    before = _state(model)
    with pytest.raises(PlanError) as caught:
        DepthPruner().prune(model, _plan({"stages.1.0": {"drop": True}}), task)
    message = str(caught.value)
    assert "stages.1.0" in message
    assert "droppable blocks: stages.0.0, stages.0.1, stages.1.1, stages.2.1" in message
    assert caught.value.field == "plan.layers.stages.1.0.drop"
    assert not any(isinstance(m, nn.Identity) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_min_kept_guards_each_stage(task: Task[Any]) -> None:
    pruner = DepthPruner.from_options({"min_kept": 1})
    plan = _plan({"stages.0.0": {"drop": True}, "stages.0.1": {"drop": True}})
    with pytest.raises(PlanError, match=r"drops 2 of the 2 droppable blocks of 'stages\.0'"):
        pruner.prune(task.build_model(), plan, task)


def _write_policy(path: Path, pruners: list[dict[str, Any]], layers: dict[str, Any]) -> Path:
    policy = {
        "schema_version": 1,
        "task": {"name": "mnist-resnet", "options": SMALL},
        "pipeline": {"pruner": pruners, "distiller": {"name": "kd", "options": {"max_steps": 3}}},
        "plan": {"layers": layers},
        "measure": {"batch_sizes": [1], "rounds": 3, "warmup": 0, "min_round_ms": 1, "latency": False},
    }
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return path


def test_apply_refuses_to_drop_a_downsampling_block_with_exit_code_2(tmp_path: Path) -> None:
    policy = _write_policy(
        tmp_path / "drop.yaml",
        [{"name": "depth"}],
        {"stages.0.1": {"drop": True}, "stages.1.0": {"drop": True}},
    )
    result = CliRunner().invoke(app, ["apply", str(policy), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "stages.1.0" in result.output
    assert "plan.layers.stages.1.0.drop" in result.output
    assert not (tmp_path / "out" / "model.pt").exists()


def test_depth_then_channel_pruning_in_one_plan(tmp_path: Path) -> None:
    layers = {
        "stages.0.1": {"drop": True},
        "stages.2.1": {"drop": True},
        "stages.2.1.conv1": {"prune_ratio": 0.5},  # inside a dropped block: gone with it
        "stages.1.1.conv1": {"prune_ratio": 0.5},
        "stages.2.0.conv1": {"prune_ratio": 0.25},
    }
    pruners = [{"name": "depth"}, {"name": "torch-pruning", "options": {"round_to": 2}}]
    policy = load_policy(_write_policy(tmp_path / "both.yaml", pruners, layers))
    pipeline = Pipeline.from_policy(policy, load_registry())
    baseline = pipeline.baseline(tmp_path)
    assert policy.plan is not None
    pruned = pipeline.prune(policy.plan, baseline)
    assert isinstance(pruned.get_submodule("stages.0.1"), nn.Identity)
    assert isinstance(pruned.get_submodule("stages.2.1"), nn.Identity)
    assert pruned.get_submodule("stages.1.1.conv1").out_channels == 8  # 16 halved
    assert pruned.get_submodule("stages.2.0.conv1").out_channels == 24  # 32 minus a quarter
    assert pruned.get_submodule("stages.0.0.conv1").out_channels == 8  # untouched
    result = pipeline.compress(policy.plan, baseline, pruned=pruned)
    assert result.metrics["macs"] < baseline.metrics["macs"]
    assert result.metrics["params"] < baseline.metrics["params"]
    assert 10.0 < result.metrics["accuracy"] <= 100.0
