"""A model with a custom layer torch-pruning cannot prune on its own, and a handler for it; named by
import path in the policies of ``tests/test_custom_layers.py``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch
import torch_pruning as tp
from torch import nn

from orchestrator.measure import threads
from orchestrator.testing import TinyDigits


class Affine(nn.Module):
    """Scale and shift per channel in one parameter, ``table[channel] = (scale, shift)``: the channels run
    along its first dimension, where torch-pruning would guess the last."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.stack([torch.ones(channels), torch.zeros(channels)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.table[:, 0].view(1, -1, 1, 1) + self.table[:, 1].view(1, -1, 1, 1)


class AffinePruner(tp.pruner.BasePruningFunc):
    """Removes the rows of the pruned channels."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, Affine)
        gone = set(idxs)
        keep = [i for i in range(layer.table.shape[0]) if i not in gone]
        layer.table = nn.Parameter(layer.table.data[keep].clone())
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        assert isinstance(layer, Affine)
        return int(layer.table.shape[0])

    get_in_channels = get_out_channels


class AffineNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.affine = Affine(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.affine(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


class AffineDigits(TinyDigits):
    """``tiny-digits`` with :class:`AffineNet`."""

    name = "affine-digits"

    @cached_property
    def _trained(self) -> nn.Module:
        torch.manual_seed(self.options.seed)
        model = AffineNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.options.lr)
        with threads(1):
            for _ in range(self.options.epochs):
                for batch in self.train_data():
                    optimizer.zero_grad(set_to_none=True)
                    self.loss(model(*self.inputs(batch)), batch).backward()
                    optimizer.step()
        return model.eval()
