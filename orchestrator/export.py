"""Exporting a compressed model to the formats deployment tools read, and loading it back.

- ``torchscript``: the artifact every report measures (see :mod:`orchestrator.artifact`); carries pruned
  shapes, torch.ao int8 kernels and bit-packed weights.
- ``pt2``: ``torch.export`` (``torch.export.save``), batch size dynamic. torch.ao int8 modules cannot be
  exported.
- ``onnx``: the ``torch.onnx`` exporter, batch size dynamic; needs ``pip install
  'compression-orchestrator[onnx]'``. torch.ao int8 modules cannot be exported.
- ``state_dict``: the weights as plain tensors, with the policy and plan that give the model its shape,
  loadable with ``torch.load(weights_only=True)``: :func:`load_exported` rebuilds the architecture from
  the task and the plan (pruning, then weight-only packing), then loads the weights. Not for torch.ao
  int8 modules, whose packed weights are not plain tensors.

A format that cannot carry a model gives an :class:`ExportError` naming the formats that can.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.errors import MissingExtraError, OrchestratorError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from orchestrator.policy import Policy
    from orchestrator.registry import PluginRegistry

__all__ = ["FORMATS", "ExportError", "Format", "export_model", "load_exported", "max_difference"]

Format = Literal["pt2", "torchscript", "onnx", "state_dict"]
FORMATS: tuple[Format, ...] = ("pt2", "torchscript", "onnx", "state_dict")
STATE_DICT_FORMAT = "compression-orchestrator/state_dict/1"


class ExportError(OrchestratorError):
    """The model cannot be written in the requested format."""

    exit_code = 2


def export_model(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    fmt: Format,
    out: Path,
    *,
    policy: Policy | None = None,
) -> Path:
    """Write ``model`` to ``out`` in format ``fmt``; :class:`ExportError` names the formats that can."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _WRITERS[fmt](model, example_inputs, out, policy)
    except ExportError:
        raise
    except Exception as exc:  # each exporter fails in its own way on ops it cannot carry
        able = [f for f in FORMATS if f != fmt and _can_write(f, model, example_inputs, policy)]
        raise ExportError(
            f"cannot export this model as {fmt}: {_first_line(exc)}; "
            f"formats that can carry it: {', '.join(able) or 'none'}"
        ) from exc
    return out


def load_exported(path: Path, registry: PluginRegistry | None = None, *, trusted: bool | None = None) -> Any:
    """A callable model from a file written by :func:`export_model` (format told by its content).

    ``onnx`` files come back as a small wrapper that runs ONNX Runtime on torch tensors. ``pt2`` archives
    are read by ``torch.export.load``, which unpickles their weights and constants (running any code they
    name): they load only when ``trusted`` (e.g. a file this process just wrote) or, when it is None, when
    model files are trusted (:func:`orchestrator.model_files.model_files_trusted`); else a
    :class:`~orchestrator.errors.ModelFileError` says so. The other formats run no code from the file.
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _OnnxModel(path)
    if suffix == ".pt2":
        return _load_pt2(path, trusted)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith("/constants.pkl") for name in names):
        from orchestrator.artifact import load_artifact

        return load_artifact(path)
    if any(name.endswith("/archive_format") or "/models/" in name for name in names):
        return _load_pt2(path, trusted)
    return _load_state_dict(path, registry)


def _load_pt2(path: Path, trusted: bool | None) -> Any:
    import torch

    from orchestrator.model_files import refuse_untrusted

    what = "is a pt2 archive, whose weights and constants torch.export.load unpickles"
    refuse_untrusted(path, what, "Export it as torchscript, onnx or state_dict instead", trusted=trusted)
    return torch.export.load(str(path)).module()


def max_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two model outputs (tensors or tuples of them)."""
    import torch

    left = a if isinstance(a, tuple | list) else (a,)
    right = b if isinstance(b, tuple | list) else (b,)
    return max(
        float((torch.as_tensor(x) - torch.as_tensor(y)).abs().max()) for x, y in zip(left, right, strict=True)
    )


