"""A policy names the user's own task class by import path (``module:Class``), with no plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

from .conftest import REPO

EXAMPLE = REPO / "examples" / "06_task_by_import_path"

POLICY = """\
schema_version: 1
task: {task}
pipeline:
  pruner: torch-pruning
plan:
  layers: {{}}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory holding the user's modules; the modules imported from it are forgotten."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _validate(workdir: Path, task: str) -> tuple[int, str]:
    path = workdir / "policy.yaml"
    path.write_text(POLICY.format(task=task))
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, " ".join(result.output.split())


def test_the_example_searches_its_own_task_from_its_directory(tmp_path: Path) -> None:
    """As the example's docstring says: cd into it and run orchestrate search, no install."""
    example = shutil.copytree(EXAMPLE, tmp_path / "example")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [shutil.which("orchestrate") or "orchestrate", "search", "digits-mlp.yaml", "--budget", "4"]
    done = subprocess.run(command, cwd=example, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((example / "orchestrate-runs" / "digits-mlp" / "summary.json").read_text())
    assert summary["counts"]["complete"] == 4
    assert summary["baseline"]["accuracy"] > 90
    sizes = [t["metrics"]["size_bytes"] for t in summary["trials"]]
    assert min(sizes) < 0.6 * summary["baseline"]["size_bytes"]  # pruned and int8 plans are smaller
    plan = summary["pareto"][0]["plan"]  # a Pareto plan file applies again from here
    command = [command[0], "apply", plan, "--out", "applied"]
    done = subprocess.run(command, cwd=example, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((example / "applied" / "metrics.json").read_text())
    assert metrics["task"] == "digits_mlp:DigitsMLP"
    assert metrics["compressed"]["macs"] == summary["pareto"][0]["metrics"]["macs"]


def test_a_task_class_in_the_working_directory_is_found(workdir: Path) -> None:
    (workdir / "my_tasks.py").write_text(
        (EXAMPLE / "digits_mlp.py").read_text().replace("class DigitsMLP", "class Mine")
    )
    assert _validate(workdir, "my_tasks:Mine") == (0, f"{workdir / 'policy.yaml'}: ok")


@pytest.mark.parametrize(
    ("module", "task", "says"),
    [
        ("", "no_such_module:Task", "no module named 'no_such_module' in the working directory"),
        ("X = 1\n", "mod:Task", "module 'mod' has no attribute 'Task'"),
        ("X = 1\n", "mod:X", "'mod:X' is a int value, not a Task class"),
        (
            "from orchestrator import ClassificationTask\nclass Half(ClassificationTask):\n    name = 'h'\n",
            "mod:Half",
            "task class 'mod:Half' does not implement build_model, eval_data, train_data",
        ),
        ("import json\n\n\nraise ValueError('no data')\n", "mod:Task", "ValueError: no data (mod.py:4)"),
    ],
)
def test_an_import_path_that_leads_nowhere_says_why(workdir: Path, module: str, task: str, says: str) -> None:
    if module:
        (workdir / "mod.py").write_text(module)
    code, output = _validate(workdir, task)
    assert code == 2
    assert f"policy.yaml:2: field 'task.name': cannot load task '{task}': " in output
    assert says in output.replace(str(workdir) + "/", "")
    assert "known tasks: digits-cnn" in output


def test_nothing_the_path_names_is_called_unless_it_is_a_task_class(workdir: Path) -> None:
    """A policy sent to you cannot run a function by naming it (``os:system``)."""
    (workdir / "mod.py").write_text(
        textwrap.dedent("""\
            from pathlib import Path

            def make_task(**options):
                Path("called").write_text("yes")
            """)
    )
    code, output = _validate(workdir, "mod:make_task")
    assert code == 2
    assert "'mod:make_task' is a function (make_task), not a Task class" in output
    assert not (workdir / "called").exists()
    code, output = _validate(workdir, "os:system")
    assert (code, "not a Task class" in output) == (2, True)


def test_a_local_file_does_not_shadow_an_installed_package(workdir: Path) -> None:
    (workdir / "wave.py").write_text("raise RuntimeError('the local wave.py was imported')\n")
    assert "wave" not in sys.modules  # else nothing would be imported at all
    code, output = _validate(workdir, "wave:Wave_read")
    assert code == 2
    assert "'wave:Wave_read' is the class Wave_read, not a Task class" in output


def test_a_misspelt_task_name_gets_a_suggestion(workdir: Path) -> None:
    code, output = _validate(workdir, "digit-cnn")
    assert code == 2
    assert "unknown task 'digit-cnn' (did you mean 'digits-cnn'?)" in output
    assert "or your own Task class by import path, module:Class" in output
