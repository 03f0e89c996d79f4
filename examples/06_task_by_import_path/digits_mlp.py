"""Your own task, named in a policy by import path (``task: digits_mlp:DigitsMLP``), with no plugin:

    cd examples/06_task_by_import_path && orchestrate search digits-mlp.yaml --budget 6

The module is found in the working directory (or among the installed packages); the class is built with
the policy's ``task.options`` and asked for its model only when the search needs it.
"""

from collections.abc import Iterable

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from orchestrator import ClassificationTask, TaskOptions


class DigitsMLP(ClassificationTask[TaskOptions]):
    """A two-layer MLP on sklearn's 8x8 digits, trained once and cached."""

    name = "digits-mlp"  # names the cached baseline; the policy names the class by its path

    def __init__(self, *, options: TaskOptions | None = None) -> None:
        super().__init__(options=options)
        x, y = load_digits(return_X_y=True)
        data = TensorDataset(torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y))
        train, test = random_split(data, [0.75, 0.25], torch.Generator().manual_seed(0))
        self.train_loader = DataLoader(
            train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        self.test_loader = DataLoader(test, batch_size=256)

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        return self.cached_baseline(model, self._train)  # or self.with_weights(model) for your checkpoint

    def _train(self, model: nn.Module) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(40):
            for inputs, labels in self.train_loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs), labels).backward()
                optimizer.step()

    def train_data(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return self.train_loader

    def eval_data(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return self.test_loader
