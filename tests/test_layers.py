"""Finding the layers that produce a model's output."""

from __future__ import annotations

import torch
from torch import nn

from orchestrator.layers import output_layers


class _FreesItsFirstOutput(nn.Module):
    """``a``'s output is gone before the model's output is made, so Python may give the latter its id."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, use_head: bool) -> torch.Tensor:
        h = self.a(x)
        h = h + 1  # the output of ``a`` is freed here
        out: torch.Tensor = self.head(h) if use_head else h * 2
        return out


def test_output_layers_are_the_ones_whose_output_is_returned() -> None:
    model = _FreesItsFirstOutput()
    x = torch.randn(2, 4)
    for _ in range(5):  # id reuse made ``a`` look like an output layer every time
        assert output_layers(model, (x, False)) == []
        assert output_layers(model, (x, True)) == ["head"]
