"""``orchestrate score``: a scorer's per-layer (or per-block) importance as a table and a bar chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.components import Scorer, Scores
from orchestrator.measure import layer_costs
from orchestrator.pipeline import Pipeline, targets_of

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.policy import Policy
    from orchestrator.registry import PluginRegistry

__all__ = ["score_model", "score_rows", "targets_of", "write_score_plot"]


def score_model(
    policy: Policy, registry: PluginRegistry, scorer_name: str | None = None
) -> tuple[Scores, list[dict[str, Any]]]:
    """Score the policy's baseline with ``scorer_name`` (default: the policy's scorer)."""
    from orchestrator.errors import PolicyError

    pipeline = Pipeline.from_policy(policy, registry)
    spec = policy.pipeline.scorer
    if scorer_name is None and spec is None:
        raise PolicyError(
            "pass --scorer NAME or set pipeline.scorer", path=policy.path, field="pipeline.scorer"
        )
    name = scorer_name or (spec.name if spec else "")
    options = spec.options if spec is not None and spec.name == name else {}
    scorer = registry.components.create("scorer", name, options)
    assert isinstance(scorer, Scorer)
    task = pipeline.task
    model = task.build_model().eval()
    example = task.example_inputs(1)
    targets = targets_of(scorer, model, example)
    if not targets:  # e.g. a block scorer on a model without droppable blocks
        return Scores(layers={}), []
    scores = scorer.score(model, task, targets)
    return scores, score_rows(model, example, scores)


def score_rows(model: nn.Module, example_inputs: tuple[Any, ...], scores: Scores) -> list[dict[str, Any]]:
    """One row per scored layer: layer, type, params, MACs, score and rank (1 = most important)."""
    costs = layer_costs(model, example_inputs)
    order = sorted(scores.layers, key=lambda n: scores.layers[n], reverse=True)
    rank = {name: i + 1 for i, name in enumerate(order)}
    rows = []
    for name in scores.layers:
        macs, params = costs.get(name, (0, 0))
        rows.append(
            {
                "layer": name,
                "type": type(model.get_submodule(name)).__name__,
                "params": params,
                "macs": macs,
                "score": scores.layers[name],
                "rank": rank[name],
            }
        )
    return rows


def write_score_plot(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path:
    """A horizontal bar chart of the scores, in model order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, max(2.5, 0.35 * len(rows) + 1.2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [str(r["layer"]) for r in rows][::-1]
    values = [float(r["score"]) for r in rows][::-1]
    ax.barh(names, values, color="#1565c0")
    ax.set_xlabel("score (higher = more important)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
