"""Policy files: a strict, versioned schema, loaded from YAML with errors that name file, line and field."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from orchestrator.errors import PolicyError, UnknownComponentError, location
from orchestrator.plan import VALID_BITS, CompressionPlan

if TYPE_CHECKING:
    from orchestrator.components import ComponentKind
    from orchestrator.registry import ComponentRegistry

__all__ = [
    "SCHEMA_VERSION",
    "ComponentSpec",
    "Constraints",
    "Objective",
    "PriorsSpec",
    "SearchRule",
    "SearchSpec",
    "MeasureSpec",
    "PipelineSpec",
    "Policy",
    "is_bare_plan",
    "load_plan",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
]

SCHEMA_VERSION = 1


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentSpec(StrictModel):
    """A component by registered name, with its options (validated by the component's ``Options``).

    ``pruner: torch-pruning`` is shorthand for ``pruner: {name: torch-pruning}``.
    """

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class PipelineSpec(StrictModel):
    """Which component does each step. A missing step is skipped."""

    scorer: ComponentSpec | None = None
    pruner: ComponentSpec | list[ComponentSpec] | None = Field(
        default=None,
        description="One pruner, or several applied in order (e.g. depth, then torch-pruning).",
    )
    distiller: ComponentSpec | None = None
    quantizer: ComponentSpec | list[ComponentSpec] | None = Field(
        default=None,
        description="One quantizer, or several: each quantized layer goes to the first that takes its "
        "type and bits (e.g. torch-int8 for 8 bits, then inc for 2-4 bits).",
    )

    def steps(self) -> list[tuple[ComponentKind, ComponentSpec, tuple[str | int, ...]]]:
        """(kind, spec, location in the policy) of every component, pruners in order."""
        out: list[tuple[ComponentKind, ComponentSpec, tuple[str | int, ...]]] = []
        kinds: tuple[ComponentKind, ...] = ("scorer", "pruner", "distiller", "quantizer")
        for kind in kinds:
            spec = getattr(self, kind)
            if isinstance(spec, list):
                out += [(kind, item, ("pipeline", kind, i)) for i, item in enumerate(spec)]
            elif spec is not None:
                out.append((kind, spec, ("pipeline", kind)))
        return out


class MeasureSpec(StrictModel):
    """How latency is measured: batch sizes, a fixed thread count, interleaved rounds."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    threads: int = Field(default=1, ge=1)
    rounds: int = Field(default=7, ge=3)
    warmup: int = Field(default=3, ge=0)
    min_round_ms: float = Field(default=20.0, gt=0)
    latency: bool = True

    @model_validator(mode="after")
    def _positive_batches(self) -> MeasureSpec:
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes must be positive")
        return self


class SearchRule(StrictModel):
    """Which layers a rule selects and the values the search may give them.

    A layer takes its variables from the first rule that selects it. ``prune_ratio`` and ``bits`` given
    as a single value are fixed; as ``[low, high]`` / ``[choices]`` they are searched.
    """

    name: str | None = Field(default=None, description="Label used in errors and shared variable names.")
    layers: list[str] = Field(
        default_factory=lambda: ["*"], description="Globs on qualified module names (fnmatch)."
    )
    types: list[str] = Field(
        default_factory=list, description="Module class names (e.g. Conv2d, Linear); empty = any."
    )
    exclude: list[str] = Field(default_factory=list, description="Globs of names to leave out.")
    prune_ratio: float | tuple[float, float] = 0.0
    step: float | None = Field(default=None, gt=0, description="Grid step of searched ratios.")
    bits: int | list[int] | None = None
    drop: bool | list[bool] = False
    share: bool = Field(default=False, description="One variable for all the layers this rule selects.")

    @model_validator(mode="after")
    def _ranges(self) -> SearchRule:
        ratios = self.prune_ratio if isinstance(self.prune_ratio, tuple) else (self.prune_ratio,)
        if any(not 0.0 <= r < 1.0 for r in ratios):
            raise ValueError("prune_ratio values must be in [0, 1)")
        if isinstance(self.prune_ratio, tuple) and self.prune_ratio[0] > self.prune_ratio[1]:
            raise ValueError("prune_ratio range must be [low, high] with low <= high")
        bits = self.bits if isinstance(self.bits, list) else [self.bits] if self.bits else []
        if isinstance(self.bits, list) and not self.bits:
            raise ValueError("bits choices must not be empty")
        if any(b not in VALID_BITS for b in bits):
            raise ValueError(f"bits must be among {sorted(VALID_BITS)} (32 = float)")
        if isinstance(self.drop, list) and not self.drop:
            raise ValueError("drop choices must not be empty")
        drops = self.drop if isinstance(self.drop, list) else [self.drop]
        if True in drops and (self.bits not in (None, 32) or self.prune_ratio not in (0, 0.0)):
            raise ValueError(
                "a rule that drops blocks takes no prune_ratio and no bits; give the layers inside "
                "the blocks their own rule"
            )
        return self


class Objective(StrictModel):
    """A metric to optimize; any metric a trial reports (accuracy, macs, size_bytes, latency_ms_b64...)."""

    metric: str
    direction: Literal["maximize", "minimize"]


class Constraints(StrictModel):
    """Limits a plan must meet to be feasible. Ratios are relative to the baseline."""

    max_accuracy_drop: float | None = Field(
        default=None, ge=0, description="Largest allowed loss of the task's metric, in its units."
    )
    max_size_bytes: int | None = Field(default=None, gt=0)
    max_macs_ratio: float | None = Field(default=None, gt=0)
    max_params_ratio: float | None = Field(default=None, gt=0)
    max_latency_ratio: float | None = Field(
        default=None, gt=0, description="Slowest batch size's latency / baseline latency."
    )


class GateSpec(StrictModel):
    """Early gate: stop a trial partway through recovery when it cannot meet max_accuracy_drop."""

    enabled: bool = True
    #: extra loss tolerated at a checkpoint, since recovery is not finished
    margin: float = Field(default=5.0, ge=0)


class PriorsSpec(StrictModel):
    """Score-shaped search: layer scores narrow the ratio ranges and order the drop candidates."""

    scorer: ComponentSpec | None = Field(
        default=None, description="Scorer whose per-layer scores shrink ratio ranges (e.g. sensitivity)."
    )
    drop_scorer: ComponentSpec | None = Field(
        default=None, description="Scorer that orders droppable blocks, least important first (e.g. cka)."
    )
    strength: float = Field(
        default=0.8, ge=0, le=1, description="How much the most important layer's maximum ratio shrinks."
    )
    warm_starts: int = Field(default=3, ge=0, le=5, description="Score-derived plans tried first.")


class TrackingSpec(StrictModel):
    enabled: bool = True
    uri: str | None = Field(default=None, description="MLflow tracking URI; default sqlite in runs dir.")
    experiment: str = "orchestrator"


class FinalizeSpec(StrictModel):
    """The long recovery budget ``orchestrate finalize`` gives the Pareto plans of a search."""

    distiller: ComponentSpec = Field(
        description="Recovery for the final plans: usually the search's distiller with a longer budget."
    )


class SearchSpec(StrictModel):
    """The search: space rules, objectives, constraints, sampler, budget, storage and tracking."""

    space: list[SearchRule] = Field(min_length=1)
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="accuracy", direction="maximize"),
            Objective(metric="macs", direction="minimize"),
        ],
        min_length=1,
    )
    constraints: Constraints = Field(default_factory=Constraints)
    sampler: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="tpe"))
    reference_plans: bool = Field(
        default=True, description="Start with uniform, all-int8 and unchanged plans."
    )
    gate: GateSpec = Field(default_factory=GateSpec)
    priors: PriorsSpec | None = None
    budget: str | int | None = Field(default=None, description="Trials (20) or wall time (90s, 30m, 2h).")
    study: str | None = None
    storage: str | None = None
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    finalize: FinalizeSpec | None = None


