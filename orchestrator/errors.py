"""Errors raised by the orchestrator.

Every error a user can cause derives from :class:`OrchestratorError` and carries the exit code the
command line returns for it: 2 for bad input (policy, plan, unknown names), 1 for everything else.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = [
    "DuplicateComponentError",
    "MissingExtraError",
    "ModelFileError",
    "OrchestratorError",
    "PlanError",
    "PluginLoadError",
    "PolicyError",
    "UnknownComponentError",
]


def printable(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so a message stays on one line."""
    return text if text.isprintable() else repr(text)[1:-1]


def location(path: str | Path | None, line: int | None, field: str | None) -> str:
    """``file:line: field 'a.b'``, leaving out the parts that are unknown."""
    where = ""
    if path is not None:
        where = str(path) if line is None else f"{path}:{line}"
    return ": ".join(p for p in (where, f"field '{printable(field)}'" if field else "") if p)


class OrchestratorError(Exception):
    """Base class of all errors the orchestrator reports to users."""

    exit_code: int = 1


class PolicyError(OrchestratorError, ValueError):
    """A policy or plan file is malformed. Names the file, the line and the field."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.message = message
        prefix = location(self.path, line, field)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class PlanError(PolicyError):
    """A plan does not fit the model it is applied to (unknown layer, unsupported bits, ...)."""


class UnknownComponentError(PolicyError, LookupError):
    """A policy names a component that no loaded plugin provides. Lists the known names.

    A :class:`PolicyError`: once the policy is known (:meth:`with_location`), it names its file, line and
    field.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        known: Iterable[str],
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        self.reason = reason
        listing = ", ".join(self.known) if self.known else "none"
        if reason is None:
            close = difflib.get_close_matches(name, self.known, n=1)
            guess = f" (did you mean '{close[0]}'?)" if close else ""
            self.detail = f"unknown {kind} '{printable(name)}'{guess}; known {kind}s: {listing}"
        else:
            why = printable(reason)
            self.detail = f"cannot load {kind} '{printable(name)}': {why}; known {kind}s: {listing}"
        if kind == "task":
            self.detail += " (or your own Task class by import path, module:Class)"
        super().__init__(self.detail, path=path, line=line, field=field)

    def with_location(
        self, *, path: str | Path | None, line: int | None, field: str | None
    ) -> UnknownComponentError:
        """The same error, naming where the policy names the component."""
        return UnknownComponentError(
            self.kind, self.name, self.known, path=path, line=line, field=field, reason=self.reason
        )


class DuplicateComponentError(OrchestratorError):
    """Two plugins register a component of the same kind under the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(
            f"{kind} '{name}' is registered twice: by plugin '{first}' and by plugin '{second}'; "
            f"block one of them with --block NAME or ORCHESTRATOR_BLOCK=NAME"
        )


class PluginLoadError(OrchestratorError):
    """A plugin failed to import or to register. Names the plugin and its distribution."""

    def __init__(self, plugin: str, distribution: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.distribution = distribution
        self.cause = cause
        super().__init__(
            f"plugin '{plugin}' from distribution '{distribution}' failed to load: "
            f"{type(cause).__name__}: {cause}. "
            f"Start without it with --block {plugin} or ORCHESTRATOR_BLOCK={plugin}, "
            f"or uninstall '{distribution}'."
        )


class MissingExtraError(OrchestratorError, ImportError):
    """An optional dependency is missing; names the pip extra that installs it."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"'{module}' is not installed; install it with: pip install 'compression-orchestrator[{extra}]'"
        )


class ModelFileError(OrchestratorError):
    """A model file cannot be used: unreadable, not a checkpoint, not fitting the model, or needing full
    unpickling (which runs code from the file) that the user did not allow. Names the file."""

    exit_code = 2

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
