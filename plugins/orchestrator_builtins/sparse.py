"""Pruner ``sparse``: per-layer magnitude sparsity, unstructured or in an N:M pattern.

Each layer's ``prune_ratio`` from the plan is the fraction of that layer's weights set to zero, smallest
``|w|`` first, counted per layer (biases are kept). With ``pattern: "N:M"`` the zeros are arranged so that
every group of M consecutive weights along the input dimension (input features of a Linear layer, input
channels at each kernel position of a convolution) keeps its N largest; a layer's ``prune_ratio`` must then
be 0 (the layer stays dense) or exactly 1 - N/M.

The zeros are written into the plain ``weight`` tensors: no reparametrisation is left, so the model traces,
quantizes and saves like any other. A gradient hook on each sparsified weight zeroes the gradient of the
removed weights, so the recovery step that follows (any optimizer whose update of a weight with zero
gradient and zero state is zero: SGD, Adam, AdamW, with or without weight decay) keeps them at zero. A deep
copy of the model drops that hook (the zeros stay, but later training could revive them), so apply this
pruner last among the pruners of a pipeline and recover the model it returns.

Unstructured zeros do not change the model's shapes: MACs, params and latency stay those of the dense
model, and the pipeline reports them as such. :meth:`SparsePruner.metrics` adds what the zeros do buy:

- ``sparsity_total``: fraction of zero weights over every convolution, linear and embedding weight of the
  final model;
- ``sparsity``: the same over the layers the plan sparsified (their names are kept as a plain attribute on
  every module, so they survive a quantizer that rebuilds the model; omitted if no module kept them or a
  named layer's weight cannot be read);
- ``sparse_size_bytes``: bytes of the model's ``state_dict`` saved with :func:`torch.save`, each such weight
  stored as values + bitmask when that is smaller than dense (:func:`encode_sparse_state`; lossless,
  :func:`decode_sparse_state` restores it). Compare it with the dense ``state_dict`` bytes; the TorchScript
  artifact behind ``size_bytes`` also carries code. Omitted for a quantized model: its packed int8 weights
  have no sparse encoding here.

For a quantized model both sparsities count the zeros of the int8 weights (dequantized), which include
weights that rounded to zero: they can exceed the plan's ratio.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from orchestrator import ComponentOptions, CompressionPlan, PlanError, Pruner, Scores, Task, hookimpl
from orchestrator.layers import compressible_layers

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import torch
    from torch import nn

__all__ = ["SparseOptions", "SparsePruner", "decode_sparse_state", "encode_sparse_state"]

#: attribute holding the sorted names of the sparsified layers, set on every module of the model
RECORD_ATTR = "_orchestrator_sparse_layers"
_PATTERN = re.compile(r"^(\d+):(\d+)$")
_RATIO_TOLERANCE = 1e-6


class SparseOptions(ComponentOptions):
    #: ``"N:M"``: in every group of M consecutive weights along the input dimension keep the N largest;
    #: each sparsified layer's prune_ratio must be 1 - N/M (0 keeps a layer dense). Quote it in YAML.
    pattern: str | None = None

    @field_validator("pattern", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f'pattern must be a quoted string such as "2:4"; '
                f"YAML reads an unquoted N:M as the number {value}"
            )
        return value

    @field_validator("pattern")
    @classmethod
    def _n_of_m(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _PATTERN.match(value)
        if match is None or not 0 < int(match[1]) < int(match[2]):
            raise ValueError(f"pattern must be 'N:M' with 0 < N < M (e.g. '2:4'), not '{value}'")
        return value

    @property
    def n_m(self) -> tuple[int, int] | None:
        """``(N, M)`` of the pattern, or None for unstructured sparsity."""
        if self.pattern is None:
            return None
        n, m = self.pattern.split(":")
        return int(n), int(m)


class SparsePruner(Pruner[SparseOptions]):
    """Per-layer magnitude sparsity (unstructured or N:M), zeros kept through recovery."""

    name: ClassVar[str] = "sparse"
    Options = SparseOptions
    structured: ClassVar[bool] = False
    handles_drop: ClassVar[bool] = False

    def prune(
        self, model: nn.Module, plan: CompressionPlan, task: Task[Any], *, scores: Scores | None = None
    ) -> nn.Module:
        layers = compressible_layers(model)
        targets = self._targets(plan, layers)
        masks = {name: self._keep_mask(name, layers[name], ratio) for name, ratio in targets.items()}
        for name, keep in masks.items():
            _zero_and_hold(_weight_of(layers[name]), keep)
        _record(model, masks)
        return model

    def metrics(self, model: nn.Module) -> dict[str, float]:
        quantized = quantized_weights(model)
        weights = {**float_weights(model), **quantized}
        if not weights:
            return {}
        out = {"sparsity_total": zero_fraction(weights.values())}
        planned = _planned_weights(model, weights)
        if planned:
            out["sparsity"] = zero_fraction(planned)
        if not quantized:
            out["sparse_size_bytes"] = float(sparse_size_bytes(model))
        return out

    # -- plan -------------------------------------------------------------------------------------
    def _targets(self, plan: CompressionPlan, layers: Mapping[str, nn.Module]) -> dict[str, float]:
        """The plan's ratios per layer, checked against the model and the pattern."""
        targets = plan.prune_ratios()
        for name, ratio in targets.items():
            if name not in layers:
                raise PlanError(
                    f"layer '{name}' is not a convolution, linear or embedding layer of the model; "
                    f"sparsifiable layers: {', '.join(layers)}",
                    field=f"plan.layers.{name}",
                )
            self._check_ratio(name, ratio)
        return targets

    def _check_ratio(self, name: str, ratio: float) -> None:
        n_m = self.options.n_m
        if n_m is None:
            return
        n, m = n_m
        wanted = 1 - n / m
        if abs(ratio - wanted) > _RATIO_TOLERANCE:
            raise PlanError(
                f"layer '{name}' has prune_ratio {ratio:g} but pattern {n}:{m} zeroes {wanted:g} of the "
                f"weights; give it prune_ratio {wanted:g} (or 0 to keep it dense)",
                field=f"plan.layers.{name}.prune_ratio",
            )

    def _keep_mask(self, name: str, layer: nn.Module, ratio: float) -> torch.Tensor:
        weight = _weight_of(layer)
        n_m = self.options.n_m
        if n_m is None:
            return magnitude_mask(weight, ratio)
        n, m = n_m
        axis = _input_axis(layer)
        if weight.shape[axis] % m:
            raise PlanError(
                f"layer '{name}': its input size {weight.shape[axis]} is not a multiple of {m}, so "
                f"pattern {n}:{m} cannot group its weights (keep it dense)",
                field=f"plan.layers.{name}.prune_ratio",
            )
        return n_m_mask(weight, n, m, axis=axis)


