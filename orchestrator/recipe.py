"""Training recipes: the optimizer a task's baseline was trained with, which recovery trains with too.

A task declares its recipe (:meth:`orchestrator.Task.training_recipe`); a distiller's options may change
any part of it. Recovery that trains like the task recovers more than a generic optimizer would: a ResNet
trained with SGD and Nesterov momentum is fine-tuned best with the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from orchestrator._strict import StrictBase

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_LR", "OptimizerName", "Rebatched", "TrainingRecipe"]

OptimizerName = Literal["sgd", "adam", "adamw"]

#: learning rate of an optimizer named without one, when the task's recipe uses another optimizer
DEFAULT_LR: dict[str, float] = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}


class TrainingRecipe(StrictBase):
    """Optimizer, learning rate, momentum, weight decay and batch size of training."""

    #: the optimizer: ``sgd`` (with ``momentum`` and ``nesterov``), ``adam`` or ``adamw``
    optimizer: OptimizerName = Field(default="adam", description="Optimizer: sgd, adam or adamw.")
    #: peak learning rate (the schedule starts there)
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate.")
    #: SGD momentum
    momentum: float = Field(default=0.0, ge=0, lt=1, description="SGD momentum (sgd only).")
    #: Nesterov momentum (SGD with momentum > 0)
    nesterov: bool = Field(default=False, description="Nesterov momentum (sgd with momentum > 0 only).")
    #: L2 weight decay (decoupled for adamw)
    weight_decay: float = Field(default=0.0, ge=0, description="Weight decay (decoupled for adamw).")
    #: examples per optimizer step; None takes the task's batches as they come
    batch_size: int | None = Field(default=None, ge=1, description="Examples per step; none: the task's.")

    @model_validator(mode="after")
    def _momentum_for_sgd(self) -> TrainingRecipe:
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(f"momentum and nesterov are options of sgd, not of {self.optimizer}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        return self

    def with_changes(self, **changes: Any) -> TrainingRecipe:
        """This recipe with the given fields changed (None values are ignored).

        Naming another optimizer starts from that optimizer's defaults (its learning rate from
        :data:`DEFAULT_LR`, no momentum), so an SGD recipe's momentum is not carried to Adam.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        base = self.model_dump()
        optimizer = given.get("optimizer", self.optimizer)
        if optimizer != self.optimizer:
            base = {**TrainingRecipe().model_dump(), "lr": DEFAULT_LR[optimizer]}
            base["weight_decay"] = self.weight_decay
            base["batch_size"] = self.batch_size
        return TrainingRecipe.model_validate({**base, **given})

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer of this recipe over ``params``."""
        import torch

        params = list(params)
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.nesterov,
                weight_decay=self.weight_decay,
            )
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def describe(self) -> str:
        """One line, e.g. ``sgd lr 0.05, momentum 0.9 (nesterov), weight decay 0.0005``."""
        text = f"{self.optimizer} lr {self.lr:g}"
        if self.momentum:
            text += f", momentum {self.momentum:g}" + (" (nesterov)" if self.nesterov else "")
        if self.weight_decay:
            text += f", weight decay {self.weight_decay:g}"
        if self.batch_size is not None:
            text += f", batch {self.batch_size}"
        return text


class Rebatched:
    """A task's training batches cut and joined into batches of ``size`` examples.

    Every tensor element of a batch is concatenated along its first dimension; consecutive batches are
    joined, so one epoch of the underlying data is one epoch here, in the same order. Non-tensor elements
    are taken from the first batch of each new batch.
    """

    def __init__(self, batches: Iterable[tuple[Any, ...]], size: int) -> None:
        self.batches, self.size = batches, size
        self._length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            total = sum(_rows(batch) for batch in self.batches)
            self._length = max(1, -(-total // self.size))
        return self._length

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        pending: list[tuple[Any, ...]] = []
        rows = 0
        for batch in self.batches:
            pending.append(batch)
            rows += _rows(batch)
            while rows >= self.size:
                joined = _join(pending)
                yield _slice(joined, 0, self.size)
                rest = _slice(joined, self.size, rows)
                pending, rows = ([rest], rows - self.size) if rows > self.size else ([], 0)
        if pending:
            yield _join(pending)


def _rows(batch: tuple[Any, ...]) -> int:
    import torch

    return next((len(x) for x in batch if isinstance(x, torch.Tensor)), 0)


def _join(batches: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    import torch

    if len(batches) == 1:
        return batches[0]
    return tuple(
        torch.cat([b[i] for b in batches]) if isinstance(first, torch.Tensor) else first
        for i, first in enumerate(batches[0])
    )


def _slice(batch: tuple[Any, ...], start: int, stop: int) -> tuple[Any, ...]:
    import torch

    return tuple(x[start:stop] if isinstance(x, torch.Tensor) else x for x in batch)
