"""The search space: policy rules resolved against a model, sampled define-by-run."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.layers import compressible_layers
from orchestrator.plan import FLOAT_BITS, CompressionPlan, LayerDecision

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from orchestrator.policy import Policy, SearchRule

__all__ = ["DROP_COUNT", "LayerSpace", "SearchSpace", "rank_importance"]

#: name of the variable that drops the N least important blocks when drop candidates are ordered
DROP_COUNT = "drop.count"


@dataclass(frozen=True)
class LayerSpace:
    """The variables of one layer: fixed values or ranges/choices, and the name they are sampled under."""

    layer: str
    key: str
    prune_ratio: float | tuple[float, float]
    step: float | None
    bits: tuple[int, ...]
    drop: tuple[bool, ...]
    #: name the bits are sampled under, when a later rule than the ratio's gave them (default ``key``)
    bits_key: str | None = None

    @property
    def bits_name(self) -> str:
        return f"{self.bits_key or self.key}.bits"

    @property
    def ratio_searched(self) -> bool:
        return isinstance(self.prune_ratio, tuple) and self.prune_ratio[0] < self.prune_ratio[1]

    @property
    def ratio_low(self) -> float:
        return self.prune_ratio[0] if isinstance(self.prune_ratio, tuple) else self.prune_ratio

    @property
    def ratio_high(self) -> float:
        return self.prune_ratio[1] if isinstance(self.prune_ratio, tuple) else self.prune_ratio

    @property
    def droppable(self) -> bool:
        return True in self.drop

    def ratio_at(self, level: float) -> float:
        """The ratio ``level`` of the way from low to high, on the step grid."""
        ratio = self.ratio_low + (self.ratio_high - self.ratio_low) * level
        if self.step:
            ratio = self.ratio_low + round((ratio - self.ratio_low) / self.step) * self.step
        return round(min(max(ratio, self.ratio_low), self.ratio_high), 6)


def _selects(rule: SearchRule, name: str, module: nn.Module) -> bool:
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.layers):
        return False
    if rule.types and type(module).__name__ not in rule.types:
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.exclude)


def rank_importance(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores mapped to [0, 1] by rank: 0 for the least important layer, 1 for the most important."""
    order = sorted(scores, key=lambda n: scores[n])
    if len(order) == 1:
        return {order[0]: 0.5}
    return {name: i / (len(order) - 1) for i, name in enumerate(order)}


