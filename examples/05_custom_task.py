"""Your own trained model and DataLoaders as a task, pruned + int8: python examples/05_custom_task.py"""

import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from orchestrator import classification_task, load_registry, parse_policy
from orchestrator.pipeline import apply_policy

x, y = load_digits(return_X_y=True)
data = TensorDataset(torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y))
train, test = random_split(data, [0.75, 0.25], torch.Generator().manual_seed(0))
train_loader, test_loader = DataLoader(train, batch_size=64, shuffle=True), DataLoader(test, batch_size=256)

torch.manual_seed(0)  # your model, trained your way
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
for _ in range(40):
    for inputs, labels in train_loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

registry = load_registry()
registry.components.register(classification_task("digits-mlp", model, train_loader, test_loader))
policy = parse_policy("""
schema_version: 1
task: digits-mlp
pipeline: {pruner: torch-pruning, distiller: {name: kd, options: {epochs: 10}}, quantizer: torch-int8}
plan: {layers: {"0": {prune_ratio: 0.5, bits: 8}, "2": {bits: 8}}}
""")
report = apply_policy(policy, registry, Path(tempfile.mkdtemp()))
print(f"accuracy {report['baseline']['accuracy']:.2f} -> {report['compressed']['accuracy']:.2f}")
print({key: round(value, 3) for key, value in report["ratios"].items()})  # size, MACs, latency vs baseline
