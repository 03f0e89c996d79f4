"""The ``fake-quant`` quantizer: simulated low-bit weights on the digits CNN."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from orchestrator import CompressionPlan, LayerDecision
from orchestrator.artifact import load_artifact, save_artifact
from orchestrator.cli import app
from orchestrator.layers import compressible_layers


def _all_layers(model: torch.nn.Module, bits: int) -> CompressionPlan:
    return CompressionPlan(layers={n: LayerDecision(bits=bits) for n in compressible_layers(model)})


def test_8_bits_keeps_256_values_per_channel_and_accuracy(registry, digits_task, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "fake-quant")
    q = quantizer.quantize(copy.deepcopy(model), _all_layers(model, 8), digits_task)
    for name in compressible_layers(model):
        before = model.get_submodule(name).weight
        weight = q.get_submodule(name).weight
        assert weight.dtype == torch.float32
        assert not torch.equal(weight, before)  # it did quantize
        for channel in weight.flatten(1):
            assert channel.unique().numel() <= 2**8
    base = digits_task.evaluate(model)["accuracy"]
    assert digits_task.evaluate(q)["accuracy"] >= base - 1.0
    # still a plain float model: it traces, saves and reloads with the same predictions
    save_artifact(q, digits_task.example_inputs(2), tmp_path / "model.pt")
    x = digits_task.example_inputs(4)
    torch.testing.assert_close(load_artifact(tmp_path / "model.pt")(*x), q(*x))


def test_2_bits_costs_accuracy_a_user_notices(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "fake-quant")
    q8 = quantizer.quantize(copy.deepcopy(model), _all_layers(model, 8), digits_task)
    q2 = quantizer.quantize(copy.deepcopy(model), _all_layers(model, 2), digits_task)
    assert digits_task.evaluate(q2)["accuracy"] <= digits_task.evaluate(q8)["accuracy"] - 10.0
    for channel in q2.get_submodule("features.conv2").weight.flatten(1):
        assert channel.unique().numel() <= 3  # ternary: -s, 0, +s


def test_layers_without_bits_are_bit_identical(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "fake-quant")
    plan = CompressionPlan(
        layers={"features.conv2": LayerDecision(bits=4), "features.conv3": LayerDecision(bits=32)}
    )
    q = quantizer.quantize(copy.deepcopy(model), plan, digits_task)
    untouched = {k: v for k, v in model.state_dict().items() if not k.startswith("features.conv2.weight")}
    after = q.state_dict()
    for key, value in untouched.items():
        assert torch.equal(after[key], value), key
    assert not torch.equal(after["features.conv2.weight"], model.state_dict()["features.conv2.weight"])


def test_per_tensor_uses_one_scale(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "fake-quant", {"per_channel": False})
    plan = CompressionPlan(layers={"features.conv2": LayerDecision(bits=3)})
    q = quantizer.quantize(copy.deepcopy(model), plan, digits_task)
    weight = q.get_submodule("features.conv2").weight
    assert weight.unique().numel() <= 2**3  # one grid for the whole tensor


def test_metrics_say_simulated_and_bytes_fall_with_bits(registry, digits_task) -> None:  # type: ignore[no-untyped-def]
    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "fake-quant")
    assert quantizer.simulated
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    reported = []
    for bits in (8, 4, 2):
        q = quantizer.quantize(copy.deepcopy(model), _all_layers(model, bits), digits_task)
        metrics = quantizer.metrics(q)
        assert metrics["fake_quant_simulated"] == 1.0
        assert not {"size_bytes", "latency_ms"} & metrics.keys()
        reported.append(metrics["fake_quant_theoretical_bytes"])
    assert float_bytes > reported[0] > reported[1] > reported[2]
    # untouched model: every parameter counts 32 bits
    assert quantizer.metrics(model)["fake_quant_theoretical_bytes"] == float_bytes


def test_declares_no_acceleration(registry) -> None:  # type: ignore[no-untyped-def]
    quantizer = registry.components.create("quantizer", "fake-quant")
    assert quantizer.supported_bits == frozenset(range(2, 9))
    assert not any(quantizer.accelerates(bits) for bits in (*range(2, 9), 16, 32))


def test_unknown_option_is_refused(registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match="weights_only"):
        registry.components.create("quantizer", "fake-quant", {"weights_only": False})


def test_apply_with_4_bits_end_to_end(tmp_path: Path) -> None:
    policy = {
        "schema_version": 1,
        "task": "digits-cnn",
        "pipeline": {"quantizer": {"name": "fake-quant"}},
        "plan": {
            "layers": {
                "features.conv1": {"bits": 4},
                "features.conv2": {"bits": 4},
                "features.conv3": {"bits": 4},
                "classifier.fc1": {"bits": 4},
            }
        },
        "measure": {"batch_sizes": [8], "rounds": 3},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["apply", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    base, comp = report["baseline"], report["compressed"]
    assert comp["fake_quant_simulated"] == 1.0
    assert comp["fake_quant_theoretical_bytes"] < 0.5 * 4 * base["params"]
    assert comp["accuracy"] >= base["accuracy"] - 2.0
    assert report["layers"]["features.conv1"]["bits"] == 4
    assert report["layers"]["classifier.fc2"]["bits"] == 32
    assert (out / "model.pt").exists()
