"""Model files users bring, loaded without running code from them unless the user trusts them.

A task's ``weights:`` option names a file written by ``torch.save``. A state_dict
(``torch.save(model.state_dict(), PATH)``, also inside a checkpoint dict under ``state_dict``,
``model_state_dict`` or ``model``, with or without DataParallel's ``module.`` prefix) loads with
``torch.load(weights_only=True)``, which builds tensors and plain containers and nothing else.

A whole pickled model (``torch.save(model)``) needs full unpickling, and unpickling runs whatever code the
file names. Such a file is loaded only when the person running the command says they trust model files:
``orchestrate --trust-model-files COMMAND ...``, ``ORCHESTRATOR_TRUST_MODEL_FILES=1`` in the environment,
or :func:`trust_model_files` in Python. A policy cannot turn it on: policies are shared, and a file
someone sent must not be able to decide that the files it names are safe. Without trust, such a file gives
a :class:`~orchestrator.errors.ModelFileError` naming the file and the flag.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ModelFileError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TRUST_ENV", "load_model_file", "model_files_trusted", "refuse_untrusted", "trust_model_files"]

#: set to 1 (or true, yes, on) to allow model files that need full unpickling
TRUST_ENV = "ORCHESTRATOR_TRUST_MODEL_FILES"
_TRUTHY = frozenset({"1", "true", "yes", "on"})
#: keys under which training scripts commonly keep the state_dict in a checkpoint dict
_WRAPPERS = ("state_dict", "model_state_dict", "model")

_trusted: bool | None = None


def trust_model_files(trusted: bool | None = True) -> None:
    """Allow (``True``) or refuse (``False``) model files that need full unpickling, for this process;
    ``None`` leaves the decision to ``$ORCHESTRATOR_TRUST_MODEL_FILES``."""
    global _trusted
    _trusted = trusted


def model_files_trusted() -> bool:
    """Whether model files that need full unpickling may be loaded."""
    if _trusted is not None:
        return _trusted
    return os.environ.get(TRUST_ENV, "").strip().lower() in _TRUTHY


def load_model_file(path: str | Path, into: nn.Module) -> nn.Module:
    """``into`` with the weights of the file at ``path``: a state_dict, a checkpoint dict holding one, or
    (trusted files only) a whole pickled model of the same architecture.

    Raises :class:`~orchestrator.errors.ModelFileError` (exit code 2) naming the file when it cannot be
    read, is not a checkpoint, does not fit ``into``, or needs full unpickling without trust.
    """
    import torch

    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ModelFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, RuntimeError) as exc:
        text = str(exc)
        if model_files_trusted() and ("weights_only" in text or "Weights only" in text):
            saved = _load_trusted(path)
        elif "Unsupported global" in text or "TorchScript" in text:  # it names code to run
            refuse_untrusted(
                path, _untrusted(text), "Save a state_dict instead (torch.save(model.state_dict(), PATH))"
            )
        else:
            raise ModelFileError(path, f"is not a PyTorch checkpoint ({_detail(exc)})") from None
    except Exception as exc:  # EOFError, KeyError, ...: whatever a file that is not a checkpoint gives
        raise ModelFileError(path, f"is not a PyTorch checkpoint ({_detail(exc)})") from None
    state = _state_dict(saved)
    if state is None:
        raise ModelFileError(path, f"holds a {type(saved).__name__}, not a state_dict or a model")
    state = _fitted(path, into, state)
    into.load_state_dict(state)
    return into


def _untrusted(text: str) -> str:
    named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if named:
        return f"holds pickled Python objects ('{named.group(1)}')"
    if "TorchScript" in text:
        return "is a TorchScript archive, which torch.load reads only by full unpickling"
    return "holds pickled Python objects"


def refuse_untrusted(path: str | Path, what: str, instead: str, *, trusted: bool | None = None) -> None:
    """A :class:`~orchestrator.errors.ModelFileError` unless model files are trusted (``trusted``, or
    :func:`model_files_trusted` when it is None): the file ``what`` (why loading it runs code), the
    safer way (``instead``) and how to allow it."""
    if model_files_trusted() if trusted is None else trusted:
        return
    raise ModelFileError(
        path,
        f"{what}, and loading it would run code from the file. {instead}, or, only if you trust where the "
        f"file comes from, pass --trust-model-files (orchestrate --trust-model-files COMMAND ...) or set "
        f"{TRUST_ENV}=1",
    )


def _load_trusted(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelFileError(path, f"could not be unpickled ({_detail(exc)})") from None


def _detail(exc: BaseException) -> str:
    """The gist of a loading error, on one line (torch's weights-only errors are paragraphs)."""
    text = str(exc).strip()
    gist = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    lines = [gist.group(1)] if gist else text.splitlines()
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


def _is_state_dict(value: Any) -> bool:
    import torch

    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _state_dict(saved: Any) -> Mapping[str, Any] | None:
    """The state_dict a loaded file holds (itself, a whole model's, or in a checkpoint dict)."""
    from torch import nn

    if isinstance(saved, nn.Module):
        return saved.state_dict()
    if _is_state_dict(saved):
        return dict(saved)
    if isinstance(saved, Mapping):
        for key in _WRAPPERS:
            inner = saved.get(key)
            if isinstance(inner, nn.Module) or _is_state_dict(inner):
                return _state_dict(inner)
    return None


def _fitted(path: Path, model: nn.Module, state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` keyed as ``model`` is (``module.`` dropped); an error listing what does not fit."""
    expected = model.state_dict()
    out = dict(state)
    wrapped = all(k.startswith("module.") for k in out) and not any(k.startswith("module.") for k in expected)
    if out and wrapped:  # saved from torch.nn.DataParallel
        out = {k.removeprefix("module."): v for k, v in out.items()}
    missing = [k for k in expected if k not in out]
    unknown = [k for k in out if k not in expected]
    shapes = [
        f"{k} {tuple(out[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in out and out[k].shape != expected[k].shape
    ]
    problems = [
        f"{len(items)} {what} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for what, items in (("missing", missing), ("unknown", unknown), ("of another shape", shapes))
        if items
    ]
    if problems:
        raise ModelFileError(path, f"does not fit the task's model: {'; '.join(problems)}")
    return out
