"""pytest fixtures for plugin tests: an isolated registry, the tiny task and the tiny models.

Enable them in your ``conftest.py``::

    pytest_plugins = ["orchestrator.testing.fixtures"]

(or with ``pytest -p orchestrator.testing.fixtures``). They are opt-in, as pytest's own ``pytester`` is,
and not registered through a ``pytest11`` entry point: such an entry point would load this module, and
torch with it, into every pytest run of every project installed beside compression-orchestrator, and put
these fixture names into test suites that never asked for them. The contract suites of
:mod:`orchestrator.testing.contracts` carry their own fixtures and need no plugin.

Fixtures:

- ``orchestrator_registry``: a fresh :class:`~orchestrator.registry.PluginRegistry` of the builtins and the
  ``tiny-digits`` task, plus the plugins and component classes named by the test's marker
  ``@pytest.mark.orchestrator_plugins(my_plugin_module, components=[MyScorer])``; other installed
  plugins and ``$ORCHESTRATOR_BLOCK`` are ignored (see :func:`~orchestrator.testing.isolated_registry`).
- ``tiny_task``: the ``tiny-digits`` task with the tiny CNN, trained once per session, in memory.
- ``tiny_cnn``, ``tiny_mlp``, ``tiny_resnet``: freshly initialised tiny models (seed 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from orchestrator.testing.models import tiny_model
from orchestrator.testing.registry import isolated_registry
from orchestrator.testing.tasks import TinyDigits

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.registry import PluginRegistry

MARKER = "orchestrator_plugins"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*plugins, components=[...]): plugins (modules or objects with hook implementations) and "
        "component classes the orchestrator_registry fixture loads beside the builtins",
    )


@pytest.fixture
def orchestrator_registry(request: pytest.FixtureRequest) -> PluginRegistry:
    """The builtins, ``tiny-digits`` and what the ``orchestrator_plugins`` marker names; nothing else."""
    markers = list(request.node.iter_markers(MARKER))
    plugins = [plugin for marker in markers for plugin in marker.args]
    classes = [cls for marker in markers for cls in marker.kwargs.get("components", ())]
    return isolated_registry(*plugins, components=classes)


@pytest.fixture(scope="session")
def tiny_task() -> TinyDigits:
    """``tiny-digits`` with the tiny CNN (its baseline is trained on first use, in memory)."""
    return TinyDigits()


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return tiny_model("cnn")


@pytest.fixture
def tiny_mlp() -> nn.Module:
    return tiny_model("mlp")


@pytest.fixture
def tiny_resnet() -> nn.Module:
    return tiny_model("resnet")
