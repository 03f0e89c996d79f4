"""Quantizer ``fake-quant``: symmetric fake quantization of weights at 2 to 8 bits, for accuracy estimates.

Each layer whose plan ``bits`` is between 2 and 8 has its ``weight`` quantized and dequantized in place, in
float: with ``qmax = 2**(bits - 1) - 1`` and ``scale = max|w| / qmax`` (one scale per output channel, or
one per tensor with ``per_channel: false``), each weight becomes ``scale * clamp(round(w / scale), -qmax,
qmax)``.
A channel therefore takes at most ``2 * qmax + 1 < 2**bits`` distinct values. Biases stay float; activations
are not quantized. Layers whose bits are None or 32 are left untouched, bit for bit.

This only *simulates* low precision, cheaply, so a search can estimate the accuracy of a bit-width
assignment that no kernel on this machine runs: the weights are still stored and computed as float32. The
pipeline's ``size_bytes`` and latency are therefore those of the float artifact (nothing gets smaller or
faster), and :meth:`FakeQuantizer.accelerates` is False for every bit-width. :meth:`FakeQuantizer.metrics`
claims no size or speed; it reports

- ``fake_quant_simulated``: 1.0, marking the metrics of this model as simulated;
- ``fake_quant_theoretical_bytes``: the sum over the model's parameters of ``numel * bits / 8``, with 32 bits
  for every parameter outside a fake-quantized layer: what the weights would take at these bit-widths with
  a real low-bit kernel (which this quantizer does not provide).

The bit-width of each fake-quantized layer is kept as a plain attribute on its module, so it survives a
deep copy; the model traces and saves like any float model.
"""

from __future__ import annotations

from typing import Any, ClassVar

from orchestrator import ComponentOptions, CompressionPlan, PlanError, Quantizer, Task, hookimpl
from orchestrator.measure import theoretical_bytes

__all__ = ["FakeQuantOptions", "FakeQuantizer", "fake_quantize_weight"]

#: attribute holding the bit-width a module's weight was fake-quantized to
BITS_ATTR = "_orchestrator_fake_quant_bits"


class FakeQuantOptions(ComponentOptions):
    #: one scale per output channel (True) or one per weight tensor (False)
    per_channel: bool = True


def fake_quantize_weight(weight: Any, bits: int, *, channel_dim: int | None) -> Any:
    """``weight`` quantized to signed symmetric ``bits`` and dequantized back to its float dtype.

    ``channel_dim`` is the dimension holding the output channels (one scale each), or None for one scale.
    """
    import torch

    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    if channel_dim is None or w.dim() < 2:
        absmax = w.abs().amax()
    else:
        reduce = [d for d in range(w.dim()) if d != channel_dim]
        absmax = w.abs().amax(dim=reduce, keepdim=True)
    scale = absmax / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel stays zero
    q = torch.clamp(torch.round(w / safe), -qmax, qmax)
    return (q * safe).to(weight.dtype)


class FakeQuantizer(Quantizer[FakeQuantOptions]):
    """Quantize-dequantize of weights at 2-8 bits in float: accuracy estimates, no size or speed gain."""

    name: ClassVar[str] = "fake-quant"
    Options = FakeQuantOptions
    summary: ClassVar[str] = "simulated symmetric weight quantization at 2-8 bits (float storage)"
    supported_bits: ClassVar[frozenset[int]] = frozenset({2, 3, 4, 5, 6, 7, 8})
    simulated: ClassVar[bool] = True

    def accelerates(self, bits: int) -> bool:
        return False

    def quantize(self, model: Any, plan: CompressionPlan, task: Task[Any]) -> Any:
        import torch
        from torch import nn

        chosen = plan.bits()
        for name, bits in chosen.items():
            if bits not in self.supported_bits:
                raise PlanError(
                    f"quantizer 'fake-quant' cannot quantize layer '{name}' to {bits} bits; "
                    f"it supports {sorted(self.supported_bits)} (32 = float)",
                    field=f"plan.layers.{name}.bits",
                )
            try:
                module = model.get_submodule(name)
            except AttributeError as exc:
                raise PlanError(f"the model has no layer '{name}'", field=f"plan.layers.{name}") from exc
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise PlanError(
                    f"fake-quant quantizes layers with a weight; '{name}' ({type(module).__name__}) has none",
                    field=f"plan.layers.{name}.bits",
                )
            channel_dim: int | None = None
            if self.options.per_channel:
                transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
                channel_dim = 1 if transposed else 0
            with torch.no_grad():
                weight.copy_(fake_quantize_weight(weight, bits, channel_dim=channel_dim))
            setattr(module, BITS_ATTR, bits)
        return model

    def metrics(self, model: Any) -> dict[str, float]:
        bits = {
            name: int(getattr(module, BITS_ATTR))
            for name, module in model.named_modules()
            if isinstance(getattr(module, BITS_ATTR, None), int)
        }
        return {
            "fake_quant_simulated": 1.0,
            "fake_quant_theoretical_bytes": float(theoretical_bytes(model, bits)),
        }


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(FakeQuantizer)
