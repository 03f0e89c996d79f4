"""The training loop every builtin distiller shares: budgets, learning-rate schedule, early stop.

A distiller gives a per-batch loss; :func:`train` runs it within the first budget reached (``epochs``,
``max_steps`` or ``max_seconds``), with a constant, cosine or linear learning-rate schedule, asks the
search's monitor at ``checkpoints`` whether to go on, and with ``validation_fraction > 0`` holds out the
last batches of one epoch of training data, measures the same loss on them every ``eval_every`` steps,
stops after ``patience`` evaluations without improvement and restores the best weights.

It trains with the task's own recipe (:meth:`orchestrator.Task.training_recipe`: optimizer, learning rate,
momentum, weight decay, batch size); ``optimizer``, ``lr``, ``momentum``, ``nesterov``, ``weight_decay``
and ``batch_size`` change a part of it. Naming another optimizer than the task's starts from that
optimizer's defaults.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sized
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from orchestrator import Batch, ComponentOptions, Rebatched, RecoveryMonitor, Task, TrainingRecipe
from orchestrator.recipe import OptimizerName

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["RecoveryOptions", "recipe_of", "train"]


class RecoveryOptions(ComponentOptions):
    #: passes over the training data (fractions allowed)
    epochs: float = Field(default=2.0, gt=0)
    #: stop after this many optimizer steps, whatever ``epochs`` says
    max_steps: int | None = Field(default=None, ge=1)
    #: stop after this many seconds of training, whatever ``epochs`` says
    max_seconds: float | None = Field(default=None, gt=0)
    #: optimizer (default: the task's recipe, see ``orchestrate plugins`` / the task's docs)
    optimizer: OptimizerName | None = None
    #: peak learning rate (default: the task's recipe)
    lr: float | None = Field(default=None, gt=0)
    #: SGD momentum (default: the task's recipe)
    momentum: float | None = Field(default=None, ge=0, lt=1)
    #: SGD Nesterov momentum (default: the task's recipe)
    nesterov: bool | None = None
    #: weight decay, decoupled for adamw (default: the task's recipe)
    weight_decay: float | None = Field(default=None, ge=0)
    #: examples per optimizer step; the task's batches are joined or cut (default: the task's recipe)
    batch_size: int | None = Field(default=None, ge=1)
    #: learning-rate schedule over the step budget
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    #: how many times per run the search's monitor is asked whether to go on (for early gating)
    checkpoints: int = Field(default=2, ge=1)
    #: fraction of one epoch's training batches held out for early stopping (0: no early stop)
    validation_fraction: float = Field(default=0.0, ge=0, lt=1)
    #: validation evaluations without improvement before stopping
    patience: int = Field(default=2, ge=1)
    #: steps between validation evaluations (default: twice per epoch)
    eval_every: int | None = Field(default=None, ge=1)
    #: seed of data order and of the validation split
    seed: int = 0

    @model_validator(mode="after")
    def _momentum_for_sgd(self) -> RecoveryOptions:
        if self.optimizer in ("adam", "adamw") and (self.momentum or self.nesterov):
            raise ValueError(f"momentum and nesterov are options of sgd, not of {self.optimizer}")
        return self


def train(
    student: nn.Module,
    task: Task[Any],
    loss_of: Callable[[Batch], torch.Tensor],
    options: RecoveryOptions,
    *,
    extra_parameters: Iterable[torch.nn.Parameter] = (),
    monitor: RecoveryMonitor | None = None,
) -> dict[str, float]:
    """Train ``student`` (and ``extra_parameters``, e.g. adapters) on ``loss_of``; return what happened."""
    recipe = recipe_of(options, task)
    batches, validation = _split(task, options, recipe.batch_size)
    steps_per_epoch = len(batches) if isinstance(batches, Sized) else sum(1 for _ in batches)
    total = max(1, math.ceil(options.epochs * steps_per_epoch))
    if options.max_steps is not None:
        total = min(total, options.max_steps)
    optimizer = recipe.make_optimizer([*student.parameters(), *extra_parameters])
    scheduler = _scheduler(optimizer, options.schedule, total)
    checks = {math.ceil(total * (i + 1) / options.checkpoints) for i in range(options.checkpoints)}
    eval_every = options.eval_every or max(1, steps_per_epoch // 2)
    best, best_state, stale, stopped = math.inf, None, 0, "budget"
    start, step = time.perf_counter(), 0
    while step < total and stopped == "budget":
        for batch in batches:
            student.train()
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if monitor is not None and step in checks:
                student.eval()
                monitor(step / total, student)
            if validation and (step % eval_every == 0 or step >= total):
                current = _mean_loss(student, loss_of, validation)
                if current < best:
                    best, best_state, stale = current, copy.deepcopy(student.state_dict()), 0
                else:
                    stale += 1
                    if stale >= options.patience:
                        stopped = "early"
            if options.max_seconds is not None and time.perf_counter() - start >= options.max_seconds:
                stopped = "time"
            if step >= total or stopped != "budget":
                break
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    report = {"recovery_steps": float(step), "recovery_seconds": time.perf_counter() - start}
    if validation:
        report["recovery_validation_loss"] = best
        report["recovery_early_stop"] = float(stopped == "early")
    return report


def recipe_of(options: RecoveryOptions, task: Task[Any]) -> TrainingRecipe:
    """The task's training recipe with the parts ``options`` give changed."""
    return task.training_recipe().with_changes(
        optimizer=options.optimizer,
        lr=options.lr,
        momentum=options.momentum,
        nesterov=options.nesterov,
        weight_decay=options.weight_decay,
        batch_size=options.batch_size,
    )


def _split(
    task: Task[Any], options: RecoveryOptions, batch_size: int | None
) -> tuple[Iterable[Batch], list[Batch]]:
    """Training batches and held-out validation batches (none unless ``validation_fraction``)."""
    data: Iterable[Batch] = task.train_data()
    if batch_size is not None:
        data = Rebatched(data, batch_size)
    if options.validation_fraction <= 0:
        return data, []
    epoch = list(data)
    held = max(1, round(len(epoch) * options.validation_fraction))
    if held >= len(epoch):
        raise ValueError(f"validation_fraction {options.validation_fraction} leaves no training batch")
    return _Reordered(epoch[:-held], options.seed), epoch[-held:]


class _Reordered:
    """Fixed batches in a new seeded order each epoch."""

    def __init__(self, batches: list[Batch], seed: int) -> None:
        self.batches, self.seed, self.epoch = batches, seed, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        import torch

        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        return (self.batches[i] for i in torch.randperm(len(self.batches), generator=gen).tolist())


def _mean_loss(student: nn.Module, loss_of: Callable[[Batch], torch.Tensor], batches: list[Batch]) -> float:
    import torch

    student.eval()
    with torch.no_grad():
        return sum(float(loss_of(batch)) for batch in batches) / len(batches)


def _scheduler(optimizer: Any, schedule: str, total: int) -> Any:
    import torch

    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if schedule == "linear":
        return torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=total)
    return None
