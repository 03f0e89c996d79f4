"""Tiny models for contract tests: a CNN, an MLP and a residual net with droppable blocks.

All take the 1x8x8 images of scikit-learn's digits and give 10 logits. Their layers have fixed qualified
names (documented on each class), so a test can name them in a plan.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["TinyCNN", "TinyMLP", "TinyResNet", "tiny_model"]


class TinyCNN(nn.Sequential):
    """``features.conv1`` (1→8) bn relu, ``features.conv2`` (8→16) bn relu pool, ``classifier.fc1`` (256→32)
    relu, ``classifier.fc2`` (32→10). BatchNorm follows each convolution."""

    def __init__(self, classes: int = 10) -> None:
        features = OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1),
            bn1=nn.BatchNorm2d(8),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 16, 3, padding=1),
            bn2=nn.BatchNorm2d(16),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
        classifier = OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * 4 * 4, 32),
            relu=nn.ReLU(),
            fc2=nn.Linear(32, classes),
        )
        super().__init__(OrderedDict(features=nn.Sequential(features), classifier=nn.Sequential(classifier)))


class TinyMLP(nn.Sequential):
    """``flatten``, ``fc1`` (64→32) relu, ``fc2`` (32→32) relu, ``fc3`` (32→10)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(64, 32),
                relu1=nn.ReLU(),
                fc2=nn.Linear(32, 32),
                relu2=nn.ReLU(),
                fc3=nn.Linear(32, classes),
            )
        )


class ResidualBlock(nn.Module):
    """``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``: same shape in and out, so it can be dropped whole."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return out


class TinyResNet(nn.Module):
    """``stem.conv`` (1→8) bn relu, residual blocks ``blocks.0`` and ``blocks.1`` (droppable), global
    average pooling, ``head`` (8→10)."""

    def __init__(self, classes: int = 10, width: int = 8, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(1, width, 3, padding=1, bias=False), bn=nn.BatchNorm2d(width), relu=nn.ReLU()
            )
        )
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))
        return out


_MODELS: dict[str, type[nn.Module]] = {"cnn": TinyCNN, "mlp": TinyMLP, "resnet": TinyResNet}


def tiny_model(kind: str = "cnn", *, seed: int = 0) -> nn.Module:
    """A freshly initialised tiny model (``cnn``, ``mlp`` or ``resnet``), the same for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _MODELS[kind]()