# -- masks ------------------------------------------------------------------------------------------
def magnitude_mask(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask (True = kept) zeroing ``round(ratio * numel)`` weights of smallest magnitude."""
    import torch

    keep = torch.ones_like(weight, dtype=torch.bool)
    count = round(ratio * weight.numel())
    if count:
        smallest = torch.topk(weight.detach().abs().flatten(), count, largest=False).indices
        keep.view(-1)[smallest] = False
    return keep


def n_m_mask(weight: torch.Tensor, n: int, m: int, *, axis: int = 1) -> torch.Tensor:
    """Keep-mask keeping the ``n`` largest of every ``m`` consecutive weights along ``axis``."""
    import torch

    moved = weight.detach().abs().movedim(axis, -1)
    groups = moved.reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    return keep.reshape(moved.shape).movedim(-1, axis).contiguous()


def _weight_of(layer: nn.Module) -> torch.Tensor:
    import torch

    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__}.weight is not a tensor")
    return weight


def _input_axis(layer: nn.Module) -> int:
    """The weight axis that runs over a layer's inputs (dim 0 for transposed convolutions)."""
    from torch import nn

    transposed = isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed
    return 0 if transposed else 1


class _MaskGrad:
    """Gradient hook: zero gradient where the weight was removed (NaN-safe, unlike ``g * mask``)."""

    def __init__(self, removed: torch.Tensor) -> None:
        self.removed = removed

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(self.removed, 0.0)


def _zero_and_hold(weight: torch.Tensor, keep: torch.Tensor) -> None:
    """Zero the removed weights in place and keep their gradient at zero from now on."""
    import torch

    removed = ~keep
    with torch.no_grad():
        weight.masked_fill_(removed, 0.0)
    if weight.requires_grad:
        weight.register_hook(_MaskGrad(removed))


def _record(model: nn.Module, names: Iterable[str]) -> None:
    """Note the sparsified layers on every module of the model (a plain attribute, never traced).

    Every module carries it because a quantizer may rebuild the root and replace the sparsified layers:
    :meth:`SparsePruner.metrics` finds it on whichever module survived.
    """
    record = tuple(sorted({*_recorded_names(model), *names}))
    for module in model.modules():
        setattr(module, RECORD_ATTR, record)


# -- metrics ----------------------------------------------------------------------------------------
def float_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of the float conv/linear/embedding layers of ``model`` by module name."""
    return {name: _weight_of(layer).detach() for name, layer in compressible_layers(model).items()}


def quantized_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of the quantized layers of ``model`` by module name, dequantized (a zero is a stored zero)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        method: Any = getattr(module, "weight", None)
        if not callable(method):  # float layers hold a tensor; quantized ones a method
            continue
        try:
            weight = method()
        except (TypeError, RuntimeError):
            continue
        if isinstance(weight, torch.Tensor) and weight.is_quantized:
            out[name] = weight.dequantize()
    return out


def zero_fraction(weights: Iterable[torch.Tensor]) -> float:
    """Fraction of exact zeros over all elements of ``weights``."""
    zeros = total = 0
    for weight in weights:
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total if total else 0.0


def _planned_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> list[torch.Tensor] | None:
    """Weights of the layers the plan sparsified, or None if the model does not say which or lost one.

    A layer that a quantizer fused with its activation keeps its weight in child ``0``.
    """
    names = _recorded_names(model)
    if not names:
        return None
    found = [weights.get(name, weights.get(f"{name}.0")) for name in names]
    return None if any(w is None for w in found) else [w for w in found if w is not None]


def _recorded_names(model: nn.Module) -> tuple[str, ...]:
    """The sparsified layers as recorded on the model, or on any module that survived quantization."""
    names: tuple[str, ...] = getattr(model, RECORD_ATTR, ())
    if names:
        return names
    for module in model.modules():
        names = getattr(module, RECORD_ATTR, ())
        if names:
            return names
    return ()


def sparse_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save`` of the model's state_dict with sparse weights encoded (see module doc)."""
    import torch

    keys = {f"{name}.weight" for name in compressible_layers(model)}
    buffer = io.BytesIO()
    torch.save(encode_sparse_state(model.state_dict(), keys), buffer)
    return len(buffer.getvalue())


# -- sparse encoding --------------------------------------------------------------------------------
_BIT_VALUES = (128, 64, 32, 16, 8, 4, 2, 1)


def encode_sparse_state(state: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``state`` with each float tensor named in ``keys`` stored as values + bitmask when that is smaller.

    An encoded entry is ``{"shape": tuple, "bitmask": uint8 tensor, "values": tensor}`` (plain types:
    it loads with ``torch.load(..., weights_only=True)``).
    """
    chosen = set(keys)
    out: dict[str, Any] = {}
    for key, value in state.items():
        encoded = _encode(value) if key in chosen else None
        out[key] = value if encoded is None else encoded
    return out


def decode_sparse_state(encoded: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_sparse_state`."""
    return {key: _decode(value) if isinstance(value, dict) else value for key, value in encoded.items()}


def _encode(tensor: Any) -> dict[str, Any] | None:
    import torch

    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    flat = tensor.detach().flatten()
    kept = flat != 0
    values = flat[kept].clone()
    bitmask_bytes = -(-flat.numel() // 8)
    if values.numel() * values.element_size() + bitmask_bytes >= flat.numel() * flat.element_size():
        return None
    return {"shape": tuple(tensor.shape), "bitmask": _pack_bits(kept), "values": values}


def _decode(entry: Mapping[str, Any]) -> torch.Tensor:
    import torch

    shape = tuple(entry["shape"])
    values: torch.Tensor = entry["values"]
    numel = 1
    for size in shape:
        numel *= size
    kept = _unpack_bits(entry["bitmask"], numel)
    flat = torch.zeros(numel, dtype=values.dtype)
    flat[kept] = values
    return flat.reshape(shape)


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    import torch

    flat = bits.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)])
    weights = torch.tensor(_BIT_VALUES, dtype=torch.uint8)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def _unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    import torch

    weights = torch.tensor(_BIT_VALUES, dtype=torch.uint8)
    return ((packed.unsqueeze(1) & weights) != 0).flatten()[:count]


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(SparsePruner)
