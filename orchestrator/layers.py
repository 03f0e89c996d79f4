"""Finding the layers of a model that a plan can name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["compressible_layers", "output_layers"]


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolutions, linear layers and embeddings by qualified name, in definition order."""
    from torch import nn

    kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
    return {name: m for name, m in model.named_modules() if name and isinstance(m, kinds)}


def output_layers(model: nn.Module, example_inputs: tuple[object, ...]) -> list[str]:
    """Names of compressible layers whose output is (part of) the model's output.

    Their output channels are what the model predicts, so they are never channel-pruned.
    """
    import torch

    layers = compressible_layers(model)
    produced: dict[int, str] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: produced.__setitem__(id(out), name))
        for name, module in layers.items()
    ]
    try:
        with torch.no_grad():
            out = model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    outs = out if isinstance(out, tuple | list) else (out,)
    return [produced[id(o)] for o in outs if id(o) in produced]
