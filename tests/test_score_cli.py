"""`orchestrate score` for every scorer on both image tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import load_registry
from orchestrator.cli import app

from .conftest import MNIST_SMALL as SMALL

SCORERS = load_registry().components.names("scorer")
TASKS = {"digits-cnn": {}, "mnist-resnet": SMALL}


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for task, options in TASKS.items():
        path = tmp_path_factory.mktemp("score") / f"{task}.yaml"
        path.write_text(yaml.safe_dump({"schema_version": 1, "task": {"name": task, "options": options}}))
        out[task] = path
    return out


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("scorer", SCORERS)
def test_score_prints_a_ranked_table_and_a_chart(
    scorer: str, task: str, policies: dict[str, Path], tmp_path: Path
) -> None:
    plot = tmp_path / "scores.png"
    args = ["score", str(policies[task]), "--scorer", scorer, "--json", "--plot", str(plot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["layers"]
    if scorer == "cka" and task == "digits-cnn":
        assert rows == []  # a plain CNN has no block that can be dropped
        return
    assert rows
    assert sorted(r["rank"] for r in rows) == list(range(1, len(rows) + 1))
    assert all(r["params"] > 0 and r["macs"] > 0 for r in rows)
    best = min(rows, key=lambda r: r["rank"])
    assert best["score"] == max(r["score"] for r in rows)
    if scorer == "cka":
        assert {r["type"] for r in rows} == {"BasicBlock"}
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_score_without_a_scorer_says_how_to_choose_one(policies: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["score", str(policies["digits-cnn"])])
    assert result.exit_code == 2
    assert "--scorer" in result.output
