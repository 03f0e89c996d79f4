"""Bit-packed weight-only layers that survive ``torch.jit.trace``.

``PackedLinear``, ``PackedConv2d`` and ``PackedEmbedding`` keep integer codes packed into ``uint8``
bytes (4 codes a byte at 2 bits, 2 at 3 and 4 bits, 1 at 8 bits) with one scale and zero point per group
of ``group_size`` input weights, and dequantize in ``forward`` with plain tensor ops. A traced
artifact therefore stores the packed bytes, not float weights: its size on disk is the real size of
the quantized model. They give no speed-up on the CPU (the weights are unpacked on every call); the
quantizers that use them say so through ``Quantizer.accelerates``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["PackedConv2d", "PackedEmbedding", "PackedLinear", "codes_per_byte", "pack_codes", "unpack_codes"]


def codes_per_byte(bits: int) -> int:
    """How many codes of ``bits`` bits one byte holds (3-bit codes take a nibble each)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, not {bits}")
    return 8 // (2 if bits == 2 else 4 if bits <= 4 else 8)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack unsigned integer codes (last dimension) into ``uint8`` bytes."""
    per = codes_per_byte(bits)
    width = 8 // per
    rows, n = codes.shape
    padded = torch.zeros(rows, -(-n // per) * per, dtype=torch.uint8)
    padded[:, :n] = codes.to(torch.uint8)
    grouped = padded.reshape(rows, -1, per)
    out = torch.zeros(rows, grouped.shape[1], dtype=torch.uint8)
    for i in range(per):
        out |= grouped[:, :, i] << (width * i)
    return out


def unpack_codes(packed: Tensor, bits: int, n: int) -> Tensor:
    """The first ``n`` codes per row of bytes made by :func:`pack_codes`, as float32."""
    per = codes_per_byte(bits)
    if per == 1:
        return packed[..., :n].float()
    width = 8 // per
    # integer division and remainder rather than shifts and masks: they export to ONNX with one type
    parts = [
        torch.remainder(torch.div(packed, 1 << (width * i), rounding_mode="floor"), 1 << width)
        for i in range(per)
    ]
    return torch.stack(parts, dim=-1).flatten(-2)[..., :n].float()


def _groups(n: int, group_size: int) -> tuple[int, int]:
    size = n if group_size <= 0 or group_size >= n else group_size
    return size, -(-n // size)


class _Packed(nn.Module):
    """Codes, scales and zero points of a weight matrix quantized in groups along its rows, and a bias."""

    codes: Tensor
    scales: Tensor
    zeros: Tensor
    bias: Tensor | None

    def __init__(
        self,
        codes: Tensor,
        scales: Tensor,
        zeros: Tensor,
        bias: Tensor | None = None,
        *,
        bits: int,
        group_size: int,
    ) -> None:
        super().__init__()
        rows, n = codes.shape
        self.bits, self.columns = bits, n
        self.group_size, groups = _groups(n, group_size)
        if scales.shape != (rows, groups) or zeros.shape != (rows, groups):
            raise ValueError(f"scales and zeros must be {(rows, groups)}, not {tuple(scales.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= 1 << bits:
            raise ValueError(f"codes must lie in [0, {1 << bits})")
        self.register_buffer("codes", pack_codes(codes, bits))
        self.register_buffer("scales", scales.to(torch.float16))
        self.register_buffer("zeros", zeros.to(torch.float16))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def dequantized(self, rows: Tensor | None = None) -> Tensor:
        """The float weight (or only the given rows of it)."""
        codes, scales, zeros = self.codes, self.scales, self.zeros
        if rows is not None:
            codes, scales, zeros = codes[rows], scales[rows], zeros[rows]
        values = unpack_codes(codes, self.bits, self.columns)
        lead, groups = values.shape[:-1], scales.shape[-1]
        pad = self.group_size * groups - self.columns
        values = torch.nn.functional.pad(values, (0, pad)).reshape(*lead, groups, self.group_size)
        weight = (values - zeros.float().unsqueeze(-1)) * scales.float().unsqueeze(-1)
        return weight.reshape(*lead, -1)[..., : self.columns]


class PackedLinear(_Packed):
    """A Linear layer whose weight is stored as packed ``bits``-bit codes."""

    @property
    def in_features(self) -> int:
        return self.columns

    @property
    def out_features(self) -> int:
        return int(self.codes.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.dequantized(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}, group_size={self.group_size}"
        )


class PackedEmbedding(_Packed):
    """An embedding table stored as packed ``bits``-bit codes; only looked-up rows are unpacked."""

    def __init__(
        self,
        codes: Tensor,
        scales: Tensor,
        zeros: Tensor,
        *,
        bits: int,
        group_size: int,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__(codes, scales, zeros, bits=bits, group_size=group_size)
        self.num_embeddings, self.embedding_dim = codes.shape
        self.padding_idx = padding_idx

    def forward(self, ids: Tensor) -> Tensor:
        return self.dequantized(ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={self.group_size}"


class PackedConv2d(_Packed):
    """A Conv2d layer whose weight (flattened per output channel) is stored as packed codes."""

    def __init__(
        self,
        codes: Tensor,
        scales: Tensor,
        zeros: Tensor,
        bias: Tensor | None,
        *,
        bits: int,
        group_size: int,
        like: nn.Conv2d,
    ) -> None:
        super().__init__(codes, scales, zeros, bias, bits=bits, group_size=group_size)
        self.weight_shape = tuple(like.weight.shape)
        self.stride, self.padding = like.stride, like.padding
        self.dilation, self.groups = like.dilation, like.groups
        if not isinstance(self.padding, tuple):
            raise ValueError(f"padding '{self.padding}' is not supported; give it as numbers")

    def forward(self, x: Tensor) -> Tensor:
        weight = self.dequantized().reshape(self.weight_shape)
        return nn.functional.conv2d(
            x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return f"weight={self.weight_shape}, bits={self.bits}, group_size={self.group_size}"
