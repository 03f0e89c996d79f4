"""Tasks named by import path: ``task: my_tasks:Digits`` in a policy, without a plugin.

The path names a :class:`~orchestrator.task.Task` subclass (or what ``classification_task(...)`` returns)
in a module importable from the working directory or the installed packages. Only classes are accepted:
nothing the path names is called before it is known to be a task.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any

from orchestrator.task import Task

__all__ = ["TaskPathError", "import_task", "is_import_path"]


class TaskPathError(LookupError):
    """An import path that does not lead to a task; the message says why."""


def is_import_path(name: str) -> bool:
    """``module:attribute`` (``pkg.mod:Class``), as opposed to a registered name."""
    module, sep, attribute = name.partition(":")
    return bool(sep) and _dotted(module) and _dotted(attribute)


def _dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def import_task(path: str) -> type[Task[Any]]:
    """The task class ``path`` (``module:Class``) names. Raises :class:`TaskPathError` saying why not."""
    if not is_import_path(path):
        raise TaskPathError(f"'{path}' is not an import path of the form module:Class")
    module_name, _, attribute = path.partition(":")
    _importable_from_working_directory()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise TaskPathError(
                f"no module named '{exc.name}' in the working directory or the installed packages"
            ) from None
        raise TaskPathError(f"importing '{module_name}' failed: {_described(exc)}") from None
    except Exception as exc:  # the user's module: its own error, said in one line
        raise TaskPathError(f"importing '{module_name}' failed: {_described(exc)}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise TaskPathError(f"module '{module_name}' has no attribute '{attribute}'")
        found = getattr(found, part)
    if not (inspect.isclass(found) and issubclass(found, Task)):
        raise TaskPathError(
            f"'{path}' is {_kind_of(found)}, not a Task class (subclass orchestrator.ClassificationTask, "
            "or assign what orchestrator.classification_task(...) returns)"
        )
    if inspect.isabstract(found):
        missing = ", ".join(sorted(getattr(found, "__abstractmethods__", ())))
        raise TaskPathError(f"task class '{path}' does not implement {missing}")
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
