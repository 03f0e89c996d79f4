"""What a pipeline can carry out, against what a plan or a search rule asks for. One set of rules for a
policy (checked before any work, with file and line) and for a plan handed to a pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.plan import FLOAT_BITS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from orchestrator.plan import LayerDecision

__all__ = ["PipelineSteps", "asked_by"]


def asked_by(decision: LayerDecision) -> dict[str, list[int]]:
    """The variables ``decision`` asks a pipeline for (``prune_ratio`` above 0, ``drop``, bits below 32),
    each with the bits it needs (for ``bits`` only)."""
    asked: dict[str, list[int]] = {}
    if decision.prune_ratio > 0:
        asked["prune_ratio"] = []
    if decision.drop:
        asked["drop"] = []
    if decision.bits is not None and decision.is_quantized:
        asked["bits"] = [decision.bits]
    return asked


class PipelineSteps:
    """The pruner and quantizer classes of a pipeline, by name, in order."""

    def __init__(self, pruners: Mapping[str, type[Any]], quantizers: Mapping[str, type[Any]]) -> None:
        self.pruners = dict(pruners)
        self.quantizers = dict(quantizers)
        self.by_ratio = [n for n, cls in self.pruners.items() if not getattr(cls, "handles_drop", False)]
        supported = (getattr(q, "supported_bits", ()) for q in self.quantizers.values())
        self.bits = frozenset[int]().union(*supported)

    def conflict(self) -> str | None:
        """Why the pipeline itself cannot work (two pruners applying every ratio), or None."""
        if len(self.by_ratio) < 2:
            return None
        return (
            f"pruners {', '.join(self.by_ratio)} would each apply every prune_ratio; keep one of them "
            "(a depth pruner may stand beside it)"
        )

    def lacks(self, variable: str, bits: Sequence[int] = ()) -> str | None:
        """Why the pipeline cannot give ``variable`` (with ``bits`` below 32), as ``sets ... but ...``;
        None if it can."""
        listing = f" (its pruners: {', '.join(self.pruners) or 'none'})"
        dropping = len(self.by_ratio) < len(self.pruners)
        missing = {
            "prune_ratio": "" if self.by_ratio else f"channel or weight pruner{listing}",
            "drop": "" if dropping else f"pruner that drops layers{listing}; add 'depth'",
            "bits": "" if self.quantizers else "pipeline.quantizer",
        }[variable]
        if missing:
            return f"sets {variable} but the policy has no {missing}"
        unsupported = sorted(set(bits) - self.bits - {FLOAT_BITS})
        if unsupported:
            return (
                f"sets bits {unsupported} but the quantizers ({', '.join(self.quantizers)}) support bits "
                f"{sorted(self.bits)} (and 32 = float)"
            )
        return None
