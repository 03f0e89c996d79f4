from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator import CompressionPlan, LayerDecision, PlanError


def test_yaml_round_trip_keeps_every_decision() -> None:
    plan = CompressionPlan(
        layers={
            "features.conv1": LayerDecision(prune_ratio=0.5, bits=8),
            "blocks.2": LayerDecision(drop=True),
            "classifier.fc2": LayerDecision(bits=32),
        }
    )
    again = CompressionPlan.from_yaml(plan.to_yaml())
    assert again == plan
    assert again.bits() == {"features.conv1": 8}
    assert again.dropped() == ["blocks.2"]


@pytest.mark.parametrize(
    "decision",
    [{"prune_ratio": 1.0}, {"prune_ratio": -0.1}, {"bits": 12}, {"drop": True, "bits": 8}],
)
def test_invalid_decisions_are_refused(decision: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LayerDecision.model_validate(decision)


def test_unknown_layer_suggests_the_closest_name() -> None:
    plan = CompressionPlan(layers={"features.conv_1": LayerDecision(prune_ratio=0.5)})
    with pytest.raises(PlanError, match=r"did you mean 'features\.conv1'"):
        plan.check_layers(["features.conv1", "classifier.fc1"])


def test_renamed_follows_moved_prefixes_only() -> None:
    from orchestrator.plan import CompressionPlan

    plan = CompressionPlan.model_validate(
        {
            "layers": {
                "s.3.fc": {"bits": 8},
                "s.30.fc": {"bits": 8},
                "s.1": {"drop": True},
                "head": {"bits": 8},
            }
        }
    )
    moved = plan.renamed({"s.3": "s.1", "s.30": "s.28"})
    assert list(moved.layers) == ["s.1.fc", "s.28.fc", "s.1", "head"]