class Policy(StrictModel):
    """A policy file: the task, the pipeline and either a fixed plan or a search."""

    schema_version: Literal[1] = Field(
        description="Version of this schema; policies written for another version are refused."
    )
    task: ComponentSpec
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec)
    plan: CompressionPlan | None = None
    search: SearchSpec | None = None
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    seed: int = 0

    _path: Path | None = PrivateAttr(default=None)
    _root: yaml.Node | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        return self._path

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the field at ``loc`` in the source file (or of its closest parent)."""
        return _line_of(self._root, loc)

    def error(self, message: str, loc: Sequence[str | int]) -> PolicyError:
        """A :class:`PolicyError` pointing at ``loc`` in this policy's file."""
        return PolicyError(message, path=self._path, line=self.line_of(loc), field=".".join(map(str, loc)))

    def check_components(self, registry: ComponentRegistry) -> None:
        """Check that every named component exists and that its options are valid."""
        entries: list[tuple[ComponentKind, ComponentSpec, tuple[str | int, ...]]] = [
            ("task", self.task, ("task",))
        ]
        entries += self.pipeline.steps()
        if self.search is not None:
            entries.append(("sampler", self.search.sampler, ("search", "sampler")))
            priors = self.search.priors
            for field_name in ("scorer", "drop_scorer"):
                spec = getattr(priors, field_name) if priors else None
                if spec is not None:
                    entries.append(("scorer", spec, ("search", "priors", field_name)))
        for kind, spec, loc in entries:
            try:
                cls = registry.get(kind, spec.name)
            except UnknownComponentError as exc:
                field = (*loc, "name")
                where = location(self._path, self.line_of(field), ".".join(map(str, field)))
                raise exc.with_location(where) from None
            try:
                cls.Options.model_validate(spec.options)
            except ValidationError as exc:
                first = exc.errors()[0]
                field_loc = (
                    *loc,
                    "options",
                    *[p for p in first["loc"] if isinstance(p, str | int)],
                )
                raise self.error(_message(first, cls.Options.model_fields), field_loc) from None

    def with_plan(self, plan: CompressionPlan) -> Policy:
        """This policy with a fixed plan and no search (what a saved trial plan file holds)."""
        fixed = self.model_copy(update={"plan": plan, "search": None})
        fixed._path, fixed._root = self._path, None
        return fixed

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        if self.plan is not None:
            data["plan"] = self.plan.to_dict()
        return yaml.safe_dump(data, sort_keys=False)


