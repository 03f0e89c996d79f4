"""Rendering a search summary: an interactive Pareto plot (HTML), a static one (PNG), a terminal table.

Everything here reads the summary dict alone (the content of ``summary.json``), so a report can be redrawn
without Optuna or the study's storage::

    {"study": "digits",
     "objectives": [{"metric": "accuracy", "direction": "maximize"},
                    {"metric": "size_bytes", "direction": "minimize"}],
     "baseline": {"accuracy": 98.1, "macs": 1.2e6, "size_bytes": 90000, ...},
     "trials": [{"number": 0, "state": "complete", "metrics": {...}, "feasible": true,
                 "pareto": true, "plan": "plans/trial-0000.yaml"}, ...],
     "pareto": [...the trials with "pareto": true...]}

Plots show the first two objectives against each other (one objective: the objective by trial number).
Failed trials have no trustworthy metrics and are left out.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator._atomic import replacing

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["pareto_table", "write_pareto_html", "write_pareto_png"]

Kind = Literal["feasible", "infeasible", "pareto"]

#: label in legends and colour of each kind of trial
_STYLE: dict[Kind, tuple[str, str]] = {
    "feasible": ("feasible", "#9e9e9e"),
    "infeasible": ("infeasible", "#e57373"),
    "pareto": ("Pareto front", "#1565c0"),
}
_BASELINE_COLOUR = "#f9a825"
_RATIOS = (("macs", "MACs ratio"), ("size_bytes", "size ratio"))


@dataclass(frozen=True)
class _Objective:
    metric: str
    maximize: bool

    @property
    def label(self) -> str:
        return f"{self.metric} ({'higher' if self.maximize else 'lower'} is better)"


@dataclass(frozen=True)
class _Point:
    number: int
    x: float
    y: float
    kind: Kind
    hover: list[str]


def write_pareto_html(summary: Mapping[str, Any], path: str | Path) -> Path:
    """An interactive plotly scatter of the trials, self-contained (works offline). Returns ``path``."""
    import plotly.graph_objects as go

    objectives, points = _objectives(summary), _points(summary)
    fig = go.Figure()
    for kind, group in _groups(points):
        fig.add_trace(_plotly_trace(go, kind, group, connect=len(objectives) > 1))
    base = _baseline(summary, objectives)
    if base is not None and len(objectives) > 1:
        fig.add_trace(
            go.Scatter(
                x=[base[0]],
                y=[base[1]],
                mode="markers",
                name="baseline",
                marker={"symbol": "star", "size": 18, "color": _BASELINE_COLOUR, "line": {"width": 1}},
                hovertext=["baseline<br>" + "<br>".join(_metric_lines(summary.get("baseline") or {}))],
                hoverinfo="text",
            )
        )
    elif base is not None:
        fig.add_hline(y=base[1], line_dash="dash", line_color=_BASELINE_COLOUR, annotation_text="baseline")
    fig.update_layout(
        title=_title(summary, points),
        xaxis_title=_x_label(objectives),
        yaxis_title=_y_label(objectives),
        template="plotly_white",
        hovermode="closest",
    )
    if not points:
        fig.add_annotation(text="no trial with metrics yet", showarrow=False, xref="paper", yref="paper")
    path = Path(path)
    with replacing(path) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    return path


def write_pareto_png(summary: Mapping[str, Any], path: str | Path, *, dpi: int = 120) -> Path:
    """The same plot as a PNG (matplotlib, Agg canvas; no pyplot state). Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objectives, points = _objectives(summary), _points(summary)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, group in _groups(points):
        _mpl_trace(ax, kind, group, connect=len(objectives) > 1)
    base = _baseline(summary, objectives)
    if base is not None and len(objectives) > 1:
        ax.scatter(
            [base[0]],
            [base[1]],
            marker="*",
            s=260,
            color=_BASELINE_COLOUR,
            edgecolor="black",
            label="baseline",
        )
    elif base is not None:
        ax.axhline(base[1], linestyle="--", color=_BASELINE_COLOUR, label="baseline")
    ax.set_title(_title(summary, points))
    ax.set_xlabel(_x_label(objectives))
    ax.set_ylabel(_y_label(objectives))
    ax.grid(alpha=0.3)
    if points or base is not None:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trial with metrics yet", ha="center", va="center", transform=ax.transAxes)
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path


