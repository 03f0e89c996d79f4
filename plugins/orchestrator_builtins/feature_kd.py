"""Distiller ``feature-kd``: match hidden representations of the teacher, block by block, plus ``kd``.

The matched points are the teacher's droppable blocks (residual blocks, transformer layers: for
``minilm`` the hidden states after each encoder layer), or, in a model without blocks, the outputs of its
compressible layers except the output layer. Each is paired with the student module that comes from it:
the module of the same name, or, after the ``depth`` pruner removed layers from a stack, the layer that
moved up (it keeps its original name); dropped blocks have no partner and are skipped. Where the
student's width differs from the teacher's (channel pruning), a small learned adapter (a 1x1 convolution
for feature maps, a Linear layer for hidden states) maps the student's features to the teacher's width;
adapters are trained with the student and discarded after.

The loss is ``kd``'s logit loss plus ``beta`` times the mean over pairs of the squared error of the
(adapted) student features, relative to the teacher features' mean square.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import Batch, Distiller, PlanError, RecoveryMonitor, Task, hookimpl
from orchestrator.layers import ORIGIN_ATTR, compressible_layers, droppable_blocks, output_layers
from orchestrator_builtins.kd import KDOptions, logit_loss
from orchestrator_builtins.recovery import train

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["FeatureKD", "FeatureKDOptions", "feature_pairs"]


class FeatureKDOptions(KDOptions):
    #: weight of the feature-matching term
    beta: float = Field(default=1.0, ge=0)
    #: teacher modules to match (default: every droppable block, else every hidden compressible layer)
    blocks: list[str] | None = None


def feature_pairs(
    student: nn.Module, teacher: nn.Module, example_inputs: tuple[Any, ...], blocks: list[str] | None = None
) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(teacher name, student module, teacher module)`` for every matched point still in the student."""
    from torch import nn

    names = blocks or droppable_blocks(teacher, example_inputs)
    if not names:
        outputs = set(output_layers(teacher, example_inputs))
        names = [n for n in compressible_layers(teacher) if n not in outputs]
    origin = {getattr(m, ORIGIN_ATTR, n): m for n, m in student.named_modules()}
    pairs = []
    for name in names:
        mine = origin.get(name)
        if mine is not None and not isinstance(mine, nn.Identity):
            pairs.append((name, mine, teacher.get_submodule(name)))
    return pairs


class FeatureKD(Distiller[FeatureKDOptions]):
    """Distillation of hidden features (with width adapters) and logits."""

    name: ClassVar[str] = "feature-kd"
    Options = FeatureKDOptions
    summary: ClassVar[str] = "block-by-block feature matching with width adapters, plus logit kd"

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
        pairs = feature_pairs(student, teacher, task.example_inputs(2), self.options.blocks)
        if not pairs:
            raise PlanError(
                "feature-kd found no teacher block or layer left in the student to match; use kd",
                field="pipeline.distiller",
            )
        captured: dict[int, Any] = {}

        def keep(module: nn.Module, _inputs: Any, out: Any) -> None:
            captured[id(module)] = _first(out)

        hooks = [module.register_forward_hook(keep) for _, s, t in pairs for module in (s, t)]
        adapters = _adapters(student, teacher, pairs, task, captured)
        opts = self.options

        def loss_of(batch: Batch) -> Any:
            inputs = task.inputs(batch)
            with torch.no_grad():
                teacher_out = teacher(*inputs)
                targets = [captured[id(t)] for _, _, t in pairs]
            student_out = student(*inputs)
            feature = sum(
                _relative_mse(adapter(captured[id(s)]), target)
                for (_, s, _), adapter, target in zip(pairs, adapters, targets, strict=True)
            ) / len(pairs)
            return logit_loss(student_out, teacher_out, batch, task, opts) + opts.beta * feature

        try:
            train(student, task, loss_of, opts, extra_parameters=adapters.parameters(), monitor=monitor)
        finally:
            for hook in hooks:
                hook.remove()
        return student.eval()


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple | list) else out


def _relative_mse(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return ((got - want) ** 2).mean() / (want**2).mean().clamp_min(1e-8)


def _adapters(
    student: nn.Module,
    teacher: nn.Module,
    pairs: list[tuple[str, nn.Module, nn.Module]],
    task: Task[Any],
    captured: dict[int, Any],
) -> nn.ModuleList:
    """One adapter per pair: identity where widths agree, else a 1x1 conv or Linear, from one forward."""
    import torch
    from torch import nn

    inputs = task.example_inputs(2)
    with torch.no_grad():
        student.eval()
        student(*inputs)
        teacher(*inputs)
    adapters = nn.ModuleList()
    for name, s, t in pairs:
        got, want = captured[id(s)], captured[id(t)]
        if got.shape == want.shape:
            adapters.append(nn.Identity())
        elif got.dim() == 4 and got.shape[2:] == want.shape[2:]:
            adapters.append(nn.Conv2d(got.shape[1], want.shape[1], kernel_size=1, bias=False))
        elif got.shape[:-1] == want.shape[:-1]:
            adapters.append(nn.Linear(got.shape[-1], want.shape[-1], bias=False))
        else:
            raise PlanError(
                f"feature-kd cannot match '{name}': student features {tuple(got.shape)}, teacher "
                f"{tuple(want.shape)}",
                field="pipeline.distiller.options.blocks",
            )
    return adapters


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(FeatureKD)