def policy_json_schema() -> dict[str, Any]:
    """The JSON schema of policy files."""
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compression-orchestrator policy"
    return schema


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file. Errors are :class:`PolicyError` naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror or exc}", path=path) from exc
    return parse_policy(text, path=path)


def _read_yaml(text: str, shown: Path) -> tuple[Any, yaml.Node | None]:
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"invalid YAML: {problem}", path=shown, line=line) from exc


def is_bare_plan(path: str | Path) -> bool:
    """True for a file holding only ``layers:`` (a plan without task and pipeline)."""
    data, _ = _read_yaml(Path(path).read_text(encoding="utf-8"), Path(path))
    return isinstance(data, Mapping) and "layers" in data and "task" not in data


def load_plan(path: str | Path) -> CompressionPlan:
    """Read a bare plan file (``layers:`` only); errors name file, line and field."""
    path = Path(path)
    data, root = _read_yaml(path.read_text(encoding="utf-8"), path)
    try:
        return CompressionPlan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [p for p in first["loc"] if isinstance(p, str | int)]
        raise PolicyError(
            _message(first, None), path=path, line=_line_of(root, loc), field=".".join(map(str, loc))
        ) from None


def parse_policy(text: str, *, path: str | Path | None = None) -> Policy:
    """Validate a policy given as YAML text (``path`` is used in error messages)."""
    shown = Path(path) if path is not None else Path("<policy>")
    data, root = _read_yaml(text, shown)
    if not isinstance(data, Mapping):
        raise PolicyError(
            "a policy is a YAML mapping (keys such as schema_version, task, pipeline, plan)",
            path=shown,
            line=1,
        )
    if "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        raise PolicyError(
            f"schema_version {data['schema_version']!r} is not supported; this version of "
            f"compression-orchestrator reads schema_version {SCHEMA_VERSION}",
            path=shown,
            line=_line_of(root, ("schema_version",)),
            field="schema_version",
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [p for p in first["loc"] if isinstance(p, str | int)]
        loc = _known_prefix(root, loc) if first["type"] != "extra_forbidden" else loc
        raise PolicyError(
            _message(first, _fields_at(Policy, loc[:-1])),
            path=shown,
            line=_line_of(root, loc),
            field=".".join(map(str, loc)) or "<root>",
        ) from None
    policy._path = Path(path) if path is not None else None
    policy._root = root
    return policy


def _message(error: Mapping[str, Any], siblings: Mapping[str, Any] | None) -> str:
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        name = str(error["loc"][-1])
        msg = f"unknown field '{name}'"
        if siblings:
            close = difflib.get_close_matches(name, list(siblings), n=1)
            msg += f" (did you mean '{close[0]}'?)" if close else ""
            msg += f"; allowed: {', '.join(siblings)}"
    elif error["type"] == "missing":
        msg = "required field is missing"
    return msg


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> Mapping[str, Any] | None:
    """The fields of the pydantic model found by following ``loc`` from ``model``."""
    import typing

    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return dict(current.model_fields)


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if str(k.value) == str(key):
                return cast("yaml.Node", v)
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return cast("yaml.Node", node.value[key])
    return None


def _key_node(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if str(k.value) == str(key):
                return cast("yaml.Node", k)
    return None


def _known_prefix(root: yaml.Node | None, loc: Sequence[str | int]) -> list[str | int]:
    """The longest prefix of ``loc`` that exists in the YAML document (plus a missing last key)."""
    out: list[str | int] = []
    node = root
    for part in loc:
        nxt = _child(node, part)
        out.append(part)
        if nxt is None:
            break
        node = nxt
    return out


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    if root is None:
        return None
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    for part in loc:
        key = _key_node(node, part)
        nxt = _child(node, part)
        if key is not None:
            line = key.start_mark.line + 1
        elif nxt is not None:
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def dump_schema_json() -> str:
    return json.dumps(policy_json_schema(), indent=2)
