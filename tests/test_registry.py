from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from orchestrator import (
    DuplicateComponentError,
    PluginLoadError,
    Scorer,
    Scores,
    UnknownComponentError,
    hookimpl,
    load_registry,
)
from orchestrator.cli import app

if TYPE_CHECKING:
    from pathlib import Path


def test_builtins_cover_every_kind_with_their_distribution() -> None:
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    kinds = {row["kind"] for row in rows}
    assert {"scorer", "pruner", "quantizer", "distiller", "task"} <= kinds
    by_name = {row["name"]: row for row in rows}
    assert by_name["torch-pruning"]["distribution"] == "compression-orchestrator"
    assert by_name["digits-cnn"]["kind"] == "task"


class _Dup(Scorer):  # type: ignore[type-arg]
    name = "magnitude"

    def score(self, model, task, layers):  # type: ignore[no-untyped-def]
        return Scores(layers={})


class _DupPlugin:
    @hookimpl
    def orchestrator_register(self, registry):  # type: ignore[no-untyped-def]
        registry.register(_Dup)


def test_duplicate_name_names_both_plugins() -> None:
    with pytest.raises(DuplicateComponentError) as info:
        load_registry(plugins=[("my-dup", _DupPlugin())])
    assert "magnitude" in str(info.value)
    assert "'magnitude'" in str(info.value)
    assert "'my-dup'" in str(info.value)


def test_blocking_the_builtin_lets_a_replacement_register() -> None:
    reg = load_registry(block=["magnitude"], plugins=[("my-dup", _DupPlugin())])
    assert reg.components.info("scorer", "magnitude").plugin == "my-dup"


def test_unknown_name_lists_known_names(registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownComponentError) as info:
        registry.components.get("pruner", "torch-prunin")
    assert "torch-pruning" in str(info.value)


def test_isolated_registry_has_no_entry_point_plugins() -> None:
    reg = load_registry(entry_points_group=None)
    assert reg.components.infos() == []


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution whose plugin module raises at import."""
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom at import')\n")
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [orchestrator]
            broken = broken_plugin_mod
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    return "broken"


def test_plugin_failing_at_import_is_named_with_its_distribution(broken_plugin: str) -> None:
    with pytest.raises(PluginLoadError) as info:
        load_registry()
    message = str(info.value)
    assert "'broken'" in message
    assert "broken-plugin" in message
    assert "--block broken" in message

    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 1
    assert "broken-plugin" in result.output


def test_block_option_and_env_let_the_tool_start(broken_plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["--block", broken_plugin, "plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert "torch-pruning" in result.output

    monkeypatch.setenv("ORCHESTRATOR_BLOCK", broken_plugin)
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output


def test_hookimpl_with_a_misspelt_hook_fails_at_load() -> None:
    class Typo:
        @hookimpl
        def orchestrator_regster(self, registry):  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(PluginLoadError) as info:
        load_registry(entry_points_group=None, plugins=[("typo", Typo())])
    assert "'typo'" in str(info.value)


def test_importing_the_package_loads_neither_torch_nor_plugins() -> None:
    import subprocess
    import sys

    code = (
        "import sys, orchestrator, orchestrator.cli, orchestrator.pipeline;"
        "print('torch' in sys.modules, 'orchestrator_builtins.magnitude' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
