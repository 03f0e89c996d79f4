"""The ``sparse`` pruner: per-layer magnitude sparsity that survives recovery, with honest accounting."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from orchestrator_builtins.sparse import decode_sparse_state, encode_sparse_state
from torch import nn
from typer.testing import CliRunner

from orchestrator import CompressionPlan, LayerDecision, PlanError
from orchestrator.artifact import load_artifact, save_artifact
from orchestrator.cli import app
from orchestrator.layers import compressible_layers

HIDDEN = ("features.conv2", "features.conv3", "classifier.fc1")


def _plan(ratios: dict[str, float]) -> CompressionPlan:
    return CompressionPlan(layers={n: LayerDecision(prune_ratio=r) for n, r in ratios.items()})


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_submodule(name).weight.detach()  # type: ignore[operator]


def _sparse(registry, task, ratios: dict[str, float], **options):  # type: ignore[no-untyped-def]
    model = copy.deepcopy(task.build_model())
    pruner = registry.components.create("pruner", "sparse", options)
    return pruner.prune(model, _plan(ratios), task), pruner


def test_each_layer_loses_its_planned_share_of_smallest_weights(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    base = digits_task.build_model()
    ratios = {"features.conv2": 0.5, "classifier.fc1": 0.8, "classifier.fc2": 0.3}  # fc2: the output layer
    model, _ = _sparse(registry, digits_task, ratios)
    for name, layer in compressible_layers(model).items():
        before, after = _weight(base, name), _weight(model, name)
        assert torch.equal(layer.bias, base.get_submodule(name).bias)  # type: ignore[arg-type]
        if name not in ratios:
            assert torch.equal(after, before), f"{name} is not in the plan but changed"
            continue
        zero = after == 0
        assert int(zero.sum()) == round(ratios[name] * after.numel())
        assert before[zero].abs().max() <= before[~zero].abs().min()  # the smallest went first
        assert torch.equal(after[~zero], before[~zero])
    assert model(*digits_task.example_inputs(3)).shape == (3, 10)


def test_2_4_keeps_the_two_largest_of_every_four_inputs(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    base = digits_task.build_model()
    layers = (*HIDDEN, "classifier.fc2")
    model, _ = _sparse(registry, digits_task, dict.fromkeys(layers, 0.5), pattern="2:4")
    for name in layers:
        # groups run along the inputs: input features, or input channels at each kernel position
        after = _weight(model, name).movedim(1, -1).reshape(-1, 4)
        before = _weight(base, name).movedim(1, -1).reshape(-1, 4).abs()
        kept = after != 0
        assert (kept.sum(dim=1) == 2).all(), name
        smallest_kept = before.masked_fill(~kept, float("inf")).min(dim=1).values
        largest_removed = before.masked_fill(kept, -1.0).max(dim=1).values
        assert (smallest_kept >= largest_removed).all(), name
    assert torch.equal(_weight(model, "features.conv1"), _weight(base, "features.conv1"))


@pytest.mark.parametrize("ratio", [0.3, 0.75])
def test_ratio_conflicting_with_the_pattern_names_the_layer(registry, digits_task, ratio: float) -> None:  # type: ignore[no-untyped-def]
    base = digits_task.build_model()
    model = copy.deepcopy(base)
    pruner = registry.components.create("pruner", "sparse", {"pattern": "2:4"})
    with pytest.raises(PlanError, match=r"'classifier\.fc1'.*2:4.*0\.5") as info:
        pruner.prune(model, _plan({"features.conv2": 0.5, "classifier.fc1": ratio}), digits_task)
    assert info.value.field == "plan.layers.classifier.fc1.prune_ratio"
    assert torch.equal(_weight(model, "features.conv2"), _weight(base, "features.conv2"))  # nothing done


def test_pattern_needs_whole_groups_of_inputs(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    pruner = registry.components.create("pruner", "sparse", {"pattern": "2:4"})
    with pytest.raises(PlanError, match=r"'features\.conv1': its input size 1 is not") as info:
        pruner.prune(digits_task.build_model(), _plan({"features.conv1": 0.5}), digits_task)
    assert info.value.field == "plan.layers.features.conv1.prune_ratio"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("2:4", "quoted string"), ('"4:2"', "0 < N < M"), ('"2-4"', "'N:M'")],
)
def test_bad_pattern_is_refused_at_validation(tmp_path: Path, pattern: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "schema_version: 1\ntask: digits-cnn\n"
        f"pipeline:\n  pruner:\n    name: sparse\n    options: {{pattern: {pattern}}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "pipeline.pruner.options.pattern" in result.output
    assert message in result.output


def test_sparse_model_has_plain_weights_and_saves_as_an_artifact(  # type: ignore[no-untyped-def]
    registry, digits_task, tmp_path: Path
) -> None:
    model, _ = _sparse(registry, digits_task, dict.fromkeys(HIDDEN, 0.5))
    assert model.state_dict().keys() == digits_task.build_model().state_dict().keys()
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    x = digits_task.example_inputs(4)
    save_artifact(model, digits_task.example_inputs(2), tmp_path / "model.pt")
    loaded = load_artifact(tmp_path / "model.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(*x), model(*x))
    saved = loaded.state_dict()["classifier.fc1.weight"]
    assert float((saved == 0).float().mean()) == pytest.approx(0.5)


def test_zeros_stay_through_distillation_with_weight_decay(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    teacher = digits_task.build_model()
    student, _ = _sparse(registry, digits_task, dict.fromkeys(HIDDEN, 0.6))
    before = {n: _weight(student, n).clone() for n in HIDDEN}
    kd = registry.components.create("distiller", "kd", {"max_steps": 4, "lr": 0.01, "weight_decay": 0.01})
    kd.distill(student, teacher, digits_task)
    for name in HIDDEN:
        after = _weight(student, name)
        assert torch.equal(after == 0, before[name] == 0), f"zeros of {name} moved or were revived"
        assert not torch.equal(after, before[name]), f"{name} was not trained"


def test_metrics_of_an_int8_model_count_its_int8_zeros(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model, pruner = _sparse(registry, digits_task, dict.fromkeys(HIDDEN, 0.5))
    dense = pruner.metrics(model)
    assert dense["sparsity"] == pytest.approx(0.5)
    assert dense["sparsity_total"] < dense["sparsity"]  # conv1 and fc2 are dense
    bits = CompressionPlan(layers={n: LayerDecision(bits=8) for n in compressible_layers(model)})
    quantized = registry.components.create("quantizer", "torch-int8").quantize(model, bits, digits_task)
    got = pruner.metrics(quantized)
    assert 0.5 <= got["sparsity"] < 0.55  # every sparsified layer is int8 now; rounding adds a few zeros
    assert got["sparsity_total"] >= dense["sparsity_total"]
    assert "sparse_size_bytes" not in got  # packed int8 weights have no sparse encoding


def test_sparse_encoding_is_lossless_and_never_larger(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model, pruner = _sparse(registry, digits_task, dict.fromkeys(HIDDEN, 0.5))
    state = model.state_dict()
    keys = {f"{n}.weight" for n in compressible_layers(model)}
    decoded = decode_sparse_state(encode_sparse_state(state, keys))
    assert decoded.keys() == state.keys()
    assert all(torch.equal(decoded[k], state[k]) for k in state)

    def saved(m: nn.Module) -> int:
        buffer = io.BytesIO()
        torch.save(m.state_dict(), buffer)
        return len(buffer.getvalue())

    assert pruner.metrics(model)["sparse_size_bytes"] < 0.6 * saved(model)
    base = digits_task.build_model()
    assert pruner.metrics(base)["sparse_size_bytes"] <= saved(base)  # dense weights stay dense


POLICY = """\
schema_version: 1
task: digits-cnn
pipeline:
  pruner: sparse
  distiller: {name: kd, options: {epochs: 1, lr: 0.002, weight_decay: 0.0001}}
