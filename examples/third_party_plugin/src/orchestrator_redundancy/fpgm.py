"""Pruner ``fpgm``: structured channel pruning by geometric median (He et al., CVPR 2019).

Filters near the geometric median of their layer are the ones the others can best stand in for. For each
layer whose plan gives a ``prune_ratio``, a filter's importance is its summed Euclidean distance to the
other filters of the layer (and of every layer pruned with it, such as the other members of a residual
sum); that fraction of the output channels with the smallest sums is removed. torch-pruning removes them
for real, with everything coupled to them (the BatchNorm, the next layer's inputs), so the model gets
smaller and faster.

Layers that produce the model's output cannot be pruned. Other decisions (``bits``, ``drop``) are left to
the rest of the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import ComponentOptions, CompressionPlan, PlanError, Pruner, Scores, Task
from orchestrator.layers import compressible_layers, output_layers

if TYPE_CHECKING:
    import torch
    from torch import nn


class FPGMOptions(ComponentOptions):
    #: the norm of the distance between filters
    p: float = Field(default=2.0, gt=0)
    #: keep channel counts multiples of this
    round_to: int | None = Field(default=None, ge=1)


class GeometricMedianImportance:
    """A torch-pruning importance: per output channel of a group, the summed distance of its filters to
    the other filters of the same layer."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, group: Any) -> torch.Tensor | None:
        import torch
        import torch_pruning as tp

        total = torch.zeros(len(group[0].idxs), dtype=torch.float64)  # one per channel of the group's root
        found = False
        for item in group.items:
            if item.dep.pruning_fn not in (tp.prune_conv_out_channels, tp.prune_linear_out_channels):
                continue
            weight = item.dep.layer.weight.detach()
            if getattr(item.dep.layer, "transposed", False):
                weight = weight.transpose(0, 1)
            filters = weight[list(item.idxs)].flatten(1).double()
            distance = torch.cdist(filters[None], filters[None], p=self.p)[0].sum(0)
            total.scatter_add_(0, torch.tensor(item.root_idxs), distance)
            found = True
        return total if found else None


class FPGMPruner(Pruner[FPGMOptions]):
    """Removes the output channels whose filters lie nearest their layer's geometric median."""

    name: ClassVar[str] = "fpgm"
    Options = FPGMOptions

    def prune(
        self, model: nn.Module, plan: CompressionPlan, task: Task[Any], *, scores: Scores | None = None
    ) -> nn.Module:
        import torch_pruning as tp

        ratios = plan.prune_ratios()
        if not ratios:
            return model
        layers = compressible_layers(model)
        example = task.example_inputs(2)
        outputs = set(output_layers(model, example))
        for name in ratios:
            if name not in layers or name in outputs:
                why = "is not a convolution or linear layer" if name not in layers else "produces the output"
                raise PlanError(f"fpgm cannot prune '{name}': it {why}", field=f"plan.layers.{name}")
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=GeometricMedianImportance(self.options.p),
            pruning_ratio=0.0,
            pruning_ratio_dict={layers[name]: ratio for name, ratio in ratios.items()},
            ignored_layers=[layers[name] for name in outputs],
            round_to=self.options.round_to,
        )
        pruner.step()
        return model
