"""Quantizers ``inc`` and ``torch-int8``, several in one policy, and honest sizes on mnist-resnet."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from orchestrator_builtins.packed import PackedConv2d, PackedLinear, pack_codes, unpack_codes
from torch import nn

from orchestrator import CompressionPlan, PlanError, PolicyError
from orchestrator.artifact import save_artifact
from orchestrator.layers import compressible_layers
from orchestrator.pipeline import apply_policy
from orchestrator.policy import parse_policy

from .conftest import POLICIES

pytest.importorskip("neural_compressor")

#: the default mnist-resnet architecture, trained on fewer images for one epoch to keep the test short
MNIST_TEST = {"train_size": 6000, "eval_size": 2000, "epochs": 1, "stem_stride": 2}


def _plan(bits: dict[str, int]) -> CompressionPlan:
    return CompressionPlan.model_validate({"layers": {n: {"bits": b} for n, b in bits.items()}})


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_codes_pack_into_bytes_and_back(bits: int) -> None:
    codes = torch.randint(0, 1 << bits, (5, 37))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape[1] == -(-37 // (8 // (2 if bits == 2 else 4 if bits <= 4 else 8)))
    assert torch.equal(unpack_codes(packed, bits, 37), codes.float())


def test_inc_weight_only_keeps_exactly_what_inc_computed(digits_task: Any, registry: Any) -> None:
    from neural_compressor.torch.quantization import RTNConfig, convert, prepare

    model = digits_task.build_model()
    quantizer = registry.components.create("quantizer", "inc", {"group_size": 32})
    q = quantizer.quantize(copy.deepcopy(model), _plan({"classifier.fc1": 4}), digits_task)
    assert isinstance(q.classifier.fc1, PackedLinear)
    assert isinstance(q.features.conv1, nn.Conv2d)  # not in the plan: untouched
    config = RTNConfig(dtype="fp32", use_layer_wise=False)
    config.set_local("classifier.fc1$", RTNConfig(bits=4, group_size=32, use_layer_wise=False))
    reference = convert(prepare(copy.deepcopy(model), config))
    recovered = reference.classifier.fc1.recover().float()
    # INC recovers in float16; the codes, scales and zero points are the same
    assert torch.allclose(q.classifier.fc1.dequantized(), recovered, rtol=1e-3, atol=1e-4)


def test_inc_per_layer_bits_shrink_the_artifact_and_keep_accuracy_at_8_bits(
    digits_task: Any, registry: Any, tmp_path: Path
) -> None:
    model = digits_task.build_model()
    layers = list(compressible_layers(model))
    quantizer = registry.components.create("quantizer", "inc")
    example = digits_task.example_inputs(2)
    float_size = save_artifact(model, example, tmp_path / "float.pt")
    accuracy = digits_task.evaluate(model)["accuracy"]
    results = {}
    for bits in (8, 4, 2):
        q = quantizer.quantize(copy.deepcopy(model), _plan(dict.fromkeys(layers, bits)), digits_task)
        assert all(isinstance(q.get_submodule(n), PackedLinear | PackedConv2d) for n in layers)
        results[bits] = (
            save_artifact(q, example, tmp_path / f"q{bits}.pt"),
            digits_task.evaluate(q)["accuracy"],
        )
    assert results[8][0] < 0.40 * float_size
    assert results[4][0] < 0.75 * results[8][0]
    assert results[2][0] < results[4][0]
    assert results[8][1] >= accuracy - 0.5
    assert results[2][1] < results[8][1]  # 2 bits really is coarser


def test_inc_gptq_refuses_a_model_without_a_transformer_stack(digits_task: Any, registry: Any) -> None:
    quantizer = registry.components.create("quantizer", "inc", {"algorithm": "gptq"})
    with pytest.raises(PlanError, match="transformer stack"):
        quantizer.quantize(digits_task.build_model(), _plan({"classifier.fc1": 4}), digits_task)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_inc_int8_through_export_matches_the_float_model(digits_task: Any, registry: Any, mode: str) -> None:
    model = digits_task.build_model()
    every = dict.fromkeys(compressible_layers(model), 8)
    quantizer = registry.components.create("quantizer", "inc", {"mode": mode})
    q = quantizer.quantize(copy.deepcopy(model), _plan(every), digits_task)
    assert digits_task.evaluate(q)["accuracy"] >= digits_task.evaluate(model)["accuracy"] - 1.0
    with pytest.raises(PlanError, match="whole graph"):
        quantizer.quantize(copy.deepcopy(model), _plan({"classifier.fc1": 8}), digits_task)


def test_a_layer_no_quantizer_takes_is_refused_before_any_work(registry: Any, tmp_path: Path) -> None:
    text = (POLICIES / "digits-apply.yaml").read_text()
    policy = parse_policy(
        text.replace("features.conv1: {prune_ratio: 0.5, bits: 8}", "features.conv1: {bits: 4}")
    )
    with pytest.raises(
        PolicyError,
        match=r"features\.conv1\.bits.*sets bits \[4\] but the quantizers \(torch-int8\) support bits \[8\]",
    ):
        apply_policy(policy, registry, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before the baseline was built


def _mnist_policy(name: str) -> Any:
    text = (
        (POLICIES / name)
        .read_text()
        .replace("task: mnist-resnet", f"task: {{name: mnist-resnet, options: {json.dumps(MNIST_TEST)}}}")
    )
    return parse_policy(text)


@pytest.fixture(scope="module")
def mnist_int8(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from orchestrator import load_registry

    policy = _mnist_policy("mnist-resnet-int8.yaml")
    policy = policy.model_copy(update={"measure": policy.measure.model_copy(update={"latency": False})})
    return apply_policy(policy, load_registry(), tmp_path_factory.mktemp("int8"))


def test_mnist_resnet_int8_is_under_a_third_of_the_size_and_keeps_accuracy(
    mnist_int8: dict[str, Any],
) -> None:
    base, comp = mnist_int8["baseline"], mnist_int8["compressed"]
    assert comp["size_bytes"] <= 0.30 * base["size_bytes"]
    assert comp["accuracy"] >= base["accuracy"] - 0.5
    assert all(layer["bits"] == 8 for layer in mnist_int8["layers"].values())
    (report,) = mnist_int8["quantizers"]
    assert report["accelerates"]["8"] is True


def test_mixed_4_8_float_plan_routes_layers_and_reports_both_sizes(registry: Any, tmp_path: Path) -> None:
    policy = _mnist_policy("mnist-resnet-mixed.yaml")
    policy = policy.model_copy(update={"measure": policy.measure.model_copy(update={"latency": False})})
    report = apply_policy(policy, registry, tmp_path)
    layers = report["layers"]
    assert {layer["bits"] for layer in layers.values()} == {4, 8, 32}
    for layer in layers.values():
        want = {4: "inc", 8: "torch-int8", 32: None}[layer["bits"]]
        assert layer["quantizer"] == want
    comp, base = report["compressed"], report["baseline"]
    assert comp["theoretical_bytes"] < comp["size_bytes"] < 0.30 * base["size_bytes"]
    assert comp["accuracy"] >= base["accuracy"] - 1.0
    assert json.loads((tmp_path / "metrics.json").read_text())["layers"] == layers
    assert [q["name"] for q in report["quantizers"]] == ["torch-int8", "inc"]


def test_joint_search_over_4_8_float_bits_routes_each_trial(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    policy = POLICIES / "digits-mixed-bits.yaml"
    args = ["search", str(policy), "--budget", "7", "--runs-dir", str(tmp_path), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "digits-mixed-bits" / "summary.json").read_text())
    assert summary["counts"]["complete"] == 7
    assert [q["name"] for q in summary["quantizers"]] == ["torch-int8", "inc"]
    trials = [t for t in summary["trials"] if t["state"] == "complete"]
    four_bit = [t for t in trials if 4 in {layer.get("bits") for layer in t["layers"].values()}]
    assert four_bit, "no sampled plan used 4 bits"
    for trial in four_bit:
        assert trial["metrics"]["theoretical_bytes"] < trial["metrics"]["size_bytes"]


INC_THEN_TRANSFORMERS = """
from orchestrator import CompressionPlan
from orchestrator.testing import TinyDigits, TinyDigitsOptions
from orchestrator_builtins.inc import IncQuantizer

task = TinyDigits(options=TinyDigitsOptions(model="mlp"))
plan = CompressionPlan.from_mapping({"layers": {"fc1": {"bits": 4}}})
IncQuantizer().quantize(task.build_model(), plan, task)
import transformers  # a Hugging Face model is loaded after INC was first used
print(type(IncQuantizer().quantize(task.build_model(), plan, task).fc1).__name__)
"""


def test_inc_still_quantizes_after_transformers_is_imported_later() -> None:
    import subprocess
    import sys

    pytest.importorskip("transformers")
    done = subprocess.run([sys.executable, "-c", INC_THEN_TRANSFORMERS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "PackedLinear"