plan:
  layers:
    features.conv2: {prune_ratio: 0.5}
    features.conv3: {prune_ratio: 0.5}
    classifier.fc1: {prune_ratio: 0.5}
measure: {latency: false}
"""


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("sparse")
    policy = out / "policy.yaml"
    policy.write_text(POLICY)
    result = CliRunner().invoke(app, ["apply", str(policy), "--out", str(out / "run")])
    assert result.exit_code == 0, result.output
    return out / "run", json.loads((out / "run" / "metrics.json").read_text())


def test_apply_reports_sparsity_beside_dense_costs(applied: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    _, metrics = applied
    base, comp = metrics["baseline"], metrics["compressed"]
    assert comp["sparsity"] == pytest.approx(0.5, abs=1e-4)  # kd recovered without reviving zeros
    assert comp["macs"] == base["macs"]  # zeros are still multiplied: MACs stay dense
    assert comp["params"] == base["params"]
    assert comp["sparse_size_bytes"] < 0.6 * comp["size_bytes"]
    assert comp["accuracy"] >= base["accuracy"] - 3.0


def test_applied_artifact_holds_the_planned_zeros(applied: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    out, _ = applied
    state = load_artifact(out / "model.pt").state_dict()
    for name in HIDDEN:
        assert float((state[f"{name}.weight"] == 0).float().mean()) == pytest.approx(0.5), name
    assert not bool((state["classifier.fc2.weight"] == 0).any())
