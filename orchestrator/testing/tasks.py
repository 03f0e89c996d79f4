"""``tiny-digits``: a task that trains in a fraction of a second, for contract tests and plugin tests.

A subset of scikit-learn's bundled 8x8 digits and one of the tiny models of
:mod:`orchestrator.testing.models`. The baseline is trained once per task object and kept in memory: no
file is written, so tests never touch the user's cache.
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from orchestrator.components import ComponentOptions
from orchestrator.measure import threads
from orchestrator.task import Batch, ClassificationTask, ShuffledBatches, fixed_batches
from orchestrator.testing.models import tiny_model

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["TinyDigits", "TinyDigitsOptions"]


class TinyDigitsOptions(ComponentOptions):
    #: the tiny model: ``cnn`` (BatchNorm after each conv), ``mlp`` or ``resnet`` (droppable blocks)
    model: Literal["cnn", "mlp", "resnet"] = "cnn"
    #: training images (the rest of the 1,797 are held out; evaluation uses ``eval_size`` of them)
    train_size: int = Field(default=512, ge=16, le=1_400)
    eval_size: int = Field(default=256, ge=16, le=397)
    #: training epochs of the baseline
    epochs: int = Field(default=4, ge=1)
    #: batch size of training and recovery
    batch_size: int = Field(default=64, ge=1)
    #: learning rate of the baseline's training
    lr: float = Field(default=0.01, gt=0)
    #: seed of the data order and the baseline's training
    seed: int = 0


class TinyDigits(ClassificationTask[TinyDigitsOptions]):
    """A subset of scikit-learn's 8x8 digits and a tiny model, trained in memory; metric: accuracy."""

    name: ClassVar[str] = "tiny-digits"
    Options = TinyDigitsOptions

    @cached_property
    def _data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images).float().unsqueeze(1) / 8.0 - 1.0
        y = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.options.seed))
        train = order[: self.options.train_size]
        held_out = order[1_400 : 1_400 + self.options.eval_size]
        return x[train], y[train], x[held_out], y[held_out]

    def train_data(self) -> ShuffledBatches:
        x, y, _, _ = self._data
        return ShuffledBatches(x, y, batch_size=self.options.batch_size, seed=self.options.seed)

    def eval_data(self) -> list[Batch]:
        _, _, x, y = self._data
        return fixed_batches(x, y, 128)

    @cached_property
    def _trained(self) -> nn.Module:
        import torch

        model = tiny_model(self.options.model, seed=self.options.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.options.lr)
        data = self.train_data()
        with torch.random.fork_rng(devices=[]), threads(1):  # tiny layers: one thread is as fast
            torch.manual_seed(self.options.seed)
            model.train()
            for _ in range(self.options.epochs):
                for batch in data:
                    loss = self.loss(model(*self.inputs(batch)), batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        model.zero_grad(set_to_none=True)
        return model.eval()

    def build_model(self) -> nn.Module:
        """A copy of the trained baseline (trained on first use), in eval mode."""
        return copy.deepcopy(self._trained).eval()
