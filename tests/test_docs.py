"""The generated documentation matches the code; regenerate it with `nox -s docs` or
`python -m orchestrator.docs`."""

from __future__ import annotations

import re
import shutil
from typing import TYPE_CHECKING, Any

import typer.main

from orchestrator import hookspecs, policy_json_schema
from orchestrator.cli import app
from orchestrator.docs import main, render

from .conftest import REPO

if TYPE_CHECKING:
    from pathlib import Path

DOCS = REPO / "docs"


def test_generated_docs_are_up_to_date() -> None:
    stale = [path.name for path, text in render(DOCS).items() if path.read_text(encoding="utf-8") != text]
    assert not stale, f"out of date: {', '.join(stale)}; run `python -m orchestrator.docs` (or `nox -s docs`)"


def test_policy_reference_has_every_field_of_the_json_schema() -> None:
    text = (DOCS / "policies.md").read_text(encoding="utf-8")
    schema = policy_json_schema()
    models: dict[str, Any] = {schema["title"]: schema, **schema["$defs"]}
    for name, model in models.items():
        for field in model.get("properties", {}):
            assert f"| `{field}` |" in text, f"{name}.{field} is not in docs/policies.md"
        for field, spec in model.get("properties", {}).items():
            if "description" in spec:
                assert " ".join(spec["description"].split()) in text, f"{name}.{field}'s description"


def test_cli_reference_has_every_command_and_option() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    for command in group.commands.values():  # type: ignore[attr-defined]
        assert f"## orchestrate {command.name}\n" in text
        for param in command.params:
            for flag in [*param.opts, *param.secondary_opts] if param.param_type_name == "option" else []:
                assert flag in text, f"orchestrate {command.name} {flag}"
    assert "--block" in text


def test_plugin_guide_has_every_hook() -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    hooks = [name for name in dir(hookspecs) if name.startswith("orchestrator_")]
    assert hooks
    for hook in hooks:
        assert f"### `{hook}(" in text
    assert "### `ScorerContract`" in text
    assert "### `Quantizer`" in text


def test_check_finds_a_stale_file_and_a_rewrite_fixes_it(tmp_path: Path, capsys: Any) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    cli = docs / "cli.md"
    cli.write_text(cli.read_text(encoding="utf-8").replace("## orchestrate search", "## orchestrate serch"))
    assert main(["--docs", str(docs), "--check"]) == 1
    assert "cli.md: out of date" in capsys.readouterr().out
    assert "serch" in cli.read_text(encoding="utf-8")  # --check writes nothing
    assert main(["--docs", str(docs)]) == 0
    assert main(["--docs", str(docs), "--check"]) == 0


def test_readme_links_the_documentation() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("plugins.md", "policies.md", "cli.md"):
        assert re.search(rf"\]\(docs/{re.escape(name)}\)", readme), name
