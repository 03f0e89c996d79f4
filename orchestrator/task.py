"""Task: what a user brings — a trained model, data and a metric."""

from __future__ import annotations

import os
from abc import abstractmethod
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import FilePath

from orchestrator.components import Component, ComponentKind, ComponentOptions, OptionsT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    import torch
    from torch import nn

    from orchestrator.recipe import TrainingRecipe

__all__ = [
    "Batch",
    "ClassificationTask",
    "ShuffledBatches",
    "Task",
    "TaskOptions",
    "cache_dir",
    "classification_accuracy",
    "classification_task",
    "fixed_batches",
]

#: One batch from a task's data: model inputs first, then targets. ``Task.inputs`` and ``Task.loss``
#: say how a task's batches are read.
Batch = tuple[Any, ...]


def cache_dir() -> Path:
    """Where trained baselines and other per-machine results are kept.

    ``$ORCHESTRATOR_CACHE`` if set, else ``$XDG_CACHE_HOME/compression-orchestrator`` (``~/.cache/...``).
    """
    explicit = os.environ.get("ORCHESTRATOR_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compression-orchestrator"


class TaskOptions(ComponentOptions):
    """Options every builtin task takes (derive a task's ``Options`` from it to take them too)."""

    #: a checkpoint of the task's model to start from instead of the trained (or pretrained) baseline:
    #: a state_dict saved with torch.save(model.state_dict(), PATH), loaded without running code from the
    #: file; a whole pickled model only with --trust-model-files. Relative to the working directory.
    weights: FilePath | None = None


class Task(Component[OptionsT]):
    """A model to compress, its data and how to judge it.

    Invariants: ``build_model`` returns a trained model in eval mode, identical on every call (cache it);
    ``evaluate`` returns a dict holding at least ``metric`` and is deterministic for a given model.
    """

    kind: ClassVar[ComponentKind] = "task"
    #: name of the primary metric in ``evaluate``'s result
    metric: ClassVar[str] = "accuracy"
    #: whether a larger primary metric is better
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The trained baseline, in eval mode (trained once and cached)."""

    @abstractmethod
    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs of the given batch size, as the model's forward takes them."""

    @abstractmethod
    def train_data(self) -> Iterable[Batch]:
        """Training batches (one epoch per iteration)."""

    @abstractmethod
    def eval_data(self) -> Iterable[Batch]:
        """Held-out batches the metric is computed on."""

    def calibration_data(self, batches: int = 8) -> Iterator[Batch]:
        """A few training batches for calibration (quantization observers, activation statistics)."""
        return islice(iter(self.train_data()), batches)

    def inputs(self, batch: Batch) -> tuple[Any, ...]:
        """The model inputs of a batch (by default its first element)."""
        return (batch[0],)

    def training_recipe(self) -> TrainingRecipe:
        """The optimizer, learning rate, momentum, weight decay (and batch size) the baseline was trained
        with; recovery trains with it unless the policy says otherwise. By default Adam, lr 1e-3."""
        from orchestrator.recipe import TrainingRecipe

        return TrainingRecipe()

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Task loss of ``outputs`` on ``batch`` (by default cross-entropy against ``batch[1]``)."""
        import torch.nn.functional as F  # noqa: N812

        return F.cross_entropy(outputs, batch[1])

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on ``eval_data``; holds at least ``self.metric``."""

    #: bump in a task when its model or training recipe changes: it invalidates cached baselines
    baseline_version: ClassVar[int] = 1

    def baseline_path(self) -> Path:
        """Where the trained baseline for these options is cached."""
        import hashlib
        import json

        import torch

        key = json.dumps(
            {"v": self.baseline_version, "torch": torch.__version__, **self.options.model_dump(mode="json")},
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_dir() / "baselines" / f"{self.name}-{digest}.pt"

    def with_weights(self, model: nn.Module) -> nn.Module:
        """``model`` with the weights of the file the ``weights`` option names, if the task has that option
        and it is set (see :func:`orchestrator.model_files.load_model_file`); else ``model`` unchanged."""
        from orchestrator.model_files import load_model_file

        weights = getattr(self.options, "weights", None)
        return model if weights is None else load_model_file(weights, model)

    def cached_baseline(self, model: nn.Module, train: Callable[[nn.Module], None]) -> nn.Module:
        """``model`` with the weights the ``weights`` option names if set; else with the cached trained
        weights, or trained by ``train`` once and cached.

        The write is atomic, so several workers starting together never read a half-written file.
        """
        import tempfile

        import torch

        if getattr(self.options, "weights", None) is not None:
            return self.with_weights(model).eval()
        path = self.baseline_path()
        if path.exists():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        train(model)
        model.zero_grad(set_to_none=True)  # as if loaded: no gradients left over from the last step
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
        return model.eval()


class ShuffledBatches:
    """Mini-batches of ``(x, y)`` in a new seeded order each epoch.

    A fresh object repeats the same sequence of orders, so a run is reproducible however many epochs
    earlier runs took.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch = 0

    def __iter__(self) -> Iterator[Batch]:
        import torch

        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.x), generator=gen)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def fixed_batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[Batch]:
    """``(x, y)`` cut into consecutive batches, in order (for evaluation)."""
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def classification_accuracy(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy in percent of ``model`` on ``(inputs, labels)`` batches."""
    import torch

    correct = total = 0
    model.eval()
    with torch.inference_mode():
        for x, y in batches:
            correct += int((model(x).argmax(dim=-1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


class ClassificationTask(Task[OptionsT]):
    """A classifier fed ``(inputs, labels)`` batches: example inputs are taken from the evaluation data,
    the metric is top-1 ``accuracy`` in percent. Subclasses give ``name``, ``build_model``,
    ``train_data`` and ``eval_data``; with :class:`TaskOptions` (the default ``Options``), ``build_model``
    may return ``self.with_weights(model)`` to start from the user's ``weights:`` file."""

    Options: ClassVar[type[ComponentOptions]] = TaskOptions

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        first = next(iter(self.eval_data()))[0]
        repeats = -(-batch_size // len(first))
        return (first.repeat(repeats, *[1] * (first.dim() - 1))[:batch_size],)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"accuracy": classification_accuracy(model, self.eval_data())}


def classification_task(
    name: str, model: nn.Module, train: Iterable[Batch], evaluation: Iterable[Batch]
) -> type[ClassificationTask[TaskOptions]]:
    """A task class for your trained classifier and your data (e.g. two ``DataLoader``); register it
    with ``registry.components.register(...)`` and name it in a policy's ``task:``.

    ``train`` is iterated once per epoch of recovery; ``evaluation`` should be in a fixed order. With
    ``options: {weights: PATH}`` the task starts from a copy of ``model`` holding the weights of that file.
    """

    class _Yours(ClassificationTask[TaskOptions]):
        def build_model(self) -> nn.Module:
            if self.options.weights is None:
                return model.eval()
            import copy

            return self.with_weights(copy.deepcopy(model)).eval()

        def train_data(self) -> Iterable[Batch]:
            return train

        def eval_data(self) -> Iterable[Batch]:
            return evaluation

    _Yours.name = name
    _Yours.__name__ = _Yours.__qualname__ = f"ClassificationTask[{name}]"
    return _Yours
