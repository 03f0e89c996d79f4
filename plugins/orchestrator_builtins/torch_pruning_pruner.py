"""Pruner ``torch-pruning``: structured channel pruning through Torch-Pruning's dependency graph.

Each layer's ``prune_ratio`` from the plan removes that fraction of its output channels; every layer
coupled to it (BatchNorm, the next layer's inputs, the other members of a residual sum) is pruned
consistently, so the model really becomes smaller.

With the ``slimming`` option the pruner first fine-tunes the model with a sparsity regulariser on the task's
training data (network slimming: L1 on BatchNorm scales, or torch-pruning's group-norm regulariser), then
prunes the regularised model. With ``method: bn-l1`` channels are ranked by BatchNorm scale unless
``importance`` is given explicitly (layers without a BatchNorm, such as linear layers, by weight magnitude);
with ``method: group`` the default ``importance: magnitude`` (p=2) is the group L2 norm the regulariser
shrinks. The regularised weights do not depend on the plan: the pruner instance keeps the last result, keyed
on a digest of the incoming model's state dict, the task's name and options and the pruner's options, and
reuses it for every later plan on the same baseline (a search prunes copies of one baseline).
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from orchestrator import (
    ComponentOptions,
    CompressionPlan,
    PlanError,
    Pruner,
    Scores,
    Task,
    hookimpl,
)
from orchestrator.layers import compressible_layers, output_channels, output_layers


class SlimmingOptions(ComponentOptions):
    """Sparsity-regularised fine-tuning before pruning (SGD, momentum 0.9, cosine decay to 0).

    The defaults are the published coefficient and a gentle learning rate: safe on any dataset, but weak on
    a short run over little data. How far channels are driven to zero grows with ``l1 * lr * steps``; on
    ``digits-cnn`` (21 steps per epoch), ``{method: group, l1: 0.03, epochs: 3, lr: 0.05}`` or
    ``{l1: 0.05, epochs: 5, lr: 0.1}`` give a visible effect. Too much of it collapses the model.
    """

    #: ``bn-l1``: L1 on BatchNorm scales (network slimming, Liu et al. 2017); ``group``: torch-pruning's
    #: group-norm regulariser (DepGraph, ``GroupNormPruner``), which shrinks whole coupled groups
    method: Literal["bn-l1", "group"] = "bn-l1"
    #: passes over the training data (fractions allowed)
    epochs: float = Field(default=1.0, gt=0)
    #: regularisation coefficient (the L1 weight for ``bn-l1``, the group penalty for ``group``)
    l1: float = Field(default=1e-4, gt=0)
    #: peak learning rate
    lr: float = Field(default=0.01, gt=0)
    #: seed of the regularised fine-tuning's data order
    seed: int = 0


class TorchPruningOptions(ComponentOptions):
    #: channel importance: weight magnitude, first-order Taylor, BatchNorm scale, LAMP, or the
    #: per-channel scores of the pipeline's scorer
    importance: Literal["magnitude", "taylor", "bn-scale", "lamp", "scorer"] = "magnitude"
    #: norm of the magnitude importance (L1 or L2)
    p: Literal[1, 2] = 2
    #: keep channel counts multiples of this (hardware-friendly shapes)
    round_to: int | None = Field(default=None, ge=1)
    #: qualified names of layers whose output channels are never pruned
    ignored_layers: list[str] = Field(default_factory=list)
    #: batches used to compute gradients for ``importance: taylor``
    taylor_batches: int = Field(default=4, ge=1)
    #: fine-tune with a sparsity regulariser before pruning (None: prune the model as given)
    slimming: SlimmingOptions | None = None
    #: parameters a custom layer holds itself (not through a Conv, Linear or BatchNorm inside it), by
    #: qualified name, with the dimension that runs along the channels: ``{blocks.0.gate.table: 0}``.
    #: Without it torch-pruning prunes their last dimension larger than 1.
    unwrapped_parameters: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    #: pruning handlers of custom layer classes, by import path:
    #: ``{"my_pkg.layers:Gate": "my_pkg.pruning:GatePruner"}``; a handler subclasses
    #: ``torch_pruning.pruner.BasePruningFunc`` and is created without arguments
    custom_layers: dict[str, str] = Field(default_factory=dict)

    @field_validator("custom_layers")
    @classmethod
    def _importable(cls, value: dict[str, str]) -> dict[str, str]:
        for layer, handler in value.items():
            _custom_layer(layer, handler)  # refuse a path that leads nowhere before any work
        return value


class TorchPruningPruner(Pruner[TorchPruningOptions]):
    """Structured (channel) pruning with per-layer ratios, via torch-pruning."""

    name: ClassVar[str] = "torch-pruning"
    Options = TorchPruningOptions

    def __init__(self, *, options: TorchPruningOptions | None = None) -> None:
        super().__init__(options=options)
        #: the last ``slimming`` result: (key of its inputs, regularised state dict)
        self._slimmed: tuple[str, dict[str, Any]] | None = None

    def prune(
        self, model: Any, plan: CompressionPlan, task: Task[Any], *, scores: Scores | None = None
    ) -> Any:
        import torch_pruning as tp

        layers = compressible_layers(model)
        example = task.example_inputs(2)
        outputs = set(output_layers(model, example))
        for name in self.options.ignored_layers:
            if name not in layers:
                raise PlanError(
                    f"ignored layer '{name}' is not a layer of the model",
                    field="pipeline.pruner.options.ignored_layers",
                )
        ratios = plan.prune_ratios()
        for name in ratios:
            if name in outputs:
                raise PlanError(
                    f"layer '{name}' produces the model's output; its channels cannot be pruned",
                    field=f"plan.layers.{name}.prune_ratio",
                )
            if name in self.options.ignored_layers:
                raise PlanError(
                    f"layer '{name}' is in the pruner's ignored_layers but the plan prunes it",
                    field=f"plan.layers.{name}.prune_ratio",
                )
        ignored = [layers[n] for n in sorted({*outputs, *self.options.ignored_layers})]
        if ratios and self.options.slimming is not None:
            self._sparsify(model, task, ignored)
        importance = self._importance(model, scores)
        before = {n: output_channels(layers[n]) for n in ratios}
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=importance,
            pruning_ratio=0.0,
            pruning_ratio_dict={layers[n]: r for n, r in ratios.items()},
            ignored_layers=ignored,
            round_to=self.options.round_to,
            unwrapped_parameters=self._unwrapped(model),
            customized_pruners=dict(_custom_layer(k, v) for k, v in self.options.custom_layers.items()),
        )
        if self.options.importance == "taylor":
            self._accumulate_gradients(model, task)
        pruner.step()
        model.zero_grad(set_to_none=True)
        _warn_unpruned(model, {n: (ratios[n], c) for n, c in before.items()}, self.options.round_to)
        return model

    def _unwrapped(self, model: Any) -> list[tuple[Any, int]]:
        """``unwrapped_parameters`` as torch-pruning takes them: (parameter, channel dimension)."""
        params = dict(model.named_parameters())
        field = "pipeline.pruner.options.unwrapped_parameters"
        out = []
        for name, dim in self.options.unwrapped_parameters.items():
            if name not in params:
                raise PlanError(f"'{name}' is not a parameter of the model", field=f"{field}.{name}")
            if dim >= params[name].dim():
                raise PlanError(
                    f"'{name}' has {params[name].dim()} dimensions, so none numbered {dim}",
                    field=f"{field}.{name}",
                )
            out.append((params[name], dim))
        return out

    def sparsify(self, model: Any, task: Task[Any]) -> Any:
        """Fine-tune ``model`` in place with the ``slimming`` regulariser and return it (in eval mode).

        This is what :meth:`prune` starts from when ``slimming`` is set; a model with the same state as the
        last one (and the same task) gets the stored result instead of a new fine-tuning run.
        """
        if self.options.slimming is None:
            raise PlanError("sparsify needs the pruner's slimming option", field="pipeline.pruner.options")
        layers = compressible_layers(model)
        outputs = output_layers(model, task.example_inputs(2))
        names = sorted({*outputs, *self.options.ignored_layers})
        return self._sparsify(model, task, [layers[n] for n in names])

    def _sparsify(self, model: Any, task: Task[Any], ignored: list[Any]) -> Any:
        slim = self.options.slimming
        assert slim is not None
        key = _slimming_key(model, task, self.options)
        if self._slimmed is not None and self._slimmed[0] == key:
            model.load_state_dict(self._slimmed[1])
        else:
            _regularized_finetune(model, task, slim, ignored)
            self._slimmed = (key, {k: v.detach().clone() for k, v in model.state_dict().items()})
        return model.eval()

    def _importance(self, model: Any, scores: Scores | None) -> Any:
        import torch_pruning as tp

        choice = self.options.importance
        slim = self.options.slimming
        if slim is not None and "importance" not in self.options.model_fields_set and slim.method == "bn-l1":
            choice = "bn-scale"
        if choice == "taylor":
            return tp.importance.TaylorImportance()
        if choice == "bn-scale":
            # groups without a BatchNorm (e.g. a linear layer) are ranked by magnitude, not skipped
            return _WithFallback(
                tp.importance.BNScaleImportance(), tp.importance.MagnitudeImportance(p=self.options.p)
            )
        if choice == "lamp":
            return tp.importance.LAMPImportance(p=self.options.p)
        magnitude = tp.importance.MagnitudeImportance(p=self.options.p)
        if choice == "scorer":
            if scores is None or not scores.channels:
                raise PlanError(
                    "importance 'scorer' needs a pipeline.scorer that gives per-channel scores",
                    field="pipeline.pruner.options.importance",
                )
            return _ScoreImportance(model, scores, fallback=magnitude)
        return magnitude

    def _accumulate_gradients(self, model: Any, task: Task[Any]) -> None:
        # in eval mode: gradients flow, but BatchNorm running statistics stay those of the baseline
        model.eval()
        model.zero_grad(set_to_none=True)
        for batch in task.calibration_data(self.options.taylor_batches):
            task.loss(model(*task.inputs(batch)), batch).backward()


def _custom_layer(layer: str, handler: str) -> tuple[type[Any], Any]:
    """The custom layer class and an instance of its torch-pruning handler, from their import paths."""
    import torch_pruning as tp
    from torch import nn

    from orchestrator.import_path import ImportPathError, import_class

    try:
        layer_cls = import_class(layer, nn.Module, hint="a torch.nn.Module subclass")
        hint = "subclass torch_pruning.pruner.BasePruningFunc"
        handler_cls = import_class(handler, tp.pruner.BasePruningFunc, hint=hint)
    except ImportPathError as exc:
        raise ValueError(str(exc)) from None
    return layer_cls, handler_cls()


def _warn_unpruned(model: Any, planned: dict[str, tuple[float, int | None]], round_to: int | None) -> None:
    """Warn, naming them, about layers the plan prunes that torch-pruning left whole: a custom layer
    coupled to them that it cannot prune (see ``unwrapped_parameters`` and ``custom_layers``)."""
    import warnings

    layers = compressible_layers(model)
    for name, (ratio, before) in planned.items():
        after = output_channels(layers[name]) if name in layers else None
        if before is None or after != before:
            continue
        kept = int(before * (1 - ratio))  # as torch-pruning counts them
        kept -= kept % (round_to or 1)
        if kept <= 0 or kept >= before:
            continue  # too few channels to prune any, or it would empty the layer: left whole on purpose
        warnings.warn(
            f"torch-pruning left layer '{name}' whole (prune_ratio {ratio:g}): something coupled to its "
            "channels cannot be pruned, usually a custom layer's own parameter; name it in the pruner's "
            "unwrapped_parameters with its channel dimension, or give its class a handler in custom_layers",
            UserWarning,
            stacklevel=3,
        )


def _slimming_key(model: Any, task: Task[Any], options: TorchPruningOptions) -> str:
    """Digest of everything the regularised weights depend on: model state, task and pruner options."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    digest.update(f"{task.name}|{task.options.model_dump_json()}|{options.model_dump_json()}".encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"|{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _regularizer(model: Any, task: Task[Any], slim: SlimmingOptions, ignored: list[Any]) -> Any:
    """The torch-pruning pruner whose ``regularize(model)`` adds the sparsity term to the gradients."""
    import torch_pruning as tp

    example = task.example_inputs(2)
    if slim.method == "group":
        importance = tp.importance.GroupMagnitudeImportance(p=2)
        return tp.pruner.GroupNormPruner(
            model, example, importance=importance, reg=slim.l1, pruning_ratio=0.0, ignored_layers=ignored
        )
    return tp.pruner.BNScalePruner(
        model,
        example,
        importance=tp.importance.BNScaleImportance(),
        reg=slim.l1,
        pruning_ratio=0.0,
        ignored_layers=ignored,
    )


def _regularized_finetune(model: Any, task: Task[Any], slim: SlimmingOptions, ignored: list[Any]) -> None:
    """Train ``model`` on the task loss plus the sparsity term, for ``slim.epochs`` passes."""
    import torch

    regularizer = _regularizer(model, task, slim, ignored)
    data = task.train_data()
    per_epoch = len(data) if isinstance(data, Sized) else sum(1 for _ in data)
    total = math.ceil(slim.epochs * per_epoch)
    if total == 0:
        return
    optimizer = torch.optim.SGD(model.parameters(), lr=slim.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(slim.seed)
        model.train()
        while step < total:
            for batch in data:
                loss = task.loss(model(*task.inputs(batch)), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                regularizer.regularize(model)
                optimizer.step()
                schedule.step()
                step += 1
                if step >= total:
                    break
    model.zero_grad(set_to_none=True)
    model.eval()


class _WithFallback:
    """A torch-pruning importance that asks ``fallback`` for groups ``primary`` cannot score."""

    def __init__(self, primary: Any, fallback: Any) -> None:
        self.primary = primary
        self.fallback = fallback

    def __call__(self, group: Any) -> Any:
        found = self.primary(group)
        return found if found is not None else self.fallback(group)


class _ScoreImportance:
    """A torch-pruning importance that reads the pipeline scorer's per-channel scores."""

    def __init__(self, model: Any, scores: Scores, fallback: Any) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.scores = scores
        self.fallback = fallback

    def __call__(self, group: Any) -> Any:
        import torch
        import torch_pruning as tp

        out_fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        total = torch.zeros(len(group[0].idxs))
        found = False
        for i, (dep, idxs) in enumerate(group):
            name = self.names.get(id(dep.layer))
            channel_scores = self.scores.channels.get(name or "")
            if dep.pruning_fn not in out_fns or channel_scores is None:
                continue
            values = torch.tensor(channel_scores, dtype=torch.float32)[list(idxs)]
            total.scatter_add_(0, torch.tensor(group[i].root_idxs), values)
            found = True
        return total if found else self.fallback(group)


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(TorchPruningPruner)
