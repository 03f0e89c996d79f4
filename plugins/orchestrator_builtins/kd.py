"""Distiller ``kd``: logit distillation (Hinton et al.) with temperature and alpha, within a budget."""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator import ComponentOptions, Distiller, RecoveryMonitor, Task, hookimpl


class KDOptions(ComponentOptions):
    #: passes over the training data (fractions allowed)
    epochs: float = Field(default=2.0, gt=0)
    #: stop after this many optimizer steps, whatever ``epochs`` says
    max_steps: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=4.0, gt=0)
    #: weight of the distillation term; 1 - alpha weighs the task loss
    alpha: float = Field(default=0.7, ge=0, le=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    #: how many times per run the monitor is asked whether to go on (for early gating)
    checkpoints: int = Field(default=2, ge=1)


class KDDistiller(Distiller[KDOptions]):
    """Soft-target distillation from the uncompressed teacher, plus the task loss."""

    name: ClassVar[str] = "kd"
    Options = KDOptions

    def distill(
        self,
        student: Any,
        teacher: Any,
        task: Task[Any],
        *,
        monitor: RecoveryMonitor | None = None,
    ) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        opts = self.options
        data = task.train_data()
        steps_per_epoch = len(data) if isinstance(data, Sized) else sum(1 for _ in data)
        total = max(1, math.ceil(opts.epochs * steps_per_epoch))
        if opts.max_steps is not None:
            total = min(total, opts.max_steps)
        optimizer = torch.optim.Adam(student.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
            if opts.schedule == "cosine"
            else None
        )
        checks = {math.ceil(total * (i + 1) / opts.checkpoints) for i in range(opts.checkpoints)}
        teacher.eval()
        t = opts.temperature
        step = 0
        while step < total:
            for batch in data:
                student.train()
                inputs = task.inputs(batch)
                with torch.no_grad():
                    soft = F.softmax(teacher(*inputs) / t, dim=-1)
                logits = student(*inputs)
                distill = F.kl_div(F.log_softmax(logits / t, dim=-1), soft, reduction="batchmean")
                loss = opts.alpha * t * t * distill + (1 - opts.alpha) * task.loss(logits, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                if monitor is not None and step in checks:
                    student.eval()
                    monitor(step / total, student)
                if step >= total:
                    break
        return student.eval()


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(KDDistiller)
