"""Plugin discovery and the registry of components.

Builtins and third-party plugins enter through the same entry-point group (``orchestrator``); each entry
point is one plugin, known by the entry point's name, and can be blocked by that name
(``--block NAME`` on the command line, or ``ORCHESTRATOR_BLOCK=NAME[,NAME...]``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from orchestrator import hookspecs
from orchestrator.components import COMPONENT_KINDS, Component, ComponentKind
from orchestrator.errors import (
    DuplicateComponentError,
    PluginLoadError,
    PolicyError,
    UnknownComponentError,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

__all__ = [
    "BLOCK_ENV",
    "BUILTIN_DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "ComponentInfo",
    "ComponentRegistry",
    "PluginRegistry",
    "load_registry",
]

ENTRY_POINT_GROUP = "orchestrator"
BLOCK_ENV = "ORCHESTRATOR_BLOCK"
#: the distribution whose entry points are the builtin plugins
BUILTIN_DISTRIBUTION = "compression-orchestrator"

C = TypeVar("C", bound=type[Component[Any]])


@dataclass(frozen=True)
class ComponentInfo:
    """Where a registered component comes from."""

    kind: ComponentKind
    name: str
    cls: type[Component[Any]]
    plugin: str
    distribution: str
    version: str
    summary: str

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "summary": self.summary,
        }


class ComponentRegistry:
    """Component classes by kind and name. Handed to ``orchestrator_register`` hooks."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in COMPONENT_KINDS}
        self._owner: tuple[str, str, str] = ("<direct>", "<unknown>", "")

    def _set_owner(self, plugin: str, distribution: str, version: str) -> None:
        self._owner = (plugin, distribution, version)

    def register(self, cls: C) -> C:
        """Register a component class under ``cls.kind`` and ``cls.name``. Usable as a decorator."""
        kind = getattr(cls, "kind", None)
        name = getattr(cls, "name", None)
        if kind not in self._items:
            raise TypeError(f"{cls!r} has no valid 'kind' (one of {', '.join(COMPONENT_KINDS)})")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls!r} has no 'name'")
        plugin, distribution, version = self._owner
        existing = self._items[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(kind, name, existing.plugin, plugin)
        doc = (cls.__doc__ or "").strip().splitlines()
        summary = cls.summary or (doc[0] if doc else "")
        self._items[kind][name] = ComponentInfo(
            kind=kind,
            name=name,
            cls=cls,
            plugin=plugin,
            distribution=distribution,
            version=version,
            summary=summary,
        )
        return cls

    def names(self, kind: ComponentKind) -> list[str]:
        return sorted(self._items[kind])

    def infos(self, kind: ComponentKind | None = None) -> list[ComponentInfo]:
        kinds = [kind] if kind else list(COMPONENT_KINDS)
        return [self._items[k][n] for k in kinds for n in sorted(self._items[k])]

    def info(self, kind: ComponentKind, name: str) -> ComponentInfo:
        """The component registered as ``name``; a task may also be named by import path
        (``module:Class``, see :mod:`orchestrator.import_path`)."""
        found = self._items[kind].get(name)
        if found is not None:
            return found
        if kind == "task" and ":" in name:
            return self._import_task(name)
        raise UnknownComponentError(kind, name, self._items[kind])

    def _import_task(self, path: str) -> ComponentInfo:
        from orchestrator.import_path import ImportPathError, import_task

        try:
            cls = import_task(path)
        except ImportPathError as exc:
            raise UnknownComponentError("task", path, self._items["task"], reason=str(exc)) from None
        doc = (cls.__doc__ or "").strip().splitlines()
        return ComponentInfo(  # not registered: listings show what plugins registered
            kind="task",
            name=path,
            cls=cls,
            plugin="<import path>",
            distribution="<import path>",
            version="",
            summary=cls.summary or (doc[0] if doc else ""),
        )

    def get(self, kind: ComponentKind, name: str) -> type[Component[Any]]:
        """The class registered as ``name`` for ``kind``; lists the known names if there is none."""
        return self.info(kind, name).cls

    def create(
        self, kind: ComponentKind, name: str, options: Mapping[str, Any] | None = None
    ) -> Component[Any]:
        """Instantiate a component with validated options."""
        from pydantic import ValidationError

        cls = self.get(kind, name)
        try:
            return cls.from_options(options)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise PolicyError(f"{first['msg']} (options of {kind} '{name}')", field=field) from exc


class PluginRegistry:
    """The loaded plugins: a pluggy manager plus the components they registered."""

    def __init__(self, pm: pluggy.PluginManager, components: ComponentRegistry) -> None:
        self.pm = pm
        self.components = components

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def add_observer(self, observer: object, name: str | None = None) -> None:
        """Register an object implementing lifecycle hooks (e.g. a tracker) for the rest of the run."""
        self.pm.register(observer, name=name)
        self.pm.check_pending()

    def remove_observer(self, observer: object) -> None:
        self.pm.unregister(observer)

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; an observer that raises is reported, not fatal."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as exc:  # an observer must never stop a search
                warnings.warn(
                    f"plugin '{impl.plugin_name}' raised in {hook_name}: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def plugin_names(self) -> list[str]:
        return sorted(name for name, _ in self.pm.list_name_plugin())


def _blocked_from_env() -> set[str]:
    raw = os.environ.get(BLOCK_ENV, "")
    return {part.strip() for part in raw.replace(";", ",").split(",") if part.strip()}


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown>", ""
    return str(dist.metadata["Name"] or dist.name), str(dist.version)


def load_registry(
    *,
    block: Iterable[str] = (),
    entry_points_group: str | None = ENTRY_POINT_GROUP,
    plugins: Sequence[tuple[str, object]] = (),
    distributions: Collection[str] | None = None,
    block_from_env: bool = True,
) -> PluginRegistry:
    """Discover plugins and collect their components.

    ``block`` (plus ``$ORCHESTRATOR_BLOCK`` unless ``block_from_env`` is false) names plugins not to load,
    not even import. ``entry_points_group=None`` skips discovery (an isolated registry, e.g. in tests);
    ``distributions`` keeps only the entry points of the named distributions (e.g. the builtins of
    ``compression-orchestrator``); ``plugins`` adds ``(name, module_or_object)`` pairs directly.
    """
    blocked = set(block) | (_blocked_from_env() if block_from_env else set())
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    owners: dict[str, tuple[str, str]] = {}

    for name in blocked:
        pm.set_blocked(name)

    if entry_points_group is not None:
        for ep in sorted(entry_points(group=entry_points_group), key=lambda e: e.name):
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            distribution, version = _distribution(ep)
            if distributions is not None and distribution not in distributions:
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                raise PluginLoadError(ep.name, distribution, exc) from exc
            owners[ep.name] = (distribution, version)

    for name, plugin in plugins:
        if name in blocked:
            continue
        pm.register(plugin, name=name)
        owners[name] = ("<direct>", "")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or "<unknown>"
        raise PluginLoadError(name, owners.get(name, ("<unknown>", ""))[0], exc) from exc

    components = ComponentRegistry()
    for impl in pm.hook.orchestrator_register.get_hookimpls():
        distribution, version = owners.get(impl.plugin_name, ("<unknown>", ""))
        components._set_owner(impl.plugin_name, distribution, version)
        try:
            impl.function(registry=components)
        except DuplicateComponentError:
            raise
        except Exception as exc:
            raise PluginLoadError(impl.plugin_name, distribution, exc) from exc
    components._set_owner("<direct>", "<unknown>", "")
    return PluginRegistry(pm, components)
