"""Pruner ``depth``: drops whole residual blocks and whole layers of transformer stacks.

A plan drops a block with ``drop: true``. A residual block (``x + f(x)``, same shape in and out) is
replaced by ``nn.Identity()``; an item of an ``nn.ModuleList`` stack of identical layers is removed from
the list (and ``model.config.num_hidden_layers`` follows, when the model has such a config). Which blocks
are droppable is found on the model itself (``orchestrator.layers.droppable_blocks``); a plan that drops
anything else is refused before the model is touched.

Channel decisions (``prune_ratio``) are left to the next pruner of the pipeline, e.g.::

    pruner: [{name: depth}, {name: torch-pruning, options: {round_to: 8}}]
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import ComponentOptions, CompressionPlan, PlanError, Pruner, Scores, Task, hookimpl
from orchestrator.layers import ORIGIN_ATTR, droppable_blocks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn


class DepthOptions(ComponentOptions):
    #: droppable blocks that must stay under every parent (a ResNet stage, a transformer stack)
    min_kept: int = Field(default=0, ge=0)


class DepthPruner(Pruner[DepthOptions]):
    """Drops whole residual blocks (replaced by identity) and layers of transformer stacks."""

    name: ClassVar[str] = "depth"
    Options = DepthOptions
    structured: ClassVar[bool] = True
    handles_drop: ClassVar[bool] = True

    def prune(
        self, model: nn.Module, plan: CompressionPlan, task: Task[Any], *, scores: Scores | None = None
    ) -> nn.Module:
        dropped = plan.dropped()
        if not dropped:
            return model
        example = task.example_inputs(2)
        droppable = droppable_blocks(model, example)
        self._check(model, dropped, droppable)
        shape = _output_shape(model, example)
        drop_blocks(model, dropped)
        if _output_shape(model, example, dropped) != shape:
            raise PlanError(f"dropping {', '.join(dropped)} changes the shape of the model's output")
        return model

    def _check(self, model: nn.Module, dropped: Sequence[str], droppable: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        listing = ", ".join(droppable) or "none"
        for name in dropped:
            if name in droppable:
                continue
            what = (
                f"the model has no module '{name}'"
                if name not in modules
                else f"module '{name}' ({type(modules[name]).__name__}) cannot be dropped: it is neither "
                "a residual block with the same input and output shape nor a layer of a stack of "
                "identical layers"
            )
            raise PlanError(f"{what}; droppable blocks: {listing}", field=f"plan.layers.{name}.drop")
        self._check_min_kept(dropped, droppable)

    def _check_min_kept(self, dropped: Sequence[str], droppable: Sequence[str]) -> None:
        total = Counter(_parent(n) for n in droppable)
        gone = Counter(_parent(n) for n in droppable if n in dropped)
        for parent, count in gone.items():
            if total[parent] - count < self.options.min_kept:
                last = next(n for n in reversed(dropped) if _parent(n) == parent)
                raise PlanError(
                    f"the plan drops {count} of the {total[parent]} droppable blocks of '{parent}' but "
                    f"the depth pruner's min_kept is {self.options.min_kept}",
                    field=f"plan.layers.{last}.drop",
                )


def drop_blocks(model: nn.Module, names: Sequence[str]) -> None:
    """Remove the named blocks from ``model`` in place (no check that they are droppable).

    Items of an ``nn.ModuleList`` are deleted from it (later items move up, each keeping its original
    name in the attribute ``ORIGIN_ATTR``); any other block is replaced by ``nn.Identity()``. A name
    inside another dropped block is skipped: it is gone with its parent.
    """
    from torch import nn

    outermost = [n for n in names if not any(n.startswith(f"{other}.") for other in names)]
    stacks: dict[str, list[int]] = {}
    for name in outermost:
        parent_name, key = _parent(name), name.rpartition(".")[2]
        parent = model.get_submodule(parent_name)
        if isinstance(parent, nn.ModuleList):
            stacks.setdefault(parent_name, []).append(int(key))
        else:
            setattr(parent, key, nn.Identity())
    for parent_name, indices in stacks.items():
        stack = model.get_submodule(parent_name)
        assert isinstance(stack, nn.ModuleList)
        before = len(stack)
        for index, item in enumerate(stack):  # where each kept layer came from, for feature-kd
            if not hasattr(item, ORIGIN_ATTR):
                setattr(item, ORIGIN_ATTR, f"{parent_name}.{index}")
        for index in sorted(indices, reverse=True):  # from the end, so indices stay valid
            del stack[index]
        _update_config(model, before, len(stack))


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _update_config(model: nn.Module, before: int, after: int) -> None:
    """Keep a Hugging Face style ``config.num_hidden_layers`` equal to the stack's length."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_hidden_layers", None) == before:
        config.num_hidden_layers = after


def _output_shape(
    model: nn.Module, example: tuple[Any, ...], dropped: Sequence[str] = ()
) -> tuple[int, ...] | None:
    """Shape of the model's (first) output; a failing forward after dropping is a plan error."""
    import torch

    modes = {module: module.training for module in model.modules()}
    model.eval()  # a forward in training mode would update BatchNorm statistics
    try:
        with torch.no_grad():
            out = model(*example)
    except Exception as exc:
        if not dropped:
            raise
        raise PlanError(
            f"the model no longer runs after dropping {', '.join(dropped)}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for module, training in modes.items():
            module.training = training
    first = out[0] if isinstance(out, tuple | list) else getattr(out, "last_hidden_state", out)
    return tuple(first.shape) if isinstance(first, torch.Tensor) else None


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(DepthPruner)
