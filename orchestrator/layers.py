"""Finding the layers of a model that a plan can name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ORIGIN_ATTR",
    "compressible_layers",
    "current_names",
    "droppable_blocks",
    "output_channels",
    "output_layers",
]

#: attribute giving the qualified name a module had before a depth pruner moved it (an item of an
#: ``nn.ModuleList`` whose earlier items were dropped moves up)
ORIGIN_ATTR = "_orchestrator_origin"


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolutions, linear layers and embeddings by qualified name, in definition order."""
    from torch import nn

    kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
    return {name: m for name, m in model.named_modules() if name and isinstance(m, kinds)}


def output_channels(layer: nn.Module) -> int | None:
    """Output channels of a convolution, linear layer or embedding (None for anything else)."""
    from torch import nn

    if isinstance(layer, nn.modules.conv._ConvNd):
        return int(layer.out_channels)
    if isinstance(layer, nn.Linear):
        return int(layer.out_features)
    if isinstance(layer, nn.Embedding):
        return int(layer.embedding_dim)
    return None


def current_names(model: nn.Module) -> dict[str, str]:
    """Original qualified name -> current name, for every module that moved when layers were dropped."""
    moved = {}
    for name, module in model.named_modules():
        origin = getattr(module, ORIGIN_ATTR, None)
        if isinstance(origin, str) and origin != name:
            moved[origin] = name
    return moved


def output_layers(model: nn.Module, example_inputs: tuple[object, ...]) -> list[str]:
    """Names of compressible layers whose output is (part of) the model's output.

    Their output channels are what the model predicts, so they are never channel-pruned.
    """
    import torch

    layers = compressible_layers(model)
    produced: dict[int, tuple[str, object]] = {}

    def record(name: str, out: object) -> None:
        produced[id(out)] = (name, out)  # holding ``out`` keeps its id from being reused by a later tensor

    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
        for name, module in layers.items()
    ]
    try:
        with torch.no_grad():
            out = model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    outs = out if isinstance(out, tuple | list) else (out,)
    return [produced[id(o)][0] for o in outs if id(o) in produced]


def droppable_blocks(model: nn.Module, example_inputs: tuple[object, ...]) -> list[str]:
    """Qualified names of the modules that can be removed whole (replaced by identity), in definition order.

    Two kinds qualify, both checked on a forward pass over ``example_inputs``:

    - residual blocks: the module's output is its input plus something (``x + f(x)``, optionally followed
      by an activation), found by tracing the module with ``torch.fx``, and its output has the input's shape;
    - layers of a stack: the items of an ``nn.ModuleList`` that are all of one class, each called once and
      mapping hidden states to hidden states of the same shape (a tuple output, as Hugging Face layers
      return, counts by its first element). Dropping one removes it from the list (the ``depth`` pruner
      also updates a Hugging Face style ``model.config.num_hidden_layers``).
    """
    shapes = _io_shapes(model, example_inputs)
    preserving = {name for name, (inp, out) in shapes.items() if inp is not None and inp == out}
    stacked = _stack_items(model, preserving)
    residual = {
        name
        for name, module in model.named_modules()
        if name in preserving and name not in stacked and _is_residual(module)
    }
    return [name for name, _ in model.named_modules() if name in stacked or name in residual]


_Shape = tuple[int, ...]


def _first_tensor(values: object) -> object:
    """The first tensor of a tensor, a tuple/list (first element) or a mapping of keyword arguments."""
    import torch

    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, tuple | list) and values:
        return _first_tensor(values[0])
    if isinstance(values, dict):
        hidden = values.get("hidden_states")
        return _first_tensor(hidden if hidden is not None else tuple(values.values()))
    return None


def _io_shapes(
    model: nn.Module, example_inputs: tuple[object, ...]
) -> dict[str, tuple[_Shape | None, _Shape | None]]:
    """(input shape, output shape) of every submodule called exactly once; None where not a tensor."""
    import torch

    seen: dict[str, list[tuple[_Shape | None, _Shape | None]]] = {}

    def record(name: str, args: tuple[object, ...], kwargs: dict[str, object], out: object) -> None:
        first_in = _first_tensor(args) if args else _first_tensor(kwargs)
        first_out = _first_tensor(out)
        seen.setdefault(name, []).append(
            (
                tuple(first_in.shape) if isinstance(first_in, torch.Tensor) else None,
                tuple(first_out.shape) if isinstance(first_out, torch.Tensor) else None,
            )
        )

    handles = [
        module.register_forward_hook(
            lambda _m, args, kwargs, out, name=name: record(name, args, kwargs, out), with_kwargs=True
        )
        for name, module in model.named_modules()
        if name
    ]
    modes = {module: module.training for module in model.modules()}
    model.eval()  # a forward in training mode would update BatchNorm statistics
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return {name: calls[0] for name, calls in seen.items() if len(calls) == 1}


def _stack_items(model: nn.Module, preserving: set[str]) -> set[str]:
    """Items of ``nn.ModuleList`` stacks of one class whose every item keeps the hidden states' shape."""
    from torch import nn

    found: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        items = [f"{name}.{key}" if name else key for key, _ in module.named_children()]
        if len({type(m) for m in module}) == 1 and all(item in preserving for item in items):
            found.update(items)
    return found


def _is_residual(module: nn.Module) -> bool:
    """Whether ``module``'s forward returns ``input + something``, possibly through an activation."""
    import torch

    if not list(module.children()):
        return False
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # untraceable (data-dependent control flow, ...): not provably residual
        return False
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    outputs = [node for node in graph.nodes if node.op == "output"]
    if not inputs or len(outputs) != 1:
        return False
    result = outputs[0].args[0]
    if isinstance(result, torch.fx.Node) and _is_activation(module, result):
        result = result.args[0]
    return (
        isinstance(result, torch.fx.Node)
        and _is_add(result)
        and any(_passes_through(module, arg) is inputs[0] for arg in result.args[:2])
    )


def _is_add(node: torch.fx.Node) -> bool:
    import operator

    import torch

    if node.op == "call_function":
        return node.target in (operator.add, operator.iadd, torch.add)
    return node.op == "call_method" and node.target in ("add", "add_", "__add__", "__iadd__")


def _is_activation(root: nn.Module, node: torch.fx.Node) -> bool:
    """A one-input element-wise activation (module, function or method)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    if node.op == "call_module":
        module = root.get_submodule(str(node.target))
        return type(module).__module__ == nn.modules.activation.__name__
    if node.op == "call_function":
        return node.target in (F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.hardswish, torch.relu)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _passes_through(root: nn.Module, arg: object) -> object:
    """Follow ``arg`` back through identity-like modules (``nn.Identity``, dropout) to its source."""
    import torch
    from torch import nn

    while isinstance(arg, torch.fx.Node) and arg.op == "call_module":
        module = root.get_submodule(str(arg.target))
        if not isinstance(module, nn.Identity | nn.modules.dropout._DropoutNd):
            break
        arg = arg.args[0]
    return arg
