"""Distillers ``kd`` (logit distillation, Hinton et al.) and ``none`` (no recovery).

``kd`` trains the student on ``alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * task loss`` within
the budgets, schedule and early stop of :mod:`orchestrator_builtins.recovery`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from orchestrator import Batch, ComponentOptions, Distiller, RecoveryMonitor, Task, hookimpl
from orchestrator_builtins.recovery import RecoveryOptions, train


class KDOptions(RecoveryOptions):
    #: softmax temperature of the distillation term
    temperature: float = Field(default=4.0, gt=0)
    #: weight of the distillation term; 1 - alpha weighs the task loss
    alpha: float = Field(default=0.7, ge=0, le=1)


def logit_loss(student_out: Any, teacher_out: Any, batch: Batch, task: Task[Any], opts: KDOptions) -> Any:
    """The ``kd`` loss of one batch from the student's and the teacher's outputs."""
    import torch.nn.functional as F  # noqa: N812

    t = opts.temperature
    soft = F.softmax(teacher_out / t, dim=-1)
    distill = F.kl_div(F.log_softmax(student_out / t, dim=-1), soft, reduction="batchmean")
    return opts.alpha * t * t * distill + (1 - opts.alpha) * task.loss(student_out, batch)


class KDDistiller(Distiller[KDOptions]):
    """Soft-target distillation from the uncompressed teacher, plus the task loss."""

    name: ClassVar[str] = "kd"
    Options = KDOptions
    summary: ClassVar[str] = "logit distillation; epoch/step/time budget, lr schedule, early stop"

    def distill(
        self,
        student: Any,
        teacher: Any,
        task: Task[Any],
        *,
        monitor: RecoveryMonitor | None = None,
    ) -> Any:
        import torch

        teacher.eval()

        def loss_of(batch: Batch) -> Any:
            inputs = task.inputs(batch)
            with torch.no_grad():
                teacher_out = teacher(*inputs)
            return logit_loss(student(*inputs), teacher_out, batch, task, self.options)

        train(student, task, loss_of, self.options, monitor=monitor)
        return student.eval()


class NoRecovery(Distiller[ComponentOptions]):
    """No recovery: the compressed model is evaluated as pruned."""

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "no recovery training"

    def distill(
        self,
        student: Any,
        teacher: Any,
        task: Task[Any],
        *,
        monitor: RecoveryMonitor | None = None,
    ) -> Any:
        return student.eval()


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(KDDistiller)
    registry.register(NoRecovery)
