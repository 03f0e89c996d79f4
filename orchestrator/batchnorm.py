"""BatchNorm recalibration: re-estimate running statistics after a structural change.

Pruning channels or dropping blocks changes the distribution each BatchNorm layer sees, while its running
mean and variance still describe the unpruned model. Re-estimating them on a few training batches (in
train mode, without gradients, every other weight untouched) recovers much of the accuracy lost before any
training (Li et al., "EagleEye", 2020), so recovery starts from a better point and the pruned model's
accuracy is a fair signal of the plan.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.task import Task

__all__ = ["has_batchnorm", "recalibrate_batchnorm"]


def _norms(model: nn.Module) -> list[Any]:
    from torch.nn.modules.batchnorm import _BatchNorm

    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that tracks running statistics."""
    return bool(_norms(model))


def recalibrate_batchnorm(model: nn.Module, task: Task[Any], batches: int = 16) -> int:
    """Re-estimate the running statistics of every BatchNorm of ``model`` on ``batches`` training batches.

    The statistics are reset and accumulated as a plain average over the batches (``momentum=None``);
    nothing else changes: no gradient, no weight, and every other module (dropout included) runs in eval
    mode. Batches move to the device of the model's parameters. Returns the number of batches used (0 when
    the model has no BatchNorm or ``batches`` is 0); ``model`` is left in eval mode.
    """
    import torch

    norms = _norms(model)
    if not norms or batches <= 0:
        return 0
    device = next((p.device for p in model.parameters()), None)
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in islice(iter(task.train_data()), batches):
                inputs = task.inputs(batch)
                if device is not None:
                    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
                model(*inputs)
                used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return used
