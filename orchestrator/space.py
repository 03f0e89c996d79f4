"""The search space: policy rules resolved against a model, sampled define-by-run."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.layers import compressible_layers
from orchestrator.plan import FLOAT_BITS, CompressionPlan, LayerDecision

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from orchestrator.policy import Policy, SearchRule

__all__ = ["LayerSpace", "SearchSpace"]


@dataclass(frozen=True)
class LayerSpace:
    """The variables of one layer: fixed values or ranges/choices, and the name they are sampled under."""

    layer: str
    key: str
    prune_ratio: float | tuple[float, float]
    step: float | None
    bits: tuple[int, ...]
    drop: tuple[bool, ...]

    @property
    def ratio_searched(self) -> bool:
        return isinstance(self.prune_ratio, tuple) and self.prune_ratio[0] < self.prune_ratio[1]

    @property
    def ratio_low(self) -> float:
        return self.prune_ratio[0] if isinstance(self.prune_ratio, tuple) else self.prune_ratio

    @property
    def ratio_high(self) -> float:
        return self.prune_ratio[1] if isinstance(self.prune_ratio, tuple) else self.prune_ratio


def _selects(rule: SearchRule, name: str, module: nn.Module) -> bool:
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.layers):
        return False
    if rule.types and type(module).__name__ not in rule.types:
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.exclude)


class SearchSpace:
    """Per-layer variables of a policy's ``search.space`` for one model."""

    def __init__(self, layers: Iterable[LayerSpace]) -> None:
        self.layers = list(layers)

    @classmethod
    def from_policy(cls, policy: Policy, model: nn.Module) -> SearchSpace:
        """Resolve the rules; a rule that selects no layer is an error naming the rule."""
        assert policy.search is not None
        compressible = compressible_layers(model)
        everything = {n: m for n, m in model.named_modules() if n}
        taken: dict[str, LayerSpace] = {}
        for index, rule in enumerate(policy.search.space):
            label = rule.name or f"rule{index}"
            droppable = rule.drop is True or (isinstance(rule.drop, list) and True in rule.drop)
            universe = everything if droppable else compressible
            selected = [n for n, m in universe.items() if _selects(rule, n, m)]
            if not selected:
                raise policy.error(
                    f"rule '{label}' selects no layer; the model's layers are: {', '.join(compressible)}",
                    ("search", "space", index),
                )
            bits = tuple(rule.bits) if isinstance(rule.bits, list) else (rule.bits or FLOAT_BITS,)
            drop = tuple(rule.drop) if isinstance(rule.drop, list) else (rule.drop,)
            for name in selected:
                if name in taken:
                    continue
                taken[name] = LayerSpace(
                    layer=name,
                    key=label if rule.share else name,
                    prune_ratio=rule.prune_ratio,
                    step=rule.step,
                    bits=bits,
                    drop=drop,
                )
        return cls(taken.values())

    def bit_choices(self) -> set[int]:
        return {b for layer in self.layers for b in layer.bits}

    def sample(self, trial: optuna.Trial) -> CompressionPlan:
        """Sample a plan. A dropped layer gets no ratio and no bits (define-by-run)."""
        decisions: dict[str, LayerDecision] = {}
        for space in self.layers:
            drop = space.drop[0]
            if len(space.drop) > 1:
                drop = bool(trial.suggest_categorical(f"{space.key}.drop", list(space.drop)))
            if drop:
                decisions[space.layer] = LayerDecision(drop=True)
                continue
            ratio = space.ratio_low
            if space.ratio_searched:
                ratio = round(
                    trial.suggest_float(
                        f"{space.key}.prune_ratio", space.ratio_low, space.ratio_high, step=space.step
                    ),
                    6,
                )
            bits = space.bits[0]
            if len(space.bits) > 1:
                bits = int(trial.suggest_categorical(f"{space.key}.bits", list(space.bits)))
            decision = LayerDecision(prune_ratio=ratio, bits=None if bits == FLOAT_BITS else bits)
            if not decision.is_noop:
                decisions[space.layer] = decision
        return CompressionPlan(layers=decisions)

    def reference_params(self) -> list[dict[str, Any]]:
        """Params of the reference plans: unchanged model, all-int8, uniform ratios in float and in int8."""
        plans: list[dict[str, Any]] = []
        for kind in ("unchanged", "int8", "uniform", "uniform-int8"):
            params: dict[str, Any] = {}
            for space in self.layers:
                if len(space.drop) > 1:
                    params[f"{space.key}.drop"] = False
                if space.ratio_searched:
                    ratio = space.ratio_low
                    if kind.startswith("uniform"):
                        ratio = (space.ratio_low + space.ratio_high) / 2
                        if space.step:
                            ratio = (
                                space.ratio_low + round((ratio - space.ratio_low) / space.step) * space.step
                            )
                    params[f"{space.key}.prune_ratio"] = ratio
                if len(space.bits) > 1:
                    want = 8 if kind.endswith("int8") else FLOAT_BITS
                    params[f"{space.key}.bits"] = want if want in space.bits else max(space.bits)
            if params and params not in plans:
                plans.append(params)
        return plans