def pareto_table(summary: Mapping[str, Any]) -> Table:
    """The Pareto-optimal trials, best first by the first objective, under a baseline row.

    Columns: trial, each objective, MACs and size as a fraction of the baseline's (when the baseline has
    them), and the trial's plan file.
    """
    from rich.table import Table

    objectives = _objectives(summary)
    baseline: Mapping[str, Any] = summary.get("baseline") or {}
    ratios = [(key, title) for key, title in _RATIOS if _number(baseline.get(key))]
    table = Table(title=_title(summary, _points(summary)))
    table.add_column("trial", justify="right")
    for objective in objectives:
        table.add_column(f"{objective.metric} {'↑' if objective.maximize else '↓'}", justify="right")
    for _, title in ratios:
        table.add_column(title, justify="right")
    table.add_column("plan")
    if baseline:
        cells = [_fmt(baseline.get(o.metric)) for o in objectives]
        table.add_row("baseline", *cells, *("1.000" for _ in ratios), "", style="dim")
    for trial in _pareto_trials(summary, objectives):
        metrics: Mapping[str, Any] = trial.get("metrics") or {}
        cells = [_fmt(metrics.get(o.metric)) for o in objectives]
        cells += [_ratio(metrics.get(key), baseline.get(key)) for key, _ in ratios]
        table.add_row(str(trial.get("number", "?")), *cells, _short_path(trial.get("plan")))
    return table


# -- reading the summary -----------------------------------------------------------------------


def _objectives(summary: Mapping[str, Any]) -> list[_Objective]:
    return [
        _Objective(metric=str(o["metric"]), maximize=o.get("direction", "maximize") == "maximize")
        for o in summary.get("objectives") or ()
    ]


def _trials(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in summary.get("trials") or () if isinstance(t, Mapping)]


def _pareto_numbers(summary: Mapping[str, Any]) -> set[Any]:
    listed = {t.get("number") for t in summary.get("pareto") or () if isinstance(t, Mapping)}
    return listed | {t.get("number") for t in _trials(summary) if t.get("pareto")}


def _pareto_trials(summary: Mapping[str, Any], objectives: Sequence[_Objective]) -> list[Mapping[str, Any]]:
    trials = [t for t in summary.get("pareto") or () if isinstance(t, Mapping)]
    if not trials:
        trials = [t for t in _trials(summary) if t.get("pareto")]
    if not objectives:
        return trials
    first = objectives[0]

    def best_first(trial: Mapping[str, Any]) -> float:
        value = _number((trial.get("metrics") or {}).get(first.metric))
        if value is None:
            return math.inf
        return -value if first.maximize else value

    return sorted(trials, key=best_first)


def _kind(trial: Mapping[str, Any], pareto: set[Any]) -> Kind | None:
    state = trial.get("state")
    if state in ("failed", "lost", "running", "waiting"):
        return None
    if trial.get("pareto") or trial.get("number") in pareto:
        return "pareto"
    if state == "complete" and trial.get("feasible", True):
        return "feasible"
    return "infeasible"


def _points(summary: Mapping[str, Any]) -> list[_Point]:
    objectives = _objectives(summary)
    if not objectives:
        return []
    pareto = _pareto_numbers(summary)
    points = []
    for trial in _trials(summary):
        kind = _kind(trial, pareto)
        metrics: Mapping[str, Any] = trial.get("metrics") or {}
        number = int(trial.get("number", -1))
        if len(objectives) > 1:
            x, y = _number(metrics.get(objectives[0].metric)), _number(metrics.get(objectives[1].metric))
        else:
            x, y = float(number), _number(metrics.get(objectives[0].metric))
        if kind is None or x is None or y is None:
            continue
        hover = [f"trial {number} ({trial.get('state', '?')})", *_metric_lines(metrics)]
        if trial.get("plan"):
            hover.append(f"plan: {trial['plan']}")
        points.append(_Point(number=number, x=x, y=y, kind=kind, hover=hover))
    return points


