"""CompressionPlan: the concrete per-layer decisions for one model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field, field_validator, model_validator

from orchestrator._strict import StrictBase
from orchestrator.errors import PlanError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["FLOAT_BITS", "VALID_BITS", "CompressionPlan", "LayerDecision", "rename"]

#: ``bits: 32`` (or no bits) keeps a layer in float
FLOAT_BITS = 32
VALID_BITS = frozenset({2, 3, 4, 5, 6, 7, 8, 16, FLOAT_BITS})


class LayerDecision(StrictBase):
    """What happens to one layer: the fraction of output channels removed, its bit-width, or removal."""

    #: fraction of the layer's output channels removed (0 keeps them all)
    prune_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: weight bits (2, 3, 4, 8; 32 or none = float)
    bits: int | None = None
    #: remove the whole block (``depth`` pruner; droppable blocks only)
    drop: bool = False
    #: the quantizer of the pipeline that takes this layer; by default the first that handles its bits
    quantizer: str | None = None

    @field_validator("bits")
    @classmethod
    def _valid_bits(cls, bits: int | None) -> int | None:
        if bits is not None and bits not in VALID_BITS:
            raise ValueError(f"bits must be one of {sorted(VALID_BITS)} (32 = float), not {bits}")
        return bits

    @model_validator(mode="after")
    def _consistent(self) -> LayerDecision:
        if self.drop and (self.prune_ratio or self.is_quantized):
            raise ValueError("a dropped layer takes no prune_ratio and no bits")
        if self.quantizer is not None and not self.is_quantized:
            raise ValueError("'quantizer' needs bits below 32")
        return self

    @property
    def is_quantized(self) -> bool:
        return self.bits is not None and self.bits != FLOAT_BITS

    @property
    def is_noop(self) -> bool:
        return not (self.prune_ratio or self.is_quantized or self.drop)


class CompressionPlan(StrictBase):
    """Per-layer decisions keyed by qualified module name (``model.get_submodule(name)``).

    Layers the plan does not name are left unchanged.
    """

    #: decision per qualified module name
    layers: dict[str, LayerDecision] = Field(default_factory=dict)

    def decision(self, name: str) -> LayerDecision:
        return self.layers.get(name, _NOOP)

    def prune_ratios(self) -> dict[str, float]:
        return {n: d.prune_ratio for n, d in self.layers.items() if d.prune_ratio > 0}

    def bits(self) -> dict[str, int]:
        return {n: d.bits for n, d in self.layers.items() if d.bits is not None and d.is_quantized}

    def quantizers(self) -> dict[str, str]:
        """Layers whose plan names the quantizer that takes them."""
        return {n: d.quantizer for n, d in self.layers.items() if d.quantizer is not None}

    def dropped(self) -> list[str]:
        return [n for n, d in self.layers.items() if d.drop]

    def without_dropped_descendants(self) -> CompressionPlan:
        """The plan without decisions for layers inside a dropped block (they are gone with it)."""
        dropped = self.dropped()
        kept = {n: d for n, d in self.layers.items() if not any(n.startswith(f"{b}.") for b in dropped)}
        return self if len(kept) == len(self.layers) else CompressionPlan(layers=kept)

    def renamed(self, moved: Mapping[str, str]) -> CompressionPlan:
        """The plan with names under a moved module (``moved``: old prefix -> new) rewritten."""
        if not moved:
            return self
        return CompressionPlan(layers={rename(n, moved): d for n, d in self.layers.items()})

    @property
    def is_identity(self) -> bool:
        return all(d.is_noop for d in self.layers.values())

    def check_layers(self, known: Iterable[str]) -> None:
        """Raise :class:`PlanError` naming every layer the model does not have."""
        import difflib

        known_list = list(known)
        unknown = [n for n in self.layers if n not in known_list]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, known_list, n=1)
                hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise PlanError(
                f"the model has no layer {', '.join(hints)}; its layers are: {', '.join(known_list)}",
                field="plan.layers",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"layers": {n: d.model_dump(exclude_defaults=True) for n, d in self.layers.items()}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CompressionPlan:
        return cls.model_validate(dict(data))

    @classmethod
    def from_yaml(cls, text: str) -> CompressionPlan:
        return cls.from_mapping(yaml.safe_load(text) or {})


_NOOP = LayerDecision()


def rename(name: str, moved: Mapping[str, str]) -> str:
    """``name`` with its longest prefix found in ``moved`` (old -> new qualified name) replaced."""
    prefixes = [old for old in moved if name == old or name.startswith(f"{old}.")]
    if not prefixes:
        return name
    old = max(prefixes, key=len)
    return moved[old] + name[len(old) :]
