"""What several benchmarks share: the small mnist-resnet of their quick modes, and an in-process search."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator import load_registry
from orchestrator.events import TrialFinished
from orchestrator.search import Search, SearchSettings

#: mnist-resnet options of the quick modes (the tests' configuration): trains in seconds
MNIST_QUICK: dict[str, Any] = {
    "train_size": 3000,
    "eval_size": 500,
    "epochs": 1,
    "widths": [8, 16, 32],
    "blocks": 2,
    "stem_stride": 2,
    "batch_size": 64,
    "lr": 0.05,
}


def run_search(policy: Any, trials: int, seed: int, study: str) -> tuple[list[TrialFinished], Search, float]:
    """Search ``trials`` trials in a throwaway runs directory, no tracking; every trial's event, the
    search (its baseline) and the wall time in seconds."""
    events: list[TrialFinished] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings.resolve(
            policy,
            budget=str(trials),
            study=study,
            runs_dir=Path(tmp),
            seed=seed,
            track=False,
            progress=False,
        )
        search = Search(policy, load_registry(), settings)
        search.run(stop=lambda event: events.append(event) or False)
    return events, search, time.perf_counter() - start


#: the plain recipe a user writes beside us: one epoch of SGD, Nesterov momentum, cosine schedule
PLAIN_RECIPE = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}


def plain_finetune(model: Any, task: Any, epochs: float = 1.0, seed: int = 0) -> float:
    """Fine-tune ``model`` as a plain script would (``PLAIN_RECIPE``, cosine over ``epochs`` of the task's
    training batches, cross-entropy); return the task's metric after."""
    import math

    import torch

    torch.manual_seed(seed)
    data = task.train_data()
    total = max(1, math.ceil(epochs * len(data)))
    optimizer = torch.optim.SGD(model.parameters(), **PLAIN_RECIPE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    step = 0
    model.train()
    while step < total:
        for x, y in data:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step >= total:
                break
    model.eval()
    return float(task.evaluate(model)[task.metric])


def torch_pruning_l1(model: Any, task: Any, ratio: float, *, global_: bool = False) -> Any:
    """torch-pruning as a user calls it: ``MetaPruner``, L1 magnitude, one ratio, the classifier kept."""
    import copy

    import torch_pruning as tp

    from orchestrator.layers import output_layers

    pruned = copy.deepcopy(model)
    example = task.example_inputs(2)
    modules = dict(pruned.named_modules())
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        global_pruning=global_,
        ignored_layers=[modules[n] for n in output_layers(pruned, example)],
    )
    pruner.step()
    return pruned.eval()


def ratio_for_macs(prune: Any, task: Any, base_macs: int, target: float) -> tuple[float, Any, float]:
    """The largest ratio whose pruned model keeps at least ``target`` of the baseline's MACs (the closest a
    single ratio comes from above: a comparator is never handed a smaller model), that model and its MACs
    ratio."""
    from orchestrator.measure import count_macs_params

    def macs_of(model: Any) -> float:
        return float(count_macs_params(model, task.example_inputs())[0]) / base_macs

    low, high = 0.0, 0.99
    best = (0.0, prune(0.0))
    while high - low > 1e-4:
        mid = (low + high) / 2
        try:
            model = prune(mid)
        except Exception:  # a ratio that empties a layer counts as "too far"
            high = mid
            continue
        if macs_of(model) >= target:
            low, best = mid, (mid, model)
        else:
            high = mid
    return best[0], best[1], macs_of(best[1])
