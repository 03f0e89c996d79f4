"""The small contracts every component implements.

A component is a class with a registered ``name``, a ``kind`` and a strict pydantic ``Options`` model that
validates the ``options:`` block a policy gives it. Components are constructed with keyword arguments only
and hold no live state between calls other than their options.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from orchestrator._strict import StrictBase

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from orchestrator.plan import CompressionPlan
    from orchestrator.task import Task

__all__ = [
    "COMPONENT_KINDS",
    "Component",
    "ComponentKind",
    "ComponentOptions",
    "Distiller",
    "Pruner",
    "Quantizer",
    "RecoveryMonitor",
    "RecoveryStopped",
    "SamplerFactory",
    "Scorer",
    "Scores",
]

ComponentKind = Literal["scorer", "pruner", "quantizer", "distiller", "task", "sampler"]
COMPONENT_KINDS: tuple[ComponentKind, ...] = (
    "scorer",
    "pruner",
    "quantizer",
    "distiller",
    "task",
    "sampler",
)


class ComponentOptions(StrictBase):
    """Base of every component's ``Options``: strict, immutable, no unknown keys, no booleans for numbers."""


OptionsT = TypeVar("OptionsT", bound=ComponentOptions)


class Component(ABC, Generic[OptionsT]):
    """A named, configurable piece of the pipeline.

    Subclasses set ``name`` (unique per kind across all plugins) and ``Options`` (a subclass of
    :class:`ComponentOptions`).
    """

    name: ClassVar[str]
    kind: ClassVar[ComponentKind]
    Options: ClassVar[type[ComponentOptions]] = ComponentOptions
    summary: ClassVar[str] = ""

    def __init__(self, *, options: OptionsT | None = None) -> None:
        self.options: OptionsT = options if options is not None else self.Options()  # type: ignore[assignment]

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> Component[Any]:
        """Build the component from a raw ``options:`` mapping (validated by ``Options``)."""
        return cls(options=cls.Options.model_validate(dict(options or {})))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(options={self.options!r})"


@dataclass(frozen=True)
class Scores:
    """Importance of layers (and optionally of their output channels); higher means more important."""

    layers: Mapping[str, float]
    channels: Mapping[str, Sequence[float]] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def ranked(self) -> list[str]:
        """Layer names, least important first."""
        return sorted(self.layers, key=lambda name: self.layers[name])


class Scorer(Component[OptionsT]):
    """Estimates how much each layer (and channel) matters. Must be deterministic for a seed."""

    kind: ClassVar[ComponentKind] = "scorer"
    #: whether ``score`` fills ``Scores.channels``
    per_channel: ClassVar[bool] = False
    #: what it scores: compressible ``layers`` (conv/linear/embedding) or droppable ``blocks``
    targets: ClassVar[Literal["layers", "blocks"]] = "layers"

    @abstractmethod
    def score(self, model: nn.Module, task: Task[Any], layers: Sequence[str]) -> Scores:
        """Score ``layers`` (qualified module names) of ``model``; ``model`` is not modified."""


class Pruner(Component[OptionsT]):
    """Physically removes parameters according to the plan's ``prune_ratio`` (and ``drop``)."""

    kind: ClassVar[ComponentKind] = "pruner"
    #: removes whole channels, so the model really gets smaller and faster
    structured: ClassVar[bool] = True
    #: honours ``LayerDecision.drop``
    handles_drop: ClassVar[bool] = False

    @abstractmethod
    def prune(
        self,
        model: nn.Module,
        plan: CompressionPlan,
        task: Task[Any],
        *,
        scores: Scores | None = None,
    ) -> nn.Module:
        """Return the pruned model (``model`` may be changed in place).

        The pruner acts on the decisions it handles (``prune_ratio`` for a channel pruner, ``drop`` for a
        depth pruner) and leaves the others to the next pruner of the pipeline.
        """

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """Extra metrics of the final model this pruner can vouch for (e.g. ``sparsity``)."""
        return {}


class Quantizer(Component[OptionsT]):
    """Lowers the precision of the layers whose ``bits`` the plan sets."""

    kind: ClassVar[ComponentKind] = "quantizer"
    #: bit-widths this quantizer can apply (32 means float and is always accepted)
    supported_bits: ClassVar[frozenset[int]] = frozenset({8})
    #: True when the result only simulates low precision (no real size or speed change)
    simulated: ClassVar[bool] = False

    #: layer types it quantizes (``handles`` checks them); empty means any layer with a weight
    layer_types: ClassVar[tuple[str, ...]] = ()

    def accelerates(self, bits: int) -> bool:
        """Whether layers at ``bits`` run faster than float on this CPU."""
        return False

    def handles(self, layer: nn.Module, bits: int) -> bool:
        """Whether it can bring ``layer`` to ``bits`` bits; decides routing between several quantizers."""
        if bits not in self.supported_bits:
            return False
        if not self.layer_types:
            return True
        return any(cls.__name__ in self.layer_types for cls in type(layer).__mro__)

    def describe_support(self) -> str:
        """What it quantizes, for error messages: bit-widths and layer types."""
        kinds = ", ".join(self.layer_types) or "any layer with a weight"
        return f"bits {sorted(self.supported_bits)} of {kinds}"

    @abstractmethod
    def quantize(self, model: nn.Module, plan: CompressionPlan, task: Task[Any]) -> nn.Module:
        """Return the quantized model; layers whose bits are None or 32 stay float."""

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """Extra metrics of the quantized model this quantizer can vouch for."""
        return {}


class RecoveryStopped(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a :data:`RecoveryMonitor` to stop recovery early (the trial is gated)."""

    def __init__(self, reason: str, metrics: Mapping[str, float] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metrics = dict(metrics or {})


#: Called by distillers with the fraction of the budget spent (0..1] and the student; may raise
#: :class:`RecoveryStopped` to end recovery early.
RecoveryMonitor = Callable[[float, "nn.Module"], None]


class Distiller(Component[OptionsT]):
    """Recovers the accuracy of a compressed student from its teacher within a budget."""

    kind: ClassVar[ComponentKind] = "distiller"

    @abstractmethod
    def distill(
        self,
        student: nn.Module,
        teacher: nn.Module,
        task: Task[Any],
        *,
        monitor: RecoveryMonitor | None = None,
    ) -> nn.Module:
        """Train ``student`` (in place) towards ``teacher`` on the task's training data."""


class SamplerFactory(Component[OptionsT]):
    """Creates the Optuna sampler that drives a search."""

    kind: ClassVar[ComponentKind] = "sampler"
    #: handles several objectives
    multi_objective: ClassVar[bool] = True

    @abstractmethod
    def create(self, *, seed: int | None) -> optuna.samplers.BaseSampler:
        """Return a fresh sampler."""