def _baseline(summary: Mapping[str, Any], objectives: Sequence[_Objective]) -> tuple[float, float] | None:
    """Where the baseline goes: (x, y) for two objectives, (nan, y) for one; None if unknown."""
    baseline: Mapping[str, Any] = summary.get("baseline") or {}
    if not objectives:
        return None
    if len(objectives) == 1:
        y = _number(baseline.get(objectives[0].metric))
        return None if y is None else (math.nan, y)
    x, y = _number(baseline.get(objectives[0].metric)), _number(baseline.get(objectives[1].metric))
    return None if x is None or y is None else (x, y)


# -- formatting --------------------------------------------------------------------------------


def _groups(points: Sequence[_Point]) -> list[tuple[Kind, list[_Point]]]:
    """Points by kind, drawn in this order (the front on top), each sorted along the x axis."""
    kinds: tuple[Kind, ...] = ("feasible", "infeasible", "pareto")
    groups = [(k, sorted((p for p in points if p.kind == k), key=lambda p: (p.x, p.y))) for k in kinds]
    return [(kind, group) for kind, group in groups if group]


def _mpl_trace(ax: Any, kind: Kind, group: Sequence[_Point], *, connect: bool) -> None:
    label, colour = _STYLE[kind]
    xs, ys = [p.x for p in group], [p.y for p in group]
    if kind == "pareto" and connect:
        ax.plot(xs, ys, color=colour, linewidth=1.2, zorder=2)
    marker = "x" if kind == "infeasible" else "o"
    ax.scatter(xs, ys, marker=marker, s=50 if kind == "pareto" else 25, color=colour, label=label, zorder=3)
    if kind == "pareto":
        for p in group:
            ax.annotate(str(p.number), (p.x, p.y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _plotly_trace(go: Any, kind: Kind, group: Sequence[_Point], *, connect: bool) -> Any:
    label, colour = _STYLE[kind]
    marker: dict[str, Any] = {"color": colour, "size": 11 if kind == "pareto" else 8}
    if kind == "infeasible":
        marker["symbol"] = "x"
    return go.Scatter(
        x=[p.x for p in group],
        y=[p.y for p in group],
        mode="lines+markers" if kind == "pareto" and connect else "markers",
        name=label,
        marker=marker,
        line={"color": colour},
        hovertext=["<br>".join(p.hover) for p in group],
        hoverinfo="text",
    )


def _title(summary: Mapping[str, Any], points: Sequence[_Point]) -> str:
    objectives = _objectives(summary)
    pareto = sum(p.kind == "pareto" for p in points)
    started = [t for t in _trials(summary) if t.get("state") != "waiting"]
    title = f"{summary.get('study', 'study')}: {pareto} Pareto-optimal of {len(started)} trials"
    if len(objectives) > 2:
        title += f" (first two of {len(objectives)} objectives)"
    return title


def _x_label(objectives: Sequence[_Objective]) -> str:
    return objectives[0].label if len(objectives) > 1 else "trial number"


def _y_label(objectives: Sequence[_Objective]) -> str:
    if not objectives:
        return ""
    return objectives[1].label if len(objectives) > 1 else objectives[0].label


def _metric_lines(metrics: Mapping[str, Any]) -> list[str]:
    return [f"{key}: {_fmt(value)}" for key, value in sorted(metrics.items())]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fmt(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "-" if value is None else str(value)
    if number.is_integer() and abs(number) >= 1000:
        return f"{int(number):,}"
    return f"{number:.4g}"


def _ratio(value: Any, base: Any) -> str:
    a, b = _number(value), _number(base)
    return "-" if a is None or not b else f"{a / b:.3f}"


def _short_path(path: object) -> str:
    """A plan path relative to the working directory when it is below it."""
    if not path:
        return ""
    full = Path(str(path))
    try:
        return str(full.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)
