"""The base of every contract suite, and of those that run the component on a task."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pytest

from orchestrator.components import (
    Component,
    ComponentOptions,
)
from orchestrator.errors import PolicyError
from orchestrator.measure import threads
from orchestrator.policy import parse_policy
from orchestrator.task import Task
from orchestrator.testing.contracts._support import create, policy_naming
from orchestrator.testing.registry import isolated_registry
from orchestrator.testing.tasks import TinyDigits, TinyDigitsOptions

if TYPE_CHECKING:
    from torch import nn

    from orchestrator.registry import PluginRegistry


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
        text = json.dumps(policy_naming(self.component.kind, name, self.options))
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
