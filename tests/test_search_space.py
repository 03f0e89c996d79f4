from __future__ import annotations

import optuna
import pytest
import torch
from torch import nn

from orchestrator import PolicyError, parse_policy
from orchestrator.budget import Budget, parse_budget
from orchestrator.space import SearchSpace

POLICY = """\
schema_version: 1
task: digits-cnn
search:
  space:
    - name: convs
      types: [Conv2d]
      exclude: ["conv1"]
      prune_ratio: [0.0, 0.8]
      step: 0.1
      bits: [8, 32]
      share: {share}
    - name: blocks
      layers: ["{blocks}"]
      drop: [false, true]
"""


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.block = _Residual(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.conv3(self.conv2(self.conv1(x))).mean(dim=(2, 3)))


EXAMPLE = (torch.randn(2, 1, 8, 8),)


def _space(share: bool = False, blocks: str = "block") -> SearchSpace:
    policy = parse_policy(POLICY.format(share=str(share).lower(), blocks=blocks), path="p.yaml")
    return SearchSpace.from_policy(policy, _Net(), EXAMPLE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50", Budget(trials=50)),
        (12, Budget(trials=12)),
        ("90s", Budget(seconds=90)),
        ("30m", Budget(seconds=1800)),
        ("2h", Budget(seconds=7200)),
    ],
)
def test_budget_forms(text: str | int, expected: Budget) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["0", "5x", "m", "-3"])
def test_bad_budget_is_named(text: str) -> None:
    with pytest.raises(PolicyError, match="budget"):
        parse_budget(text)


def test_rules_resolve_with_globs_types_and_exclusions() -> None:
    space = _space()
    # droppable blocks come first, so layers inside a dropped block get no variables
    assert [s.layer for s in space.layers] == ["block", "conv2", "conv3"]


def test_rule_selecting_nothing_names_the_rule_and_line() -> None:
    with pytest.raises(PolicyError) as info:
        _space(blocks="nothing.*")
    assert "rule 'blocks' selects no layer" in str(info.value)
    assert info.value.line == 12


def test_drop_rules_take_no_ratio_or_bits() -> None:
    text = POLICY.format(share="false", blocks="block").replace(
        "      drop: [false, true]\n", "      drop: [false, true]\n      bits: [8, 32]\n"
    )
    with pytest.raises(PolicyError, match="takes no prune_ratio and no bits") as info:
        parse_policy(text, path="p.yaml")
    assert info.value.field == "search.space.1"


def test_dropped_layer_gets_no_bits_and_shared_rules_one_variable() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = _space(share=True)
    study.enqueue_trial({"block.drop": True, "convs.prune_ratio": 0.3, "convs.bits": 8})
    trial = study.ask()
    plan = space.sample(trial)
    assert plan.layers["block"].drop
    assert "block.fc.bits" not in trial.params
    assert plan.layers["conv2"] == plan.layers["conv3"]
    assert plan.layers["conv2"].prune_ratio == pytest.approx(0.3)
    assert set(trial.params) == {"block.drop", "convs.prune_ratio", "convs.bits"}


def test_reference_plans_are_unchanged_int8_and_uniform() -> None:
    refs = _space().reference_params()
    assert [(r["conv2.prune_ratio"], r["conv2.bits"]) for r in refs] == [
        (0.0, 32),
        (0.0, 8),
        (pytest.approx(0.4), 32),
        (pytest.approx(0.4), 8),
    ]
    assert all(r["block.drop"] is False for r in refs)


def test_priors_shrink_the_range_of_important_layers() -> None:
    space = _space()
    importance = {"conv2": 1.0, "conv3": 0.0}
    shaped = {s.layer: s for s in space.narrowed(importance, strength=0.8).layers}
    assert shaped["conv3"].ratio_high == pytest.approx(0.8)
    assert shaped["conv2"].ratio_high == pytest.approx(0.1)  # 0.8 * 0.2 = 0.16, on the 0.1 grid
    assert shaped["conv2"].ratio_low == 0.0


def test_ordered_drops_offer_the_least_important_blocks_first() -> None:
    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = _Residual(4)
            self.b = _Residual(4)
            self.c = _Residual(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(self.a(x)))

    text = (
        "schema_version: 1\ntask: digits-cnn\nsearch:\n  space:\n"
        "    - layers: ['*']\n      drop: [false, true]\n"
        "    - layers: ['*']\n      types: [Linear]\n      bits: [8, 32]\n"
    )
    blocks = Blocks()
    space = SearchSpace.from_policy(parse_policy(text), blocks, (torch.randn(2, 4),))
    space = space.ordered_drops(["b", "c", "a"])
    study = optuna.create_study()
    study.enqueue_trial({"drop.count": 2, "a.fc.bits": 8})
    trial = study.ask()
    plan = space.sample(trial)
    assert plan.dropped() == ["b", "c"]
    assert plan.layers["a.fc"].bits == 8
    assert set(trial.params) == {"drop.count", "a.fc.bits"}  # nothing sampled inside b and c
    warm = space.warm_start_params(3)
    assert [p["drop.count"] for p in warm] == [0, 1, 2]


def test_a_later_rule_gives_the_variables_an_earlier_one_left_alone() -> None:
    """Ratios from one rule, shared bits from the next: the layers of both get both variables."""
    text = """\
schema_version: 1
task: digits-cnn
search:
  space:
    - name: inner
      layers: [conv2, conv3]
      prune_ratio: [0.0, 0.5]
    - name: int8
      types: [Conv2d, Linear]
      bits: [8, 32]
      share: true
    - name: kept
      layers: [conv1]
      prune_ratio: 0.3
"""
    space = SearchSpace.from_policy(parse_policy(text, path="p.yaml"), _Net(), EXAMPLE)
    by_layer = {s.layer: s for s in space.layers}
    assert by_layer["conv2"].ratio_searched
    assert by_layer["conv2"].bits == (8, 32)
    assert by_layer["conv1"].bits == (8, 32)
    assert not by_layer["conv1"].ratio_searched
    assert by_layer["conv1"].prune_ratio == 0.3  # the int8 rule gave conv1 no ratio: the next rule does
    study = optuna.create_study()
    plan = space.sample(study.ask({}))
    names = set(study.trials[0].params)
    assert names == {"conv2.prune_ratio", "conv3.prune_ratio", "int8.bits"}
    bits = {plan.decision(n).bits for n in ("conv1", "conv2", "conv3", "block.fc")}
    assert len(bits) == 1  # one shared choice for every layer


def test_a_rule_that_gives_no_variable_keeps_its_layers_unchanged() -> None:
    text = """\
schema_version: 1
task: digits-cnn
search:
  space:
    - name: keep
      layers: [conv1]
    - name: convs
      types: [Conv2d]
      prune_ratio: [0.0, 0.5]
      bits: [8, 32]
"""
    space = SearchSpace.from_policy(parse_policy(text, path="p.yaml"), _Net(), EXAMPLE)
    conv1 = next(s for s in space.layers if s.layer == "conv1")
    assert not conv1.ratio_searched
    assert conv1.bits == (32,)