# -- writers ----------------------------------------------------------------------------------------------
def _batch_dynamic(example_inputs: tuple[Any, ...]) -> tuple[dict[int, Any], ...]:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return tuple({0: batch} for _ in example_inputs)


def _write_torchscript(model: nn.Module, example: tuple[Any, ...], out: Path, _policy: Policy | None) -> None:
    from orchestrator.artifact import save_artifact

    save_artifact(model, example, out)


def _write_pt2(model: nn.Module, example: tuple[Any, ...], out: Path, _policy: Policy | None) -> None:
    import torch

    _refuse_torch_ao(model, "pt2")
    program = torch.export.export(model.eval(), example, dynamic_shapes=_batch_dynamic(example))
    torch.export.save(program, str(out))


def _write_onnx(model: nn.Module, example: tuple[Any, ...], out: Path, _policy: Policy | None) -> None:
    import importlib.util
    import warnings

    import torch

    if importlib.util.find_spec("onnxscript") is None:
        raise MissingExtraError("onnxscript", "onnx")
    _refuse_torch_ao(model, "onnx")
    names = [f"input_{i}" for i in range(len(example))]
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(),
            example,
            dynamo=True,
            input_names=names,
            output_names=["output"],
            dynamic_shapes=_batch_dynamic(example),
            verbose=False,
        )
        assert program is not None
        program.save(str(out))


def _write_state_dict(model: nn.Module, example: tuple[Any, ...], out: Path, policy: Policy | None) -> None:
    import torch

    if policy is None or policy.plan is None:
        raise ExportError("state_dict export needs the policy and plan that shaped the model")
    _refuse_torch_ao(model, "state_dict")
    state = model.state_dict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise ExportError(f"state_dict export holds plain tensors only; '{key}' is not one")
    torch.save(
        {"format": STATE_DICT_FORMAT, "policy": policy.to_yaml(), "state_dict": dict(state)},
        str(out),
    )


def _refuse_torch_ao(model: nn.Module, fmt: str) -> None:
    quantized = [
        name
        for name, module in model.named_modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized")
    ]
    if quantized:
        raise RuntimeError(f"{fmt} cannot carry torch.ao int8 modules (e.g. '{quantized[0]}')")


_WRITERS = {
    "pt2": _write_pt2,
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
    "state_dict": _write_state_dict,
}


def _can_write(fmt: Format, model: nn.Module, example: tuple[Any, ...], policy: Policy | None) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _WRITERS[fmt](model, example, Path(tmp) / f"probe.{fmt}", policy)
        except Exception:
            return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class _quiet:  # noqa: N801 - used as a context manager
    """Silence the ONNX exporter's progress prints and warnings about packages it does not need."""

    def __enter__(self) -> None:
        import contextlib
        import logging

        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._logger.setLevel(self._level)


# -- loaders ----------------------------------------------------------------------------------------------
class _OnnxModel:
    """ONNX Runtime session that takes and returns torch tensors."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        import torch

        feeds = {name: x.detach().cpu().numpy() for name, x in zip(self.names, inputs, strict=True)}
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _load_state_dict(path: Path, registry: PluginRegistry | None) -> nn.Module:
    import torch

    from orchestrator.pipeline import Baseline, Pipeline
    from orchestrator.policy import parse_policy
    from orchestrator.registry import load_registry

    saved = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != STATE_DICT_FORMAT:
        raise ExportError(f"{path} is not a state_dict export of this tool (nor TorchScript, pt2 or onnx)")
    policy = parse_policy(saved["policy"])
    assert policy.plan is not None
    pipeline = Pipeline.from_policy(policy, registry or load_registry())
    base = pipeline.task.build_model().eval()
    with torch.enable_grad():  # pruners trace dependencies through autograd
        model = pipeline.prune(policy.plan, Baseline(model=base, metrics={}, artifact=path))
    model, _ = pipeline.quantize(model, policy.plan)  # weight-only layers take their packed shape
    model.load_state_dict(saved["state_dict"])
    return model.eval()
