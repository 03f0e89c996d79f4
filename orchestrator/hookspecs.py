"""Every hook of the orchestrator: the one page a plugin author reads.

A plugin is a module (or object) exposed through the ``orchestrator`` entry-point group that implements
some of these hooks with :data:`orchestrator.hookimpl`::

    # my_plugin.py
    from orchestrator import hookimpl

    @hookimpl
    def orchestrator_register(registry):
        registry.register(MyScorer)

and in its ``pyproject.toml``::

    [project.entry-points.orchestrator]
    my-plugin = "my_plugin"

Registration hooks run once when plugins are loaded. Lifecycle hooks let observers (the MLflow tracker is
one) follow a search without the search knowing them; an observer must not raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from orchestrator.events import SearchFinished, SearchStarted, TrialFinished
    from orchestrator.registry import ComponentRegistry

PROJECT_NAME = "orchestrator"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]


@hookspec
def orchestrator_register(registry: ComponentRegistry) -> None:
    """Register component classes (scorers, pruners, quantizers, distillers, tasks, samplers).

    Call ``registry.register(cls)`` for each class; the class's ``kind`` and ``name`` decide where it
    goes. Registering a name that another plugin already registered for the same kind is an error that
    names both plugins.
    """


@hookspec
def orchestrator_search_started(event: SearchStarted) -> None:
    """A search started (or resumed): study name, storage, policy and baseline metrics."""


@hookspec
def orchestrator_trial_finished(event: TrialFinished) -> None:
    """A trial ended, whatever its state (complete, infeasible, gated or failed)."""


@hookspec
def orchestrator_search_finished(event: SearchFinished) -> None:
    """A search ended; the event carries the summary that was written."""
