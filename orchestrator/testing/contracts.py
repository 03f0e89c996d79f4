"""Contract test suites: subclass one in your test file, set ``component``, and pytest runs its tests.

::

    from orchestrator.testing import ScorerContract

    import my_plugin
    from my_plugin.scorer import MyScorer


    class TestMyScorer(ScorerContract):
        component = MyScorer
        options = {"p": 2}  # the options: block a policy would give it (default: none)
        plugin = my_plugin  # the module your entry point names (optional: checks it registers the class)

Every test asserts a promise of the component's base class (:mod:`orchestrator.components`,
:mod:`orchestrator.task`) that the pipeline and the search rely on, on the ``tiny-digits`` task of
:mod:`orchestrator.testing.tasks` (trained in memory in a fraction of a second) unless ``make_task`` is
overridden. The components are created through :func:`~orchestrator.testing.isolated_registry`, as a
policy creates them, and run with one thread (small models run as fast and are not slowed by busy
neighbours).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import pytest
import torch

from orchestrator.artifact import load_artifact, save_artifact
from orchestrator.components import (
    Component,
    ComponentOptions,
    Distiller,
    Pruner,
    Quantizer,
    RecoveryStopped,
    SamplerFactory,
    Scorer,
    Scores,
)
from orchestrator.errors import PlanError, PolicyError
from orchestrator.layers import compressible_layers, droppable_blocks, output_layers
from orchestrator.measure import threads
from orchestrator.pipeline import targets_of
from orchestrator.plan import FLOAT_BITS, VALID_BITS, CompressionPlan, LayerDecision
from orchestrator.policy import parse_policy
from orchestrator.task import Batch, Task
from orchestrator.testing.registry import isolated_registry
from orchestrator.testing.tasks import TinyDigits, TinyDigitsOptions

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from orchestrator.registry import PluginRegistry

__all__ = [
    "ComponentContract",
    "DistillerContract",
    "OnTaskContract",
    "PrunerContract",
    "QuantizerContract",
    "SamplerContract",
    "ScorerContract",
    "TaskContract",
]

C = TypeVar("C", bound=Component[Any])

#: batch sizes every model is run at: one sample, and a batch that is not a power of two
BATCH_SIZES = (1, 3)


# -- helpers ----------------------------------------------------------------------------------------------
def create(registry: PluginRegistry, cls: type[C], options: Mapping[str, Any]) -> C:
    """``cls`` created by name through ``registry``, as a policy creates it."""
    made = registry.components.create(cls.kind, cls.name, options)
    assert isinstance(made, cls), f"the registry's '{cls.name}' is {type(made)!r}, not {cls!r}"
    return made


def first_tensor(output: Any) -> torch.Tensor:
    """A model's (first) output tensor: the tensor, the first of a tuple, or ``last_hidden_state``."""
    first = output[0] if isinstance(output, tuple | list) else getattr(output, "last_hidden_state", output)
    assert isinstance(first, torch.Tensor), f"the model's output is {type(output)!r}, not a tensor"
    return first


def run(model: nn.Module, inputs: tuple[Any, ...]) -> torch.Tensor:
    """The (first) output of ``model`` on ``inputs``, without gradients."""
    with torch.no_grad():
        return first_tensor(model(*inputs))


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a component must leave alone when it promises not to modify a model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modules": [(name, type(m).__name__) for name, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "grads": [name for name, p in model.named_parameters() if p.grad is not None],
    }


def assert_unchanged(before: Mapping[str, Any], model: nn.Module, what: str) -> None:
    """Fail naming what changed since ``snapshot``."""
    after = snapshot(model)
    assert after["modules"] == before["modules"], f"{what} changed the model's modules"
    changed = [
        k for k, v in before["state"].items() if k not in after["state"] or not _same(v, after["state"][k])
    ]
    assert not changed, f"{what} changed these weights or buffers: {', '.join(changed)}"
    assert after["training"] == before["training"], f"{what} changed the model's train/eval mode"
    assert after["grads"] == before["grads"], f"{what} left gradients on: {', '.join(after['grads'])}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    return bool(a == b)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_number(value: object) -> bool:
    """A finite Python ``int`` or ``float`` (what reports and JSON files can hold), not a bool."""
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def assert_numbers(values: Mapping[str, Any], what: str) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(k, str) or not is_number(v)}
    assert not bad, f"{what} must be finite Python floats by name; these are not: {bad!r}"


