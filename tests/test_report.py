"""Pareto plots and table drawn from a search summary alone."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.report import pareto_table, write_pareto_html, write_pareto_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _trial(number: int, state: str, accuracy: float | None, size: float, **kw: Any) -> dict[str, Any]:
    metrics = {"macs": 300_000.0, "size_bytes": size, "latency_ms_b1": 0.4}
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    trial = {
        "number": number,
        "state": state,
        "metrics": metrics,
        "feasible": state == "complete",
        "pareto": False,
        "plan": f"plans/trial-{number:04d}.yaml",
    }
    trial.update(kw)
    return trial


@pytest.fixture
def summary() -> dict[str, Any]:
    trials = [
        _trial(11, "complete", 97.0, 40_000.0, pareto=True),
        _trial(12, "complete", 95.5, 20_000.0, pareto=True),
        _trial(13, "complete", 94.0, 30_000.0),  # dominated by 12
        _trial(14, "complete", 70.0, 10_000.0, feasible=False),  # violates the accuracy constraint
        _trial(15, "infeasible", None, 5_000.0),  # rejected from the plan: no accuracy
        _trial(16, "gated", 60.0, 12_000.0, feasible=False),
        _trial(41, "failed", None, 1.0, metrics={"accuracy": float("nan")}, plan=None),
    ]
    return {
        "study": "digits-pareto",
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "size_bytes", "direction": "minimize"},
        ],
        "baseline": {"accuracy": 97.5, "macs": 1_200_000.0, "size_bytes": 80_000.0},
        "trials": trials,
        "pareto": [t for t in trials if t["pareto"]],
    }


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _render(table: Any) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_html_is_self_contained_and_shows_every_measured_trial(
    summary: dict[str, Any], tmp_path: Path
) -> None:
    path = write_pareto_html(summary, tmp_path / "out" / "pareto.html")
    html = path.read_text(encoding="utf-8")
    assert len(html) > 1_000_000  # plotly.js is embedded: the file works offline
    assert '<script src="http' not in html
    for number in (11, 12, 13, 14, 16):
        assert f"trial {number} (" in html
    assert "trial 15 (" not in html  # no accuracy, nothing to place on the accuracy axis
    assert "trial 41 (" not in html  # failed: no trustworthy metrics
    assert "Pareto front" in html
    assert "baseline" in html
    assert "size_bytes (lower is better)" in html
    assert "trial-0012.yaml" in html  # the plan path is in the hover text


def test_html_with_one_objective_plots_it_by_trial_number(summary: dict[str, Any], tmp_path: Path) -> None:
    summary["objectives"] = summary["objectives"][:1]
    html = write_pareto_html(summary, tmp_path / "single.html").read_text(encoding="utf-8")
    assert "trial number" in html
    assert "trial 13 (" in html
    assert "accuracy (higher is better)" in html


def test_png_is_a_valid_image(summary: dict[str, Any], tmp_path: Path) -> None:
    path = write_pareto_png(summary, tmp_path / "pareto.png", dpi=100)
    assert _png_size(path) == (800, 550)
    assert path.stat().st_size > 10_000


def test_png_of_a_search_without_results_still_renders(tmp_path: Path) -> None:
    empty = {"study": "new", "objectives": [{"metric": "accuracy", "direction": "maximize"}], "trials": []}
    path = write_pareto_png(empty, tmp_path / "empty.png")
    assert _png_size(path)[0] > 0
    html = write_pareto_html(empty, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "no trial with metrics yet" in html


def test_table_lists_the_front_best_first_with_ratios_to_the_baseline(summary: dict[str, Any]) -> None:
    text = _render(pareto_table(summary))
    lines = text.splitlines()
    assert "digits-pareto: 2 Pareto-optimal of 7 trials" in text
    header = next(line for line in lines if "trial" in line and "plan" in line)
    assert "accuracy ↑" in header
    assert "size_bytes ↓" in header
    assert "MACs ratio" in header
    assert "size ratio" in header
    rows = [line for line in lines if "plans/trial-" in line]
    assert [row.split()[1] for row in rows] == ["11", "12"]  # best accuracy first
    assert "0.250" in rows[0]  # MACs 300k of 1.2M
    assert "0.500" in rows[0]  # 40 kB of 80 kB
    assert "0.250" in rows[1]  # 20 kB of 80 kB
    assert "40,000" in rows[0]
    baseline = next(line for line in lines if "baseline" in line)
    assert "97.5" in baseline
    assert "80,000" in baseline
    assert not any("trial-0013" in line for line in lines)


def test_table_without_baseline_leaves_out_the_ratio_columns(summary: dict[str, Any]) -> None:
    del summary["baseline"]
    text = _render(pareto_table(summary))
    assert "ratio" not in text
    assert "plans/trial-0011.yaml" in text


def test_importing_the_report_module_loads_no_plotting_library() -> None:
    code = (
        "import sys, orchestrator.report\n"
        "loaded = [m for m in ('plotly', 'matplotlib') if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_enqueued_plans_no_worker_started_are_waiting_and_not_counted(tmp_path: Path) -> None:
    import optuna

    from orchestrator.summary import build_summary

    study = optuna.create_study(directions=["maximize"])
    study.set_user_attr("objectives", [{"metric": "accuracy", "direction": "maximize"}])
    for x in (1, 2, 3):
        study.enqueue_trial({"x": x})
    trial = study.ask()
    trial.suggest_int("x", 0, 3)
    trial.set_user_attr("metrics", {"accuracy": 90.0})
    trial.set_user_attr("state", "complete")
    study.tell(trial, [90.0])
    summary = build_summary(study, tmp_path)
    assert summary["counts"]["waiting"] == 2
    assert summary["counts"]["running"] == 0
    assert "1 Pareto-optimal of 1 trials" in str(pareto_table(summary).title)


def test_a_plot_that_fails_midway_leaves_the_previous_one_whole(
    summary: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers sharing a runs dir, or one stopped while it writes, never leave half a file behind."""
    from matplotlib.figure import Figure

    path = write_pareto_png(summary, tmp_path / "pareto.png")
    before = path.read_bytes()

    def torn(self: Figure, fname: Path, **kwargs: Any) -> None:
        Path(fname).write_bytes(before[:100])
        raise MemoryError

    monkeypatch.setattr(Figure, "savefig", torn)
    with pytest.raises(MemoryError):
        write_pareto_png(summary, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"]
