"""Quantizer ``inc``: Intel Neural Compressor (``pip install 'compression-orchestrator[inc]'``).

Modes:

- ``weight-only`` (default): INC's round-to-nearest (``algorithm: rtn``) or GPTQ (``algorithm: gptq``,
  calibrated on the task's data) quantizes the weights of each Linear layer to the plan's bits (2, 3, 4
  or 8), in groups of ``group_size`` input weights; layers without bits stay float. Embedding tables,
  which INC's weight-only pass skips, are quantized with INC's own round-to-nearest routine
  (``quant_tensor``). Every quantized layer is then stored as bit-packed codes
  (:mod:`orchestrator_builtins.packed`), so the artifact really is smaller; it is not faster, since the
  weights are unpacked on each call.
- ``static`` / ``dynamic``: int8 through INC's export path (``torch.export``, prepare, calibrate,
  convert). These fold the whole graph, so every Linear/conv layer is quantized: the plan must give them
  all 8 bits. The dynamic result is checked against the float model, because a conversion that skips
  the calibration pass is silently wrong.

INC writes a ``nc_workspace`` folder into the working directory: every call runs in a temporary one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import tempfile
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from orchestrator import ComponentOptions, CompressionPlan, PlanError, Quantizer, Task, hookimpl
from orchestrator.errors import MissingExtraError
from orchestrator.layers import compressible_layers

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

    from orchestrator_builtins.packed import PackedLinear

__all__ = ["IncOptions", "IncQuantizer"]

WEIGHT_ONLY_BITS = frozenset({2, 3, 4, 8})


class IncOptions(ComponentOptions):
    #: weight-only: bit-packed weights at 2-8 bits; static/dynamic: int8 through INC's export path
    mode: Literal["weight-only", "static", "dynamic"] = "weight-only"
    #: weight-only algorithm: round-to-nearest, or GPTQ (error-compensating, needs calibration data)
    algorithm: Literal["rtn", "gptq"] = "rtn"
    #: input weights sharing one scale; -1 means one scale per output channel
    group_size: int = Field(default=32, ge=-1)
    #: symmetric (signed codes) or asymmetric (unsigned codes with a zero point)
    scheme: Literal["sym", "asym"] = "sym"
    #: training batches run through the model for calibration (static, GPTQ)
    calibration_batches: int = Field(default=4, ge=1)
    #: largest mean relative error of the dynamic int8 output against the float model
    dynamic_tolerance: float = Field(default=0.2, gt=0)

    @field_validator("group_size")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("group_size must be positive, or -1 for one group per output channel")
        return value


def _share_transformers() -> None:
    """Give INC's modules ``transformers`` if it was imported after them.

    INC's weight-only modules import ``transformers`` at their own import only if it is already loaded,
    yet use it whenever it is loaded by the time they run: in a process that quantized with INC before
    loading a Hugging Face model, the next quantization fails with ``NameError: transformers``.
    """
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return
    for name, module in list(sys.modules.items()):
        if (
            module is not None
            and name.startswith("neural_compressor.")
            and "is_transformers_imported" in vars(module)
        ):
            vars(module).setdefault("transformers", transformers)


@contextlib.contextmanager
def _workspace() -> Iterator[None]:
    """Run INC in a throwaway working directory, with its INFO logging turned down."""
    import neural_compressor.torch.quantization  # noqa: F401 - its import sets the logger's level

    _share_transformers()
    logger = logging.getLogger("neural_compressor")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="orchestrator-inc-") as tmp, contextlib.chdir(tmp):
            yield
    finally:
        logger.setLevel(level)


class IncQuantizer(Quantizer[IncOptions]):
    """INC weight-only RTN/GPTQ at 2-8 bits per layer (bit-packed), or int8 through INC's export path."""

    name: ClassVar[str] = "inc"
    Options = IncOptions
    summary: ClassVar[str] = "Intel Neural Compressor: weight-only 2/3/4/8-bit (packed) or int8 via export"
    supported_bits: ClassVar[frozenset[int]] = WEIGHT_ONLY_BITS
    layer_types: ClassVar[tuple[str, ...]] = ("Linear", "Conv2d", "Embedding")

    def handles(self, layer: nn.Module, bits: int) -> bool:
        if self.options.mode != "weight-only":
            return bits == 8 and type(layer).__name__ in ("Linear", "Conv2d", "Conv1d")
        return super().handles(layer, bits)

    def describe_support(self) -> str:
        if self.options.mode != "weight-only":
            return f"{self.options.mode} int8 of Linear and conv layers"
        return f"weight-only bits {sorted(self.supported_bits)} of Linear, Conv2d and Embedding layers"

    def accelerates(self, bits: int) -> bool:
        return False  # weight-only unpacks on every call; INC int8 is fast only under torch.compile

    def quantize(self, model: Any, plan: CompressionPlan, task: Task[Any]) -> Any:
        import importlib.util

        if importlib.util.find_spec("neural_compressor") is None:
            raise MissingExtraError("neural_compressor", "inc")
        layers = compressible_layers(model)
        chosen = plan.bits()
        for name, bits in chosen.items():
            if name not in layers or not self.handles(layers[name], bits):
                kind = type(layers[name]).__name__ if name in layers else "missing"
                raise PlanError(
                    f"quantizer 'inc' cannot bring layer '{name}' ({kind}) to {bits} bits; it quantizes "
                    f"{self.describe_support()}",
                    field=f"plan.layers.{name}.bits",
                )
        if not chosen:
            return model
        with _workspace():
            if self.options.mode == "weight-only":
                return self._weight_only(model.eval(), layers, chosen, task)
            return self._int8(model.eval(), layers, chosen, task)

    # -- weight-only -----------------------------------------------------------------------------------
    def _weight_only(
        self, model: Any, layers: dict[str, Any], chosen: dict[str, int], task: Task[Any]
    ) -> Any:
        from torch import nn

        linear = {n: b for n, b in chosen.items() if isinstance(layers[n], nn.Linear)}
        if linear:
            model = self._inc_linear(model, linear, task)
        for name, bits in chosen.items():
            if isinstance(layers[name], nn.Embedding | nn.Conv2d):
                _replace(model, name, self._packed_rows(layers[name], bits))
        return model

    def _config(self, bits: int | None) -> Any:
        import os

        from neural_compressor.torch.quantization import GPTQConfig, RTNConfig

        kind = RTNConfig if self.options.algorithm == "rtn" else GPTQConfig
        extra = {} if kind is RTNConfig else {"model_path": os.getcwd()}  # GPTQ resolves a path even unused
        if bits is None:
            return kind(dtype="fp32", use_layer_wise=False, **extra)
        return kind(
            bits=bits,
            group_size=self.options.group_size,
            use_sym=self.options.scheme == "sym",
            use_layer_wise=False,
            **extra,
        )

    def _inc_linear(self, model: Any, chosen: dict[str, int], task: Task[Any]) -> Any:
        import torch
        from neural_compressor.torch.quantization import convert, prepare
        from torch import nn

        if self.options.algorithm == "gptq":
            from neural_compressor.torch.algorithms.weight_only.gptq import trace_gptq_target_blocks

            blocks = list(trace_gptq_target_blocks(model)["transformers"])
            uniform = len({type(block) for block in blocks}) == 1
            if not (uniform and all(any(isinstance(m, nn.Linear) for m in b.modules()) for b in blocks)):
                raise PlanError(
                    "INC's GPTQ quantizes the blocks of a transformer stack (the first nn.ModuleList or "
                    "nn.Sequential of the model, holding blocks of one class with Linear layers) and this "
                    "model has none; use algorithm: rtn",
                    field="pipeline.quantizer.options.algorithm",
                )
        config = self._config(None)
        for name, bits in chosen.items():
            config.set_local(re.escape(name) + "$", self._config(bits))  # INC matches names as regexes
        prepared = prepare(model, config)
        if self.options.algorithm == "gptq":
            with torch.no_grad():
                for batch in task.calibration_data(self.options.calibration_batches):
                    prepared(*task.inputs(batch))
        converted = convert(prepared)
        for name in chosen:
            _replace(converted, name, _packed_linear(converted.get_submodule(name), chosen[name]))
        return converted

    def _packed_rows(self, layer: nn.Module, bits: int) -> Any:
        """An embedding table or conv layer quantized by INC's round-to-nearest routine and packed.

        INC's weight-only pass quantizes Linear layers only; these get the same rounding through its
        ``quant_tensor``, in groups along each row (each output channel of a conv). A row whose length is
        not a multiple of ``group_size`` gets one group.
        """
        import torch
        from neural_compressor.torch.algorithms.weight_only.utility import quant_tensor
        from torch import nn

        from orchestrator_builtins.packed import PackedConv2d, PackedEmbedding

        table = layer.weight
        assert isinstance(table, torch.Tensor)
        weight = table.detach().float().reshape(table.shape[0], -1).clone()
        columns, group = weight.shape[1], self.options.group_size
        if group < 0 or columns % group:
            group = columns
        ints, scales, zeros = quant_tensor(
            weight, bits=bits, group_size=group, scheme=self.options.scheme, return_int=True
        )
        codes, offsets = _unsigned(ints, zeros, scales.float())
        if isinstance(layer, nn.Embedding):
            return PackedEmbedding(
                codes, scales.float(), offsets, bits=bits, group_size=group, padding_idx=layer.padding_idx
            )
        assert isinstance(layer, nn.Conv2d)
        return PackedConv2d(
            codes, scales.float(), offsets, layer.bias, bits=bits, group_size=group, like=layer
        )

    # -- int8 through export --------------------------------------------------------------------------
    def _int8(self, model: Any, layers: dict[str, Any], chosen: dict[str, int], task: Task[Any]) -> Any:
        import torch
        from neural_compressor.torch.export import export
        from neural_compressor.torch.quantization import (
            DynamicQuantConfig,
            StaticQuantConfig,
            convert,
            prepare,
        )
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        missing = [n for n, m in layers.items() if self.handles(m, 8) and n not in chosen]
        if missing:
            raise PlanError(
                f"inc {self.options.mode} int8 quantizes the whole graph; give these layers bits 8 too, or "
                f"use torch-int8 for per-layer int8: {', '.join(missing)}",
                field="plan.layers",
            )
        example = task.example_inputs(2)
        batch_dim = torch.export.Dim("batch", min=1, max=1 << 16)
        try:
            shapes = tuple({0: batch_dim} for _ in example)
            exported = export(model, example_inputs=example, dynamic_shapes=shapes)
        except RuntimeError as exc:
            raise PlanError(
                f"INC could not export the model for {self.options.mode} int8 ({exc}); use torch-int8"
            ) from exc
        dynamic = self.options.mode == "dynamic"
        prepared = prepare(exported, DynamicQuantConfig() if dynamic else StaticQuantConfig())
        with torch.no_grad():
            batches = list(task.calibration_data(1 if dynamic else self.options.calibration_batches))
            for batch in batches:  # dynamic too: convert without this pass gives wrong outputs
                prepared(*task.inputs(batch))
        quantized = convert(prepared, fold_quantize=True)  # int8 weights in the graph, not float
        allow_exported_model_train_eval(quantized)  # the pipeline calls .eval() on every result
        if dynamic:
            self._check_dynamic(model, quantized, task.inputs(batches[0]))
        return quantized

    def _check_dynamic(self, reference: Any, quantized: Any, inputs: tuple[Any, ...]) -> None:
        import torch

        with torch.no_grad():
            want, got = reference(*inputs), quantized(*inputs)
        error = float((got - want).norm() / want.norm().clamp(min=1e-12))
        if not error <= self.options.dynamic_tolerance:
            raise PlanError(
                f"INC dynamic int8 output differs from the float model by {error:.2f} (relative); "
                f"tolerance {self.options.dynamic_tolerance}: use torch-int8 mode: dynamic instead"
            )

    def metrics(self, model: Any) -> dict[str, float]:
        from orchestrator_builtins.packed import PackedConv2d, PackedEmbedding, PackedLinear

        packed = [m for m in model.modules() if isinstance(m, PackedLinear | PackedConv2d | PackedEmbedding)]
        return {"inc_packed_layers": float(len(packed))} if packed else {}


def _unsigned(ints: Any, zeros: Any | None, scales: Any) -> tuple[Any, Any]:
    """Codes shifted to start at 0, and zero points (one per scale) shifted with them."""
    import torch

    low = min(int(ints.min()), 0)
    base = zeros.float() if zeros is not None else torch.zeros_like(scales)
    return (ints - low).to(torch.int32), (base - low).expand_as(scales).contiguous()


def _packed_linear(module: Any, bits: int) -> PackedLinear:
    """INC's ``INCWeightOnlyLinear`` re-stored as a traceable :class:`PackedLinear`."""
    from orchestrator_builtins.packed import PackedLinear

    params = module.unpack()
    ints, scales, zeros = params["int_weight"], params["scales"].float(), params.get("zp")
    codes, offsets = _unsigned(ints, zeros, scales)
    return PackedLinear(codes, scales, offsets, module.bias, bits=bits, group_size=module.group_size)


def _replace(model: Any, name: str, new: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(IncQuantizer)
