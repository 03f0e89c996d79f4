"""Saving and loading compressed models as self-contained artifacts.

The artifact is a TorchScript archive: it carries pruned shapes and quantized kernels, loads in a fresh
process without this package or the model's source code, and runs no pickled Python code when loaded.
Its size on disk is the ``size_bytes`` every report gives. The archive is written without TorchScript's
debug records (``*.debug_pkl``: source positions for error messages, about 2 KB per module) and without
the example inputs, which are not needed to run it and would otherwise weigh on small models.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["load_artifact", "save_artifact"]


def save_artifact(model: nn.Module, example_inputs: tuple[Any, ...], path: str | Path) -> int:
    """Trace ``model`` on ``example_inputs``, write it to ``path`` and return its size in bytes."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example_inputs, check_trace=False, _store_inputs=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    _write_without_debug(buffer, path)
    return path.stat().st_size


def _write_without_debug(archive: io.BytesIO, path: Path) -> None:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info, src.read(info))


def load_artifact(path: str | Path) -> nn.Module:
    """Load a saved artifact on the CPU, ready for inference."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module: nn.Module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return module
