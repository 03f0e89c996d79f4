"""Quantizer ``torch-int8``: PyTorch int8, static for conv nets (FX graph mode), dynamic for Linear layers.

Per layer: a layer whose plan ``bits`` is 8 is quantized; a layer without bits (or with 32) stays float
(the per-layer fallback). Static mode calibrates activations on the task's calibration batches; dynamic
mode quantizes the weights of Linear layers and embedding tables (one float scale and zero point per
row: ``float_qparams_weight_only_qconfig``) and the activations of Linear layers on the fly, which is what
transformers need.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator import ComponentOptions, CompressionPlan, PlanError, Quantizer, Task, hookimpl
from orchestrator.layers import compressible_layers
from orchestrator.routing import route_bits


class TorchInt8Options(ComponentOptions):
    #: ``static``: weights and activations int8, calibrated (conv nets); ``dynamic``: int8 weights,
    #: activations quantized on the fly (Linear layers, transformers); ``auto``: static when a
    #: quantized layer is a convolution, else dynamic
    mode: Literal["auto", "static", "dynamic"] = "auto"
    #: torch.ao quantized engine
    backend: Literal["x86", "fbgemm", "qnnpack"] = "x86"
    #: training batches run through the model to calibrate activations
    calibration_batches: int = Field(default=8, ge=1)
    #: dynamic mode: one weight scale per output channel (True) or per tensor (False)
    per_channel: bool = True


class TorchInt8Quantizer(Quantizer[TorchInt8Options]):
    """Real int8 kernels from torch.ao: smaller artifacts and faster CPU inference."""

    name: ClassVar[str] = "torch-int8"
    Options = TorchInt8Options
    supported_bits: ClassVar[frozenset[int]] = frozenset({8})
    layer_types: ClassVar[tuple[str, ...]] = ("_ConvNd", "Linear", "Embedding")

    def accelerates(self, bits: int) -> bool:
        import torch

        return bits == 8 and self.options.backend in torch.backends.quantized.supported_engines

    def quantize(self, model: Any, plan: CompressionPlan, task: Task[Any]) -> Any:
        import torch
        from torch import nn

        layers = compressible_layers(model)
        route_bits([self], layers, plan.bits())  # a layer it cannot take (type or bits) is a PlanError
        chosen = set(plan.bits())
        if not chosen:
            return model
        mode = self.options.mode
        if mode == "auto":
            convs = any(isinstance(layers[n], nn.modules.conv._ConvNd) for n in chosen)
            mode = "static" if convs else "dynamic"
        torch.backends.quantized.engine = self.options.backend
        model = model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            if mode == "dynamic":
                return self._dynamic(model, layers, chosen)
            return self._static(model, layers, chosen, task)

    def _dynamic(self, model: Any, layers: dict[str, Any], chosen: set[str]) -> Any:
        import torch
        from torch import nn
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            float_qparams_weight_only_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        linear_qconfig = per_channel_dynamic_qconfig if self.options.per_channel else default_dynamic_qconfig

        spec: dict[str, Any] = {}
        for name in chosen:
            if isinstance(layers[name], nn.Embedding):
                spec[name] = float_qparams_weight_only_qconfig
            elif isinstance(layers[name], nn.Linear):
                spec[name] = linear_qconfig
            else:
                raise PlanError(
                    f"dynamic int8 quantizes Linear layers and embeddings only; '{name}' is "
                    f"{type(layers[name]).__name__} (use mode: static)",
                    field=f"plan.layers.{name}.bits",
                )
        return quantize_dynamic(model, spec, dtype=torch.qint8)

    def _static(self, model: Any, layers: dict[str, Any], chosen: set[str], task: Task[Any]) -> Any:
        import torch
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = get_default_qconfig_mapping(self.options.backend)
        for name in layers:
            if name not in chosen:
                mapping.set_module_name(name, None)
        example = task.example_inputs(2)
        try:
            prepared = prepare_fx(model, mapping, example)
        except Exception as exc:  # symbolic tracing of user models can fail in many ways
            raise PlanError(
                f"static int8 could not trace the model ({type(exc).__name__}: {exc}); "
                "use mode: dynamic for Linear layers"
            ) from exc
        with torch.no_grad():
            for batch in task.calibration_data(self.options.calibration_batches):
                prepared(*task.inputs(batch))
        return convert_fx(prepared)


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(TorchInt8Quantizer)
