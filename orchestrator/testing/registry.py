"""A registry for tests: this package's builtins and what the test names, nothing else installed."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from orchestrator.hookspecs import hookimpl
from orchestrator.registry import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, PluginRegistry, load_registry
from orchestrator.testing.tasks import TinyDigits

if TYPE_CHECKING:
    from collections.abc import Iterable

    from orchestrator.components import Component
    from orchestrator.registry import ComponentRegistry

__all__ = ["isolated_registry"]


class _Components:
    """A plugin registering component classes (those the builtins and plugins do not already hold)."""

    def __init__(self, classes: Iterable[type[Component[Any]]]) -> None:
        self.classes = list(classes)

    @hookimpl
    def orchestrator_register(self, registry: ComponentRegistry) -> None:
        for cls in self.classes:
            if cls.name in registry.names(cls.kind) and registry.get(cls.kind, cls.name) is cls:
                continue
            registry.register(cls)


def _builtin_modules() -> set[str]:
    found = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.metadata["Name"] == BUILTIN_DISTRIBUTION:
            found.add(ep.value.partition(":")[0])
    return found


def isolated_registry(*plugins: object, components: Iterable[type[Component[Any]]] = ()) -> PluginRegistry:
    """A fresh registry of the builtin plugins, the ``tiny-digits`` task, ``plugins`` and ``components``.

    Plugins of other installed distributions are not loaded and ``$ORCHESTRATOR_BLOCK`` is ignored, so a
    test sees the same components on every machine. ``plugins`` are modules (or objects) implementing
    hooks, such as the module a plugin's entry point names; a builtin module among them is loaded once.
    ``components`` are classes registered by a plugin named ``under-test`` unless a plugin already
    registered that very class; a class whose name another class holds raises
    :class:`~orchestrator.errors.DuplicateComponentError`.
    """
    builtin = _builtin_modules()
    extra: list[tuple[str, object]] = [("orchestrator-testing", _Components([TinyDigits]))]
    for plugin in plugins:
        module = getattr(plugin, "__name__", None)
        if module in builtin:
            continue
        extra.append((str(module or type(plugin).__name__), plugin))
    extra.append(("under-test", _Components(components)))
    return load_registry(distributions={BUILTIN_DISTRIBUTION}, block_from_env=False, plugins=extra)