def assert_runs_like(model: nn.Module, reference: nn.Module, task: Task[Any], what: str) -> None:
    """``model`` runs on the task's example inputs and gives outputs of ``reference``'s shape, finite."""
    for batch_size in BATCH_SIZES:
        inputs = task.example_inputs(batch_size)
        want = run(reference, inputs).shape
        got = run(model.eval(), inputs)
        assert got.shape == want, f"{what}: output shape {tuple(got.shape)}, expected {tuple(want)}"
        assert bool(torch.isfinite(got).all()), f"{what}: non-finite outputs at batch size {batch_size}"


def assert_saves(model: nn.Module, task: Task[Any], tmp_path: Path, what: str) -> None:
    """``model`` saves as the pipeline's artifact (TorchScript) and loads back with the same outputs."""
    inputs = task.example_inputs(2)
    path = tmp_path / "model.pt"
    assert save_artifact(model, inputs, path) > 0
    want, got = run(model, inputs), run(load_artifact(path), inputs)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), f"{what}: the saved artifact gives other outputs"


def metric_of(task: Task[Any], model: nn.Module) -> float:
    return float(task.evaluate(model)[task.metric])


def _policy_naming(kind: str, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest policy naming the component ``name`` of ``kind`` with ``options``."""
    spec = {"name": name, "options": dict(options)}
    policy: dict[str, Any] = {"schema_version": 1, "task": TinyDigits.name}
    if kind == "task":
        policy["task"] = spec
    elif kind == "sampler":
        policy["pipeline"] = {"pruner": "torch-pruning"}
        policy["search"] = {"space": [{"layers": ["*"], "prune_ratio": [0.0, 0.5]}], "sampler": spec}
    else:
        policy["pipeline"] = {kind: spec}
    return policy


class _CountedBatches:
    """An iterable of batches that counts those handed out."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self.batches = batches
        self.count = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.batches:
            self.count += 1
            yield batch

    def __len__(self) -> int:
        assert isinstance(self.batches, Sized)
        return len(self.batches)


class _CountingTask:
    """Wraps a task's ``train_data`` so that every training batch handed out is counted."""

    def __init__(self, task: Task[Any]) -> None:
        self._train = task.train_data
        self._epochs: list[_CountedBatches] = []
        self.task = copy.copy(task)
        self.task.train_data = self._train_data  # type: ignore[method-assign]

    def _train_data(self) -> Iterable[Batch]:
        counted = _CountedBatches(self._train())
        self._epochs.append(counted)
        return counted

    @property
    def batches(self) -> int:
        return sum(epoch.count for epoch in self._epochs)


# -- the suites -----------------------------------------------------------------------------------------
class ComponentContract:
    """What every component promises: a kind, a name usable in a policy, strict serialisable options."""

    #: the component class under test
    component: ClassVar[type[Component[Any]]]
    #: its ``options:`` block, as a policy would give it
    options: ClassVar[Mapping[str, Any]] = {}
    #: the plugin (module or object) that registers it, as its entry point names it; optional
    plugin: object | None = (
        None  # not a ClassVar: mypy takes a module assigned in a class body for an attribute
    )
    #: the base class a component of this suite derives from
    base: ClassVar[type[Component[Any]]] = Component

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _one_thread(cls) -> Iterator[None]:
        with threads(1):
            yield

    @pytest.fixture(scope="class")
    @classmethod
    def orchestrator_registry(cls) -> PluginRegistry:
        """The builtins, the tiny task, ``plugin`` and ``component``; nothing else installed."""
        plugins = [cls.plugin] if cls.plugin is not None else []
        return isolated_registry(*plugins, components=[cls.component])

    def test_is_a_component_of_its_kind(self) -> None:
        cls = self.component
        assert issubclass(cls, self.base), f"{cls!r} does not derive from {self.base.__name__}"
        assert cls.kind == self.base.kind, f"{cls!r} has kind {cls.kind!r}, expected {self.base.kind!r}"
        assert not getattr(cls, "__abstractmethods__", None), f"{cls!r} leaves abstract methods"

    def test_name_is_usable_in_a_policy(self, orchestrator_registry: PluginRegistry) -> None:
        name = self.component.name
        assert isinstance(name, str), f"name must be a str, not {name!r}"
        assert name, "name is empty"
        assert not any(c.isspace() for c in name), f"name {name!r} holds white space"
        text = json.dumps(_policy_naming(self.component.kind, name, self.options))
        parse_policy(text).check_components(orchestrator_registry.components)
        assert orchestrator_registry.components.get(self.component.kind, name) is self.component

    def test_plugin_registers_the_component(self) -> None:
        if self.plugin is None:
            pytest.skip("set 'plugin' to the module your entry point names to check its registration")
        registry = isolated_registry(self.plugin)
        assert registry.components.get(self.component.kind, self.component.name) is self.component

    def test_options_are_strict_and_immutable(self) -> None:
        options_cls = self.component.Options
        assert issubclass(options_cls, ComponentOptions), f"{options_cls!r} is not a ComponentOptions"
        assert options_cls.model_config.get("extra") == "forbid", "Options must forbid unknown keys"
        assert options_cls.model_config.get("frozen") is True, "Options must be frozen"

    def test_unknown_option_is_refused_naming_it(self, orchestrator_registry: PluginRegistry) -> None:
        wrong = {**self.options, "surely_not_an_option": 1}
        with pytest.raises(PolicyError, match="surely_not_an_option"):
            orchestrator_registry.components.create(self.component.kind, self.component.name, wrong)

    def test_options_round_trip_through_a_policy_file(self, orchestrator_registry: PluginRegistry) -> None:
        made = create(orchestrator_registry, self.component, self.options)
        assert isinstance(made.options, self.component.Options)
        written = json.loads(json.dumps(made.options.model_dump(mode="json")))
        again = create(orchestrator_registry, self.component, written)
        assert again.options == made.options, "options written to a plan file do not load back equal"

    def test_constructor_takes_keywords_only(self) -> None:
        with pytest.raises(TypeError):
            self.component(self.component.Options.model_validate(dict(self.options)))  # type: ignore[misc]


class OnTaskContract(ComponentContract):
    """The base of the suites that run the component on a task: ``tiny-digits`` with the model
    ``tiny_model``, unless ``make_task`` is overridden."""

    #: the model of the default ``tiny-digits`` task
    tiny_model: ClassVar[Literal["cnn", "mlp", "resnet"]] = "cnn"

    @classmethod
    def make_task(cls) -> Task[Any]:
        """The task the component is tested on (once per class); override to use your own."""
        return TinyDigits(options=TinyDigitsOptions(model=cls.tiny_model))

    @pytest.fixture(scope="class")
    @classmethod
    def contract_task(cls) -> Task[Any]:
        return cls.make_task()

    @pytest.fixture
    def contract_model(self, contract_task: Task[Any]) -> nn.Module:
        return contract_task.build_model()


class ScorerContract(OnTaskContract):
    """``score`` gives a finite float for requested layers only, leaves the model alone, is deterministic
    and fills ``Scores.channels`` exactly when ``per_channel`` says so."""

    component: ClassVar[type[Scorer[Any]]]
    base = Scorer

    @classmethod
    def make_task(cls) -> Task[Any]:
        """``tiny-digits`` with a CNN, or a residual net for a scorer of droppable blocks."""
        model = "resnet" if cls.component.targets == "blocks" else cls.tiny_model
        return TinyDigits(options=TinyDigitsOptions(model=model))

    def _score(
        self, registry: PluginRegistry, model: nn.Module, task: Task[Any], layers: list[str] | None = None
    ) -> tuple[Scores, list[str]]:
        scorer = create(registry, self.component, self.options)
        targets = layers if layers is not None else targets_of(scorer, model, task.example_inputs(2))
        assert targets, f"the model of task '{task.name}' has nothing for a scorer of {scorer.targets}"
        scores = scorer.score(model, task, targets)
        assert isinstance(scores, Scores), f"score returned {type(scores)!r}, not Scores"
        return scores, targets

    def test_scores_are_finite_floats_for_requested_layers(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        scores, targets = self._score(orchestrator_registry, contract_model, contract_task)
        extra = sorted(set(scores.layers) - set(targets))
        assert not extra, f"scored names it was not asked for: {extra}"
        assert scores.layers, f"scored none of {targets}"
        assert_numbers(scores.layers, "layer scores")

    def test_scores_only_the_layers_it_is_given(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        full, _ = self._score(orchestrator_registry, contract_model, contract_task)
        some = list(full.layers)[-1:]
        scores, _ = self._score(orchestrator_registry, contract_model, contract_task, some)
        assert set(scores.layers) == set(some), f"asked for {some}, scored {sorted(scores.layers)}"
        assert set(scores.channels) <= set(some), (
            f"asked for {some}, gave channels of {sorted(scores.channels)}"
        )

    def test_leaves_the_model_unchanged(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        before = snapshot(contract_model)
        self._score(orchestrator_registry, contract_model, contract_task)
        assert_unchanged(before, contract_model, "score")

    def test_is_deterministic(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        first, _ = self._score(orchestrator_registry, contract_model, contract_task)
        second, _ = self._score(orchestrator_registry, contract_model, contract_task)
        assert second.layers == pytest.approx(first.layers, rel=1e-6, abs=1e-9)
        assert set(second.channels) == set(first.channels)
        for name, values in first.channels.items():
            assert list(second.channels[name]) == pytest.approx(list(values), rel=1e-6, abs=1e-9), name

    def test_channel_scores_match_the_per_channel_flag(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        scores, targets = self._score(orchestrator_registry, contract_model, contract_task)
        if not self.component.per_channel:
            assert not scores.channels, "per_channel is False but score filled Scores.channels"
            return
        assert scores.channels, "per_channel is True but score left Scores.channels empty"
        extra = sorted(set(scores.channels) - set(targets))
        assert not extra, f"channel scores for names it was not asked for: {extra}"
        for name, values in scores.channels.items():
            values = list(values)
            assert all(is_number(v) for v in values), f"non-finite or non-float channel scores of '{name}'"
            want = _output_channels(contract_model.get_submodule(name))
            if want is not None:
                assert len(values) == want, f"'{name}' has {want} output channels, {len(values)} scores"


def _output_channels(layer: nn.Module) -> int | None:
    """Output channels of a convolution, linear layer or embedding (None for anything else)."""
    from torch import nn

    if isinstance(layer, nn.modules.conv._ConvNd):
        return int(layer.out_channels)
    if isinstance(layer, nn.Linear):
        return int(layer.out_features)
    if isinstance(layer, nn.Embedding):
        return int(layer.embedding_dim)
    return None


class PrunerContract(OnTaskContract):
    """A plan's decisions shrink the model, which still runs, trains, evaluates and saves; decisions the
    pruner does not handle, and a zero ratio, change nothing.

    A pruner handles ``drop`` when ``handles_drop`` says so (tested on a residual net: a dropped block's
    parameters are gone), else ``prune_ratio`` (the first hidden layer loses about ``prune_ratio`` of its
    weights: whole channels for a ``structured`` pruner, which also makes the model smaller, zeros for
    an unstructured one).
    """

    component: ClassVar[type[Pruner[Any]]]
    base = Pruner
    #: the ratio the plan gives the pruned layer
    prune_ratio: ClassVar[float] = 0.5
    #: how far the share of the layer's weights removed may be from ``prune_ratio`` (whole channels)
    ratio_tolerance: ClassVar[float] = 0.25

    @classmethod
    def make_task(cls) -> Task[Any]:
        """``tiny-digits`` with a CNN, or a residual net for a pruner that drops blocks."""
        model = "resnet" if cls.component.handles_drop else cls.tiny_model
        return TinyDigits(options=TinyDigitsOptions(model=model))

    def _target(self, model: nn.Module, task: Task[Any]) -> str:
        """The layer a ratio plan prunes (the first hidden one) or the block a drop plan drops."""
        example = task.example_inputs(2)
        if self.component.handles_drop:
            blocks = droppable_blocks(model, example)
            assert blocks, f"the model of task '{task.name}' has no droppable block"
            return blocks[0]
        outputs = set(output_layers(model, example))
        hidden = [n for n in compressible_layers(model) if n not in outputs]
        assert hidden, f"the model of task '{task.name}' has no hidden layer to prune"
        return hidden[0]

    def _handled(self, target: str) -> CompressionPlan:
        decision = (
            LayerDecision(drop=True)
            if self.component.handles_drop
            else LayerDecision(prune_ratio=self.prune_ratio)
        )
        return CompressionPlan(layers={target: decision})

    def _prune(
        self, registry: PluginRegistry, model: nn.Module, task: Task[Any], plan: CompressionPlan
    ) -> nn.Module:
        pruner = create(registry, self.component, self.options)
        pruned = pruner.prune(model, plan, task)
        assert pruned is not None, "prune returned None; return the pruned model"
        return pruned.eval()

    def test_plan_shrinks_the_model_which_still_runs(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        reference = copy.deepcopy(contract_model)
        target = self._target(contract_model, contract_task)
        params = param_count(contract_model)
        if self.component.handles_drop:
            gone = param_count(contract_model.get_submodule(target))
            pruned = self._prune(orchestrator_registry, contract_model, contract_task, self._handled(target))
            assert param_count(pruned) <= params - gone, f"dropping '{target}' did not remove its parameters"
        else:
            weight = _weight(contract_model.get_submodule(target))
            kept_before = int(torch.count_nonzero(weight))
            pruned = self._prune(orchestrator_registry, contract_model, contract_task, self._handled(target))
            removed = 1.0 - int(torch.count_nonzero(_weight(pruned.get_submodule(target)))) / kept_before
            assert removed > 0, f"prune_ratio {self.prune_ratio} on '{target}' removed no weight"
            assert abs(removed - self.prune_ratio) <= self.ratio_tolerance, (
                f"prune_ratio {self.prune_ratio} on '{target}' removed {removed:.2f} of its weights"
            )
            if self.component.structured:
                assert param_count(pruned) < params, "a structured pruner left the parameter count as is"
        assert_runs_like(pruned, reference, contract_task, "the pruned model")

    def test_pruned_model_trains_evaluates_and_saves(
        self,
        orchestrator_registry: PluginRegistry,
        contract_model: nn.Module,
        contract_task: Task[Any],
        tmp_path: Path,
    ) -> None:
        plan = self._handled(self._target(contract_model, contract_task))
        pruned = self._prune(orchestrator_registry, contract_model, contract_task, plan)
        assert is_number(metric_of(contract_task, pruned)), "the pruned model's metric is not finite"
        batch = next(iter(contract_task.train_data()))
        pruned.train()
        contract_task.loss(pruned(*contract_task.inputs(batch)), batch).backward()
        grads = [p.grad for p in pruned.parameters() if p.requires_grad]
        assert grads, "the pruned model has no trainable parameter left"
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), "bad gradients"
        pruned.zero_grad(set_to_none=True)
        assert_saves(pruned.eval(), contract_task, tmp_path, "the pruned model")
        pruner = create(orchestrator_registry, self.component, self.options)
        assert_numbers(pruner.metrics(pruned), "Pruner.metrics")

    def test_plans_it_does_not_act_on_change_nothing(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        target = self._target(contract_model, contract_task)
        layers = list(compressible_layers(contract_model))
        other = LayerDecision(prune_ratio=self.prune_ratio) if self.component.handles_drop else None
        plans = {
            "an empty plan": CompressionPlan(),
            "prune_ratio 0": CompressionPlan(layers={n: LayerDecision(prune_ratio=0.0) for n in layers}),
            "bits only": CompressionPlan(layers={n: LayerDecision(bits=8) for n in layers}),
            "a decision it does not handle": CompressionPlan(
                layers={target: other if other is not None else LayerDecision(drop=True)}
            ),
        }
        for what, plan in plans.items():
            model = copy.deepcopy(contract_model)
            before = snapshot(model)
            pruned = self._prune(orchestrator_registry, model, contract_task, plan)
            assert_unchanged(before, pruned, f"prune with {what}")


def _weight(layer: nn.Module) -> torch.Tensor:
    weight = getattr(layer, "weight", None)
    assert isinstance(weight, torch.Tensor), f"{type(layer).__name__} has no weight tensor"
    return weight.detach()


class QuantizerContract(OnTaskContract):
    """Each declared bit-width applies to the layers ``handles`` accepts, and the result runs, evaluates and
    saves; other bit-widths are refused with a :class:`~orchestrator.errors.PlanError`; float plans change
    nothing; ``accelerates``, ``describe_support`` and ``metrics`` answer."""

    component: ClassVar[type[Quantizer[Any]]]
    base = Quantizer

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize ``bits`` over the declared bit-widths and ``refused`` over the other valid ones."""
        supported = sorted(self.component.supported_bits - {FLOAT_BITS})
        if "bits" in metafunc.fixturenames:
            metafunc.parametrize("bits", supported, ids=[f"{b}bit" for b in supported])
        if "refused" in metafunc.fixturenames:
            others = sorted(VALID_BITS - self.component.supported_bits - {FLOAT_BITS})
            metafunc.parametrize("refused", others, ids=[f"{b}bit" for b in others])

    def _quantizer(self, registry: PluginRegistry) -> Quantizer[Any]:
        return create(registry, self.component, self.options)

    def test_declared_bits_apply_and_the_result_runs_evaluates_and_saves(
        self,
        bits: int,
        orchestrator_registry: PluginRegistry,
        contract_model: nn.Module,
        contract_task: Task[Any],
        tmp_path: Path,
    ) -> None:
        quantizer = self._quantizer(orchestrator_registry)
        reference = copy.deepcopy(contract_model)
        layers = compressible_layers(contract_model)
        taken = {n: LayerDecision(bits=bits) for n, m in layers.items() if quantizer.handles(m, bits)}
        assert taken, f"handles() takes no layer of the model at {bits} bits ({quantizer.describe_support()})"
        quantized = quantizer.quantize(contract_model, CompressionPlan(layers=taken), contract_task).eval()
        assert_runs_like(quantized, reference, contract_task, f"the model at {bits} bits")
        assert is_number(metric_of(contract_task, quantized)), "the quantized model's metric is not finite"
        assert_saves(quantized, contract_task, tmp_path, f"the model at {bits} bits")
        assert_numbers(quantizer.metrics(quantized), "Quantizer.metrics")

    def test_other_bits_are_refused(
        self,
        refused: int,
        orchestrator_registry: PluginRegistry,
        contract_model: nn.Module,
        contract_task: Task[Any],
    ) -> None:
        quantizer = self._quantizer(orchestrator_registry)
        layers = compressible_layers(contract_model)
        taken = [n for n, m in layers.items() if quantizer.handles(m, refused)]
        assert not taken, f"handles() takes {taken} at {refused} bits, which supported_bits does not hold"
        assert quantizer.accelerates(refused) is False, f"accelerates({refused}) is not False"
        name = next(iter(layers))
        plan = CompressionPlan(layers={name: LayerDecision(bits=refused)})
        with pytest.raises(PlanError) as error:
            quantizer.quantize(contract_model, plan, contract_task)
        message = str(error.value)
        assert name in message, f"the error does not name the layer: {message}"
        assert str(refused) in message, f"the error does not name the bit-width: {message}"

    def test_float_plans_change_nothing(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        layers = list(compressible_layers(contract_model))
        inputs = contract_task.example_inputs(3)
        want = run(contract_model, inputs)
        for plan in (
            CompressionPlan(),
            CompressionPlan(layers={n: LayerDecision(bits=FLOAT_BITS) for n in layers}),
        ):
            quantized = self._quantizer(orchestrator_registry).quantize(
                copy.deepcopy(contract_model), plan, contract_task
            )
            assert torch.equal(run(quantized.eval(), inputs), want), f"{plan.to_dict()} changed the outputs"

    def test_capabilities_answer(self, orchestrator_registry: PluginRegistry) -> None:
        quantizer = self._quantizer(orchestrator_registry)
        for bits in sorted(VALID_BITS):
            answer = quantizer.accelerates(bits)
            assert isinstance(answer, bool), f"accelerates({bits}) gave {answer!r}, not a bool"
            if self.component.simulated:
                assert not answer, f"a simulated quantizer claims that {bits} bits run faster"
        support = quantizer.describe_support()
        assert isinstance(support, str), f"describe_support() gave {support!r}"
        assert support.strip(), "describe_support() is empty"
        assert "\n" not in support.strip(), "describe_support() goes into one-line error messages"


class DistillerContract(OnTaskContract):
    """A damaged student comes back at least as good, runs and keeps its shape; the teacher is left alone;
    the budget bounds the training; the monitor sees progress in (0, 1] and can stop recovery."""

    component: ClassVar[type[Distiller[Any]]]
    base = Distiller
    #: ``(options, batches)``: options that bound recovery, and the most training batches it may use then
    budget: ClassVar[tuple[Mapping[str, Any], int] | None] = None
    #: noise added to the student's weights, relative to each weight tensor's standard deviation
    damage: ClassVar[float] = 0.6
    #: how much worse than the damaged student the recovered one may be, in the task metric's units
    tolerance: ClassVar[float] = 0.0

    def _distill(
        self,
        registry: PluginRegistry,
        student: nn.Module,
        teacher: nn.Module,
        task: Task[Any],
        options: Mapping[str, Any] | None = None,
        monitor: Any = None,
    ) -> nn.Module:
        distiller = create(registry, self.component, self.options if options is None else options)
        result = distiller.distill(student, teacher, task, monitor=monitor)
        assert result is not None, "distill returned None; return the student"
        return result

    def _damaged(self, model: nn.Module) -> nn.Module:
        student = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in compressible_layers(student).values():
                weight = _weight(layer)
                noise = torch.randn(weight.shape, generator=generator) * weight.std() * self.damage
                layer.weight.add_(noise)  # type: ignore[operator]
        return student

    def test_a_damaged_student_does_not_get_worse(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        student = self._damaged(contract_model)
        before = metric_of(contract_task, student)
        result = self._distill(orchestrator_registry, student, contract_model, contract_task)
        assert_runs_like(result, contract_model, contract_task, "the distilled student")
        after = metric_of(contract_task, result)
        worse = (
            after < before - self.tolerance
            if contract_task.higher_is_better
            else after > before + self.tolerance
        )
        assert not worse, f"{contract_task.metric} went from {before:.4g} to {after:.4g} in recovery"

    def test_leaves_the_teacher_unchanged(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        student = self._damaged(contract_model)
        before = snapshot(contract_model)
        self._distill(orchestrator_registry, student, contract_model, contract_task)
        assert_unchanged(before, contract_model, "distill (on the teacher)")

    def test_budget_bounds_training(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        if self.budget is None:
            pytest.skip("set budget = (options, most training batches) to check that the budget holds")
        options, most = self.budget
        counting = _CountingTask(contract_task)
        student = self._damaged(contract_model)
        result = self._distill(
            orchestrator_registry, student, contract_model, counting.task, {**self.options, **options}
        )
        assert counting.batches <= most, f"with {dict(options)} it trained on {counting.batches} batches"
        assert_runs_like(result, contract_model, contract_task, "the student after a short budget")

    def test_monitor_sees_progress_and_can_stop_recovery(
        self, orchestrator_registry: PluginRegistry, contract_model: nn.Module, contract_task: Task[Any]
    ) -> None:
        seen: list[float] = []

        def watch(fraction: float, student: nn.Module) -> None:
            seen.append(fraction)

        self._distill(
            orchestrator_registry, self._damaged(contract_model), contract_model, contract_task, monitor=watch
        )
        assert all(0.0 < f <= 1.0 for f in seen), f"the monitor was given fractions outside (0, 1]: {seen}"
        assert seen == sorted(seen), f"the fractions given to the monitor went down: {seen}"

        calls: list[float] = []

        def stop(fraction: float, student: nn.Module) -> None:
            calls.append(fraction)
            raise RecoveryStopped("stopped by the test")

        try:
            self._distill(
                orchestrator_registry,
                self._damaged(contract_model),
                contract_model,
                contract_task,
                monitor=stop,
            )
        except RecoveryStopped:
            assert calls, "RecoveryStopped came from somewhere other than the monitor"
            return
        assert not calls, "the monitor raised RecoveryStopped and distill went on"


class TaskContract(ComponentContract):
    """``build_model`` gives the same trained model in eval mode on every call; example inputs, training
    and evaluation batches fit it; ``evaluate`` reports the primary metric, deterministically."""

    component: ClassVar[type[Task[Any]]]
    base = Task

    @pytest.fixture(scope="class")
    @classmethod
    def contract_task(cls, orchestrator_registry: PluginRegistry) -> Task[Any]:
        return create(orchestrator_registry, cls.component, cls.options)

    @pytest.fixture(scope="class")
    @classmethod
    def baseline(cls, contract_task: Task[Any]) -> nn.Module:
        return contract_task.build_model()

    def test_baseline_is_the_same_model_in_eval_mode_on_every_call(
        self, contract_task: Task[Any], baseline: nn.Module
    ) -> None:
        training = [name for name, m in baseline.named_modules() if m.training]
        assert not training, f"build_model returned modules in training mode: {training[:5]}"
        again = snapshot(contract_task.build_model())
        assert_unchanged(again, baseline, "a second build_model call")

    def test_example_inputs_fit_the_model(self, contract_task: Task[Any], baseline: nn.Module) -> None:
        for batch_size in BATCH_SIZES:
            inputs = contract_task.example_inputs(batch_size)
            assert isinstance(inputs, tuple), "example_inputs must be a tuple"
            sizes = [len(x) for x in inputs if isinstance(x, torch.Tensor)]
            assert set(sizes) == {batch_size}, f"example_inputs({batch_size}) has batch sizes {sizes}"
            assert run(baseline, inputs).shape[0] == batch_size

    def test_evaluate_reports_the_metric_deterministically(
        self, contract_task: Task[Any], baseline: nn.Module
    ) -> None:
        metric = contract_task.metric
        assert isinstance(metric, str), f"metric must be a str, not {metric!r}"
        assert metric, "metric must name the primary metric"
        assert isinstance(contract_task.higher_is_better, bool)
        before = snapshot(baseline)
        first = contract_task.evaluate(baseline)
        assert metric in first, f"evaluate gave {sorted(first)}, without the primary metric '{metric}'"
        assert_numbers(first, "evaluate's metrics")
        assert contract_task.evaluate(baseline) == pytest.approx(first, rel=1e-9, abs=1e-12)
        assert_unchanged(before, baseline, "evaluate")

    def test_batches_feed_the_model_and_its_loss(self, contract_task: Task[Any], baseline: nn.Module) -> None:
        for name, data in (
            ("train_data", contract_task.train_data()),
            ("eval_data", contract_task.eval_data()),
        ):
            for epoch in (1, 2):  # iterated once per epoch: a generator would be empty the second time
                assert sum(1 for _ in data), f"{name} yields no batch in epoch {epoch}"
        calibration = list(contract_task.calibration_data(2))
        assert 1 <= len(calibration) <= 2, f"calibration_data(2) gave {len(calibration)} batches"
        model = copy.deepcopy(baseline).train()
        batch = next(iter(contract_task.train_data()))
        loss = contract_task.loss(model(*contract_task.inputs(batch)), batch)
        assert loss.dim() == 0, f"the loss of a batch has shape {tuple(loss.shape)}, not a scalar"
        assert bool(torch.isfinite(loss)), f"the loss of a batch is {loss}"
        loss.backward()
        assert any(p.grad is not None for p in model.parameters()), "the loss gives no gradient"


class SamplerContract(ComponentContract):
    """``create`` gives a fresh Optuna sampler; the same seed gives the same suggestions; a
    ``multi_objective`` sampler drives a study with two objectives."""

    component: ClassVar[type[SamplerFactory[Any]]]
    base = SamplerFactory
    #: trials of each small study
    trials: ClassVar[int] = 5

    def _study(self, registry: PluginRegistry, seed: int | None, objectives: int = 1) -> Any:
        """A small study driven by a new sampler, with one or two objectives."""
        import optuna

        sampler = create(registry, self.component, self.options).create(seed=seed)
        assert isinstance(sampler, optuna.samplers.BaseSampler), f"create gave {type(sampler)!r}"
        directions: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]
        study = optuna.create_study(directions=directions[:objectives], sampler=sampler)

        def objective(trial: optuna.Trial) -> float | tuple[float, float]:
            ratio = trial.suggest_float("ratio", 0.0, 0.9, step=0.05)
            bits = trial.suggest_categorical("bits", [4, 8, 32])
            dropped = trial.suggest_int("drop", 0, 3)
            cost = (1 - ratio) * bits + dropped
            return (ratio + dropped, cost) if objectives == 2 else ratio * bits - dropped

        study.optimize(objective, n_trials=self.trials)
        return study

    @property
    def _objectives(self) -> int:
        return 2 if self.component.multi_objective else 1

    def test_create_gives_a_fresh_sampler(self, orchestrator_registry: PluginRegistry) -> None:
        factory = create(orchestrator_registry, self.component, self.options)
        assert factory.create(seed=0) is not factory.create(seed=0), "create returned the same sampler twice"
        self._study(orchestrator_registry, None)

    def test_same_seed_gives_the_same_suggestions(self, orchestrator_registry: PluginRegistry) -> None:
        first = self._study(orchestrator_registry, 7, self._objectives)
        second = self._study(orchestrator_registry, 7, self._objectives)
        assert [t.params for t in first.trials] == [t.params for t in second.trials]

    def test_drives_a_study_with_its_objectives(self, orchestrator_registry: PluginRegistry) -> None:
        study = self._study(orchestrator_registry, 0, self._objectives)
        assert len(study.trials) == self.trials
        assert all(t.state.name == "COMPLETE" for t in study.trials)
        assert study.best_trials