class SearchSpace:
    """Per-layer variables of a policy's ``search.space`` for one model.

    Layers that may be dropped are sampled first; a layer inside a dropped block gets no variables.
    With ``drop_order`` (least important first), one variable ``drop.count`` drops the first N of it
    instead of one yes/no variable per block.
    """

    def __init__(self, layers: Iterable[LayerSpace], *, drop_order: Sequence[str] = ()) -> None:
        self.layers = sorted(layers, key=lambda s: not s.droppable)  # stable: blocks first
        self.drop_order = [n for n in drop_order if any(s.layer == n and s.droppable for s in self.layers)]

    @classmethod
    def from_policy(
        cls, policy: Policy, model: nn.Module, example_inputs: tuple[Any, ...] | None = None
    ) -> SearchSpace:
        """Resolve the rules; a rule that selects no layer is an error naming the rule.

        A rule that offers ``drop`` selects among the droppable blocks (residual blocks, layers of a
        transformer stack), found on ``example_inputs``.
        """
        assert policy.search is not None
        compressible = compressible_layers(model)
        modules = dict(model.named_modules())
        blocks: dict[str, nn.Module] = {}
        if example_inputs is not None and any(r.drop not in (False, [False]) for r in policy.search.space):
            from orchestrator.layers import droppable_blocks

            blocks = {n: modules[n] for n in droppable_blocks(model, example_inputs)}
        taken: dict[str, LayerSpace] = {}
        given: dict[str, set[str]] = {}  # the variables a rule gave each layer
        for index, rule in enumerate(policy.search.space):
            label = rule.name or f"rule{index}"
            droppable = rule.drop is True or (isinstance(rule.drop, list) and True in rule.drop)
            universe = blocks if droppable else compressible
            selected = [n for n, m in universe.items() if _selects(rule, n, m)]
            if not selected:
                kind = "droppable blocks" if droppable else "layers"
                raise policy.error(
                    f"rule '{label}' selects no layer; the model's {kind} are: "
                    f"{', '.join(universe) or 'none'}",
                    ("search", "space", index),
                )
            bits = tuple(rule.bits) if isinstance(rule.bits, list) else (rule.bits or FLOAT_BITS,)
            drop = tuple(rule.drop) if isinstance(rule.drop, list) else (rule.drop,)
            # a rule that names neither variable keeps its layers as they are (both fixed)
            gives = {"prune_ratio", "bits"} & rule.model_fields_set or {"prune_ratio", "bits"}
            for name in selected:
                key = label if rule.share else name
                space = taken.get(name)
                if space is None:
                    taken[name] = LayerSpace(
                        layer=name,
                        key=key,
                        prune_ratio=rule.prune_ratio,
                        step=rule.step,
                        bits=bits,
                        drop=drop,
                    )
                    given[name] = set(gives)
                    continue
                # a later rule gives the variables the earlier ones left alone
                if "bits" in gives - given[name]:
                    space = dataclasses.replace(space, bits=bits, bits_key=key)
                if "prune_ratio" in gives - given[name]:
                    space = dataclasses.replace(
                        space,
                        prune_ratio=rule.prune_ratio,
                        step=rule.step,
                        key=key,
                        bits_key=space.bits_key or space.key,
                    )
                taken[name] = space
                given[name] |= gives
        return cls(taken.values())

    # -- shaping by scores ----------------------------------------------------------------------------
    def narrowed(self, importance: Mapping[str, float], *, strength: float) -> SearchSpace:
        """Ratio ranges shrunk by importance in [0, 1]: the most important layers get the smallest maxima.

        ``high' = low + (high - low) * max(0.1, 1 - strength * importance)``; layers sharing one
        variable use their mean importance; layers without a score keep their range.
        """
        by_key: dict[str, list[float]] = {}
        for space in self.layers:
            if space.layer in importance:
                by_key.setdefault(space.key, []).append(importance[space.layer])
        shaped = []
        for space in self.layers:
            values = by_key.get(space.key)
            if not space.ratio_searched or not values:
                shaped.append(space)
                continue
            mean = sum(values) / len(values)
            high = space.ratio_low + (space.ratio_high - space.ratio_low) * max(0.1, 1 - strength * mean)
            if space.step:
                high = space.ratio_low + max(1, int((high - space.ratio_low) / space.step)) * space.step
            shaped.append(dataclasses.replace(space, prune_ratio=(space.ratio_low, round(high, 6))))
        return SearchSpace(shaped, drop_order=self.drop_order)

    def ordered_drops(self, order: Sequence[str]) -> SearchSpace:
        """Drop candidates offered in ``order`` (least important first) through ``drop.count``."""
        return SearchSpace(self.layers, drop_order=order)

    # -- sampling -------------------------------------------------------------------------------------
    def bit_choices(self) -> set[int]:
        return {b for layer in self.layers for b in layer.bits}

    def sample(self, trial: optuna.Trial) -> CompressionPlan:
        """Sample a plan. A dropped layer gets no ratio and no bits (define-by-run)."""
        dropped: list[str] = []
        if self.drop_order:
            count = trial.suggest_int(DROP_COUNT, 0, len(self.drop_order))
            dropped = list(self.drop_order[:count])
        decisions: dict[str, LayerDecision] = {}
        for space in self.layers:
            if space.layer in dropped or any(space.layer.startswith(f"{d}.") for d in dropped):
                if space.layer in dropped:
                    decisions[space.layer] = LayerDecision(drop=True)
                continue
            drop = space.drop[0] if space.layer not in self.drop_order else False
            if len(space.drop) > 1 and space.layer not in self.drop_order:
                drop = bool(trial.suggest_categorical(f"{space.key}.drop", list(space.drop)))
            if drop:
                dropped.append(space.layer)
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
                bits = int(trial.suggest_categorical(space.bits_name, list(space.bits)))
            decision = LayerDecision(prune_ratio=ratio, bits=None if bits == FLOAT_BITS else bits)
            if not decision.is_noop:
                decisions[space.layer] = decision
        return CompressionPlan(layers=decisions)

    # -- enqueued plans -------------------------------------------------------------------------------
    def _params(self, level: float, bits: int, drop_count: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.drop_order:
            params[DROP_COUNT] = drop_count
        for space in self.layers:
            if len(space.drop) > 1 and space.layer not in self.drop_order:
                params[f"{space.key}.drop"] = False
            if space.ratio_searched:
                params[f"{space.key}.prune_ratio"] = space.ratio_at(level)
            if len(space.bits) > 1:
                params[space.bits_name] = bits if bits in space.bits else max(space.bits)
        return params

    def reference_params(self) -> list[dict[str, Any]]:
        """Params of the reference plans: unchanged model, all-int8, uniform ratios in float and in int8."""
        plans: list[dict[str, Any]] = []
        for level, bits in ((0.0, FLOAT_BITS), (0.0, 8), (0.5, FLOAT_BITS), (0.5, 8)):
            params = self._params(level, bits)
            if params and params not in plans:
                plans.append(params)
        return plans

    def warm_start_params(self, count: int) -> list[dict[str, Any]]:
        """Score-derived plans for a narrowed space: each layer at 50 %, 75 %, 100 % of its own range
        (so less important layers are pruned harder), int8 where offered, and more blocks dropped."""
        plans: list[dict[str, Any]] = []
        for level in (0.5, 0.75, 1.0, 0.9, 0.6)[:count]:
            drops = round(len(self.drop_order) * (level - 0.5))
            params = self._params(level, 8, drops)
            if params and params not in plans:
                plans.append(params)
        return plans
