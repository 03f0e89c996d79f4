"""The training loop every builtin distiller shares: budgets, learning-rate schedule, early stop.

A distiller gives a per-batch loss; :func:`train` runs it within the first budget reached (``epochs``,
``max_steps`` or ``max_seconds``), with a constant, cosine or linear learning-rate schedule, asks the
search's monitor at ``checkpoints`` whether to go on, and with ``validation_fraction > 0`` holds out the
last batches of one epoch of training data, measures the same loss on them every ``eval_every`` steps,
stops after ``patience`` evaluations without improvement and restores the best weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sized
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from orchestrator import Batch, ComponentOptions, RecoveryMonitor, Task

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["RecoveryOptions", "train"]


class RecoveryOptions(ComponentOptions):
    #: passes over the training data (fractions allowed)
    epochs: float = Field(default=2.0, gt=0)
    #: stop after this many optimizer steps, whatever ``epochs`` says
    max_steps: int | None = Field(default=None, ge=1)
    #: stop after this many seconds of training, whatever ``epochs`` says
    max_seconds: float | None = Field(default=None, gt=0)
    #: peak learning rate (Adam)
    lr: float = Field(default=1e-3, gt=0)
    #: Adam weight decay
    weight_decay: float = Field(default=0.0, ge=0)
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
    import torch

    batches, validation = _split(task, options)
    steps_per_epoch = len(batches) if isinstance(batches, Sized) else sum(1 for _ in batches)
    total = max(1, math.ceil(options.epochs * steps_per_epoch))
    if options.max_steps is not None:
        total = min(total, options.max_steps)
    params = [*student.parameters(), *extra_parameters]
    optimizer = torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
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


def _split(task: Task[Any], options: RecoveryOptions) -> tuple[Iterable[Batch], list[Batch]]:
    """Training batches and held-out validation batches (none unless ``validation_fraction``)."""
    if options.validation_fraction <= 0:
        return task.train_data(), []
    epoch = list(task.train_data())
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
