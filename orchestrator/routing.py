"""Several quantizers in one policy: each quantized layer goes to the first quantizer that can take it,
unless its plan names one (``quantizer: inc``).

``pipeline.quantizer: [torch-int8, inc]`` sends 8-bit convolutions and Linear layers to ``torch-int8``
(real int8 kernels, faster) and 2-4 bit layers to ``inc`` (weight-only, smaller); the quantizers run in
the listed order, each on the layers routed to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.errors import PlanError
from orchestrator.layers import compressible_layers
from orchestrator.plan import CompressionPlan, LayerDecision

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

    from orchestrator.components import Quantizer

__all__ = ["relocate", "route_bits", "routed_plans", "supported_bits"]


def supported_bits(quantizers: Sequence[Quantizer[Any]]) -> frozenset[int]:
    """Every bit-width at least one of ``quantizers`` applies (32 = float is always fine)."""
    return frozenset().union(*(q.supported_bits for q in quantizers))


def route_bits(
    quantizers: Sequence[Quantizer[Any]],
    layers: Mapping[str, nn.Module],
    bits: Mapping[str, int],
    chosen: Mapping[str, str] | None = None,
) -> list[dict[str, int]]:
    """``{layer: bits}`` for each quantizer, in order; :class:`PlanError` for a layer none can take.

    ``chosen`` names the quantizer of some layers (the plan's ``quantizer:``); the others go to the
    first quantizer that handles their type and bits.
    """
    routed: list[dict[str, int]] = [{} for _ in quantizers]
    names = [q.name for q in quantizers]
    for name, b in bits.items():
        layer = layers.get(name)
        kind = type(layer).__name__ if layer is not None else "unknown layer"
        wanted = (chosen or {}).get(name)
        if wanted is not None:
            if wanted not in names:
                raise PlanError(
                    f"layer '{name}' asks for quantizer '{wanted}', which the policy's pipeline does not "
                    f"have (it has: {', '.join(names) or 'none'})",
                    field=f"plan.layers.{name}.quantizer",
                )
            index = names.index(wanted)
            if layer is None or not quantizers[index].handles(layer, b):
                raise PlanError(
                    f"quantizer '{wanted}' cannot bring layer '{name}' ({kind}) to {b} bits; it takes "
                    f"{quantizers[index].describe_support()}",
                    field=f"plan.layers.{name}.quantizer",
                )
            routed[index][name] = b
            continue
        for index, quantizer in enumerate(quantizers):
            if layer is not None and quantizer.handles(layer, b):
                routed[index][name] = b
                break
        else:
            offers = "; ".join(f"'{q.name}': {q.describe_support()}" for q in quantizers) or "no quantizer"
            raise PlanError(
                f"no quantizer of the policy can bring layer '{name}' ({kind}) to {b} bits ({offers})",
                field=f"plan.layers.{name}.bits",
            )
    return routed


def routed_plans(
    quantizers: Sequence[Quantizer[Any]], layers: Mapping[str, nn.Module], plan: CompressionPlan
) -> list[tuple[Quantizer[Any], CompressionPlan]]:
    """Each quantizer with the plan of the layers routed to it (quantizers with none are left out)."""
    out = []
    routes = route_bits(quantizers, layers, plan.bits(), plan.quantizers())
    for quantizer, bits in zip(quantizers, routes, strict=True):
        if bits:
            layer_bits = {n: LayerDecision(bits=b) for n, b in bits.items()}
            out.append((quantizer, CompressionPlan(layers=layer_bits)))
    return out


def relocate(plan: CompressionPlan, model: nn.Module) -> CompressionPlan:
    """``plan`` with names moved onto the layers of ``model`` as an earlier quantizer left it.

    FX int8 fuses a float conv with its BatchNorm and ReLU into one module (``ConvReLU2d``) whose first
    child is the conv with the BatchNorm folded in: a decision for ``name`` then belongs to ``name.0``.
    """
    layers = compressible_layers(model)
    moved = {}
    for name, decision in plan.layers.items():
        inner = f"{name}.0"
        moved[inner if name not in layers and inner in layers else name] = decision
    return CompressionPlan(layers=moved)
