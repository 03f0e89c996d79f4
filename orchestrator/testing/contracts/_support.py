"""What the contract suites share: the tiny registry, running and comparing models."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from orchestrator.artifact import load_artifact, save_artifact
from orchestrator.components import Component
from orchestrator.task import Batch, Task
from orchestrator.testing.tasks import TinyDigits

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from orchestrator.registry import PluginRegistry


C = TypeVar("C", bound=Component[Any])

#: batch sizes every model is run at: one sample, and a batch that is not a power of two
BATCH_SIZES = (1, 3)


# -- helpers ----------------------------------------------------------------------------------------------
def create(registry: PluginRegistry, cls: type[C], options: Mapping[str, Any]) -> C:
    """``cls`` created by name through ``registry``, as a policy creates it."""
    made = registry.components.create(cls.kind, cls.name, options)
    assert isinstance(made, cls), f"the registry's '{cls.name}' is {type(made)!r}, not {cls!r}"
    return made


def first_tensor(output: Any) -> torch.Tensor:
    """A model's (first) output tensor: the tensor, the first of a tuple, or ``last_hidden_state``."""
    first = output[0] if isinstance(output, tuple | list) else getattr(output, "last_hidden_state", output)
    assert isinstance(first, torch.Tensor), f"the model's output is {type(output)!r}, not a tensor"
    return first


def run(model: nn.Module, inputs: tuple[Any, ...]) -> torch.Tensor:
    """The (first) output of ``model`` on ``inputs``, without gradients."""
    with torch.no_grad():
        return first_tensor(model(*inputs))


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a component must leave alone when it promises not to modify a model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modules": [(name, type(m).__name__) for name, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "grads": [name for name, p in model.named_parameters() if p.grad is not None],
    }


def assert_unchanged(before: Mapping[str, Any], model: nn.Module, what: str) -> None:
    """Fail naming what changed since ``snapshot``."""
    after = snapshot(model)
    assert after["modules"] == before["modules"], f"{what} changed the model's modules"
    changed = [
        k for k, v in before["state"].items() if k not in after["state"] or not _same(v, after["state"][k])
    ]
    assert not changed, f"{what} changed these weights or buffers: {', '.join(changed)}"
    assert after["training"] == before["training"], f"{what} changed the model's train/eval mode"
    assert after["grads"] == before["grads"], f"{what} left gradients on: {', '.join(after['grads'])}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    return bool(a == b)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_number(value: object) -> bool:
    """A finite Python ``int`` or ``float`` (what reports and JSON files can hold), not a bool."""
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def assert_numbers(values: Mapping[str, Any], what: str) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(k, str) or not is_number(v)}
    assert not bad, f"{what} must be finite Python floats by name; these are not: {bad!r}"


def assert_runs_like(model: nn.Module, reference: nn.Module, task: Task[Any], what: str) -> None:
    """``model`` runs on the task's example inputs and gives outputs of ``reference``'s shape, finite."""
    for batch_size in BATCH_SIZES:
        inputs = task.example_inputs(batch_size)
        want = run(reference, inputs).shape
        got = run(model.eval(), inputs)
        assert got.shape == want, f"{what}: output shape {tuple(got.shape)}, expected {tuple(want)}"
        assert bool(torch.isfinite(got).all()), f"{what}: non-finite outputs at batch size {batch_size}"


def assert_saves(model: nn.Module, task: Task[Any], tmp_path: Path, what: str) -> None:
    """``model`` saves as the pipeline's artifact (TorchScript) and loads back with the same outputs."""
    inputs = task.example_inputs(2)
    path = tmp_path / "model.pt"
    assert save_artifact(model, inputs, path) > 0
    want, got = run(model, inputs), run(load_artifact(path), inputs)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), f"{what}: the saved artifact gives other outputs"


def metric_of(task: Task[Any], model: nn.Module) -> float:
    return float(task.evaluate(model)[task.metric])


def weight_of(layer: nn.Module) -> torch.Tensor:
    """The weight tensor of ``layer``, detached."""
    weight = getattr(layer, "weight", None)
    assert isinstance(weight, torch.Tensor), f"{type(layer).__name__} has no weight tensor"
    return weight.detach()


def policy_naming(kind: str, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest policy naming the component ``name`` of ``kind`` with ``options``."""
    spec = {"name": name, "options": dict(options)}
    policy: dict[str, Any] = {"schema_version": 1, "task": TinyDigits.name}
    if kind == "task":
        policy["task"] = spec
    elif kind == "sampler":
        policy["pipeline"] = {"pruner": "torch-pruning"}
        policy["search"] = {"space": [{"layers": ["*"], "prune_ratio": [0.0, 0.5]}], "sampler": spec}
    else:
        policy["pipeline"] = {kind: spec}
    return policy


class CountedBatches:
    """An iterable of batches that counts those handed out."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self.batches = batches
        self.count = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.batches:
            self.count += 1
            yield batch

    def __len__(self) -> int:
        assert isinstance(self.batches, Sized)
        return len(self.batches)


class CountingTask:
    """Wraps a task's ``train_data`` so that every training batch handed out is counted."""

    def __init__(self, task: Task[Any]) -> None:
        self._train = task.train_data
        self._epochs: list[CountedBatches] = []
        self.task = copy.copy(task)
        self.task.train_data = self._train_data  # type: ignore[method-assign]

    def _train_data(self) -> Iterable[Batch]:
        counted = CountedBatches(self._train())
        self._epochs.append(counted)
        return counted

    @property
    def batches(self) -> int:
        return sum(epoch.count for epoch in self._epochs)
