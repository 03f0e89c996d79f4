"""Classes named by import path (``module:Class``) in a policy: a task without a plugin
(``task: my_tasks:Digits``), a custom layer and its pruning handler.

The module is imported from the installed packages or the working directory. Only classes deriving from
the expected base are accepted: nothing the path names is called before it is known to be one.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any, TypeVar

from orchestrator.task import Task

__all__ = ["ImportPathError", "import_class", "import_task", "is_import_path"]

T = TypeVar("T")

_TASK_HINT = (
    "subclass orchestrator.ClassificationTask, or assign what orchestrator.classification_task(...) returns"
)


class ImportPathError(LookupError):
    """An import path that does not lead to the class expected; the message says why."""


def is_import_path(name: str) -> bool:
    """``module:attribute`` (``pkg.mod:Class``), as opposed to a registered name."""
    module, sep, attribute = name.partition(":")
    return bool(sep) and _dotted(module) and _dotted(attribute)


def _dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def import_task(path: str) -> type[Task[Any]]:
    """The task class ``path`` (``module:Class``) names. Raises :class:`ImportPathError` saying why not."""
    return import_class(path, Task, hint=_TASK_HINT)  # type: ignore[type-abstract]


def import_class(path: str, base: type[T], *, hint: str) -> type[T]:
    """The class ``path`` (``module:Class``) names, a concrete subclass of ``base``; ``hint`` says how to
    write one. Raises :class:`ImportPathError` saying why not."""
    if not is_import_path(path):
        raise ImportPathError(f"'{path}' is not an import path of the form module:Class")
    module_name, _, attribute = path.partition(":")
    _importable_from_working_directory()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ImportPathError(
                f"no module named '{exc.name}' in the working directory or the installed packages"
            ) from None
        raise ImportPathError(f"importing '{module_name}' failed: {_described(exc)}") from None
    except Exception as exc:  # the user's module: its own error, said in one line
        raise ImportPathError(f"importing '{module_name}' failed: {_described(exc)}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ImportPathError(f"module '{module_name}' has no attribute '{attribute}'")
        found = getattr(found, part)
    if not (inspect.isclass(found) and issubclass(found, base)):
        raise ImportPathError(f"'{path}' is {_kind_of(found)}, not a {base.__name__} class ({hint})")
    if inspect.isabstract(found):
        missing = ", ".join(sorted(getattr(found, "__abstractmethods__", ())))
        raise ImportPathError(f"{base.__name__.lower()} class '{path}' does not implement {missing}")
    return found


def _importable_from_working_directory() -> None:
    """Put the working directory on the import path, as ``python -m`` does (``orchestrate`` does not),
    but last, so that a local file cannot shadow an installed package."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _kind_of(value: Any) -> str:
    if inspect.isclass(value):
        return f"the class {value.__qualname__}"
    if callable(value):
        return f"a {type(value).__name__} ({getattr(value, '__qualname__', '?')})"
    return f"a {type(value).__name__} value"


def _described(exc: BaseException) -> str:
    """``Type: message (file:line)``, the line being the last one in the user's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = next(
        (f for f in reversed(frames) if "importlib" not in f.filename and f.filename != __file__), None
    )
    where = f" ({f'{here.filename}:{here.lineno}'})" if here is not None else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"
