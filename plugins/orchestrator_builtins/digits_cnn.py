"""Task ``digits-cnn``: scikit-learn's bundled 8x8 digits and a small CNN with BatchNorm.

The baseline is trained once per set of options and cached on disk (see ``orchestrator.cache_dir``).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import (
    Batch,
    ShuffledBatches,
    Task,
    TaskOptions,
    TrainingRecipe,
    classification_accuracy,
    fixed_batches,
    hookimpl,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch
    from torch import nn


class DigitsOptions(TaskOptions):
    #: channels of the three conv layers and the hidden linear layer
    widths: tuple[int, int, int, int] = (32, 64, 128, 128)
    #: training epochs of the baseline
    epochs: int = Field(default=30, ge=1)
    #: batch size of training and recovery
    batch_size: int = Field(default=64, ge=1)
    #: peak learning rate of the baseline's training (one-cycle) and of recovery (the task's recipe: Adam)
    lr: float = Field(default=2e-3, gt=0)
    #: seed of the data split, data order and the baseline's training
    seed: int = 0
    #: share of the 1,797 images held out for evaluation
    test_fraction: float = Field(default=0.25, gt=0, lt=1)


def build_cnn(widths: tuple[int, int, int, int], classes: int = 10) -> nn.Module:
    """conv-bn-relu x3 (two 2x2 pools) → linear-relu → linear, for 1x8x8 inputs."""
    from collections import OrderedDict

    from torch import nn

    c1, c2, c3, hidden = widths
    features = OrderedDict(
        conv1=nn.Conv2d(1, c1, 3, padding=1),
        bn1=nn.BatchNorm2d(c1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(c1, c2, 3, padding=1),
        bn2=nn.BatchNorm2d(c2),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        conv3=nn.Conv2d(c2, c3, 3, padding=1),
        bn3=nn.BatchNorm2d(c3),
        relu3=nn.ReLU(),
        pool3=nn.MaxPool2d(2),
    )
    classifier = OrderedDict(
        flatten=nn.Flatten(),
        fc1=nn.Linear(c3 * 4, hidden),
        relu4=nn.ReLU(),
        fc2=nn.Linear(hidden, classes),
    )
    return nn.Sequential(OrderedDict(features=nn.Sequential(features), classifier=nn.Sequential(classifier)))


class DigitsCNN(Task[DigitsOptions]):
    """8x8 handwritten digits (scikit-learn), a 4-layer CNN; metric: accuracy in percent."""

    name: ClassVar[str] = "digits-cnn"
    Options = DigitsOptions
    baseline_version: ClassVar[int] = 2  # bump when the model or training recipe changes

    @cached_property
    def _splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        import numpy as np
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images.astype(np.float32) / 16.0 - 0.5) / 0.5
        x_tr, x_te, y_tr, y_te = train_test_split(
            x,
            digits.target,
            test_size=self.options.test_fraction,
            random_state=self.options.seed,
            stratify=digits.target,
        )
        return (
            torch.from_numpy(x_tr).unsqueeze(1),
            torch.from_numpy(y_tr).long(),
            torch.from_numpy(x_te).unsqueeze(1),
            torch.from_numpy(y_te).long(),
        )

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        x_tr = self._splits[0]
        reps = -(-batch_size // len(x_tr))
        return (x_tr.repeat(reps, 1, 1, 1)[:batch_size].clone(),)

    def train_data(self) -> ShuffledBatches:
        return ShuffledBatches(
            self._splits[0], self._splits[1], batch_size=self.options.batch_size, seed=self.options.seed
        )

    def eval_data(self) -> Iterable[Batch]:
        x, y = self._splits[2], self._splits[3]
        return fixed_batches(x, y, 256)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"accuracy": classification_accuracy(model, self.eval_data())}

    def build_model(self) -> nn.Module:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)  # the same initial weights in every process
            model = build_cnn(self.options.widths)
        return self.cached_baseline(model, self._train)

    def training_recipe(self) -> TrainingRecipe:
        """Adam at the ``lr`` option (2e-3)."""
        return TrainingRecipe(optimizer="adam", lr=self.options.lr)

    def _train(self, model: nn.Module) -> None:
        import torch

        torch.manual_seed(self.options.seed)
        optimizer = self.training_recipe().make_optimizer(model.parameters())
        data = self.train_data()
        steps = self.options.epochs * len(data)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.options.lr, total_steps=steps)
        for _ in range(self.options.epochs):
            model.train()
            for batch in data:
                loss = self.loss(model(*self.inputs(batch)), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
        model.eval()


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(DigitsCNN)
