"""Policy files: a strict, versioned schema, loaded from YAML with errors that name file, line and field."""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator._strict import StrictBase, members
from orchestrator.budget import parse_budget
from orchestrator.errors import PolicyError, UnknownComponentError, printable
from orchestrator.plan import FLOAT_BITS, VALID_BITS, CompressionPlan

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

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


class StrictModel(StrictBase):
    """Every section of a policy: no unknown keys, immutable, no true/false for a number."""


class ComponentSpec(StrictModel):
    """A component by registered name, with its options (validated by the component's ``Options``).

    ``pruner: torch-pruning`` is shorthand for ``pruner: {name: torch-pruning}``.
    """

    #: registered name of the component (``orchestrate plugins`` lists them)
    name: str = Field(min_length=1)
    #: the component's options, validated by its ``Options`` (see Component options)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class PipelineSpec(StrictModel):
    """Which component does each step. A missing step is skipped."""

    #: layer/channel importance used by score-aware pruners and by ``search.priors``
    scorer: ComponentSpec | None = None
    pruner: ComponentSpec | list[ComponentSpec] | None = Field(
        default=None,
        description="One pruner, or several applied in order (e.g. depth, then torch-pruning).",
    )
    #: recovery after pruning (``kd``, ``feature-kd``, ``none``); skipped when a plan prunes nothing
    distiller: ComponentSpec | None = None
    quantizer: ComponentSpec | list[ComponentSpec] | None = Field(
        default=None,
        description="One quantizer, or several: each quantized layer goes to the first that takes its "
        "type and bits (e.g. torch-int8 for 8 bits, then inc for 2-4 bits).",
    )
    bn_recalibration: int = Field(
        default=16,
        ge=0,
        description="Training batches on which BatchNorm statistics are re-estimated after a plan prunes "
        "or drops, before recovery and measurement (0: keep the baseline's statistics).",
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

    #: batch sizes latency is measured at (``latency_ms_b1``, ``latency_ms_b64``, ...)
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 64], min_length=1)
    #: torch threads while timing; 1 gives the most stable numbers on a shared machine
    threads: int = Field(default=1, ge=1)
    #: interleaved rounds (baseline, compressed, baseline, ...); the median is reported
    rounds: int = Field(default=7, ge=3)
    #: untimed calls before the first round
    warmup: int = Field(default=3, ge=0)
    #: each round repeats the call until it lasts at least this long
    min_round_ms: float = Field(default=20.0, gt=0)
    #: measure latency at all (off: faster trials, no latency metrics)
    latency: bool = True


class SearchRule(StrictModel):
    """Which layers a rule selects and the values the search may give them.

    Each variable of a layer (``prune_ratio``, ``bits``) comes from the first rule that selects the layer
    and gives that variable, so one rule can search ratios and a later one bits for the same layers; a
    rule that gives neither keeps the layers it selects unchanged. ``prune_ratio`` and ``bits`` given as
    a single value are fixed; as ``[low, high]`` / ``[choices]`` they are searched.
    """

    name: str | None = Field(default=None, description="Label used in errors and shared variable names.")
    layers: list[str] = Field(
        default_factory=lambda: ["*"], description="Globs on qualified module names (fnmatch)."
    )
    types: list[str] = Field(
        default_factory=list, description="Module class names (e.g. Conv2d, Linear); empty = any."
    )
    exclude: list[str] = Field(default_factory=list, description="Globs of names to leave out.")
    #: fraction of output channels removed: a value (fixed) or ``[low, high]`` (searched)
    prune_ratio: float | tuple[float, float] = 0.0
    step: float | None = Field(default=None, gt=0, description="Grid step of searched ratios.")
    #: weight bits: a value (fixed) or a list of choices (searched); 32 = float
    bits: int | list[int] | None = None
    #: whether blocks are dropped: ``true`` (fixed) or ``[false, true]`` (searched); droppable blocks only
    drop: bool | list[bool] = False
    share: bool = Field(default=False, description="One variable for all the layers this rule selects.")

    @field_validator("prune_ratio")
    @classmethod
    def _ratio_range(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        ratios = value if isinstance(value, tuple) else (value,)
        if any(not 0.0 <= r < 1.0 for r in ratios):
            raise ValueError("prune_ratio values must be in [0, 1)")
        if isinstance(value, tuple) and value[0] > value[1]:
            raise ValueError("prune_ratio range must be [low, high] with low <= high")
        return value

    @field_validator("bits")
    @classmethod
    def _bit_choices(cls, value: int | list[int] | None) -> int | list[int] | None:
        if isinstance(value, list) and not value:
            raise ValueError("bits choices must not be empty")
        bits = value if isinstance(value, list) else [] if value is None else [value]
        if any(b not in VALID_BITS for b in bits):
            raise ValueError(f"bits must be among {sorted(VALID_BITS)} (32 = float)")
        return value

    @field_validator("drop")
    @classmethod
    def _drop_choices(cls, value: bool | list[bool]) -> bool | list[bool]:
        if isinstance(value, list) and not value:
            raise ValueError("drop choices must not be empty")
        return value

    @model_validator(mode="after")
    def _drop_alone(self) -> SearchRule:
        drops = self.drop if isinstance(self.drop, list) else [self.drop]
        if True in drops and (self.bits not in (None, 32) or self.prune_ratio not in (0, 0.0)):
            raise ValueError(
                "a rule that drops blocks takes no prune_ratio and no bits; give the layers inside "
                "the blocks their own rule"
            )
        return self


class Objective(StrictModel):
    """A metric to optimize; any metric a trial reports (accuracy, macs, size_bytes, latency_ms_b64...)."""

    #: a metric every trial reports: the task's (``accuracy``), ``macs``, ``params``, ``size_bytes``,
    #: ``latency_ms_b64``, or a ``*_ratio`` of them
    metric: str
    #: whether larger or smaller values are better
    direction: Literal["maximize", "minimize"]


class Constraints(StrictModel):
    """Limits a plan must meet to be feasible. Ratios are relative to the baseline."""

    max_accuracy_drop: float | None = Field(
        default=None, ge=0, description="Largest allowed loss of the task's metric, in its units."
    )
    #: largest artifact, in bytes (before training: parameters x bits / 8)
    max_size_bytes: int | None = Field(default=None, gt=0)
    #: largest MACs / baseline MACs; checked before any training
    max_macs_ratio: float | None = Field(default=None, gt=0)
    #: largest parameter count / baseline's; checked before any training
    max_params_ratio: float | None = Field(default=None, gt=0)
    max_latency_ratio: float | None = Field(
        default=None, gt=0, description="Slowest batch size's latency / baseline latency."
    )


class GateSpec(StrictModel):
    """Early gate: stop a trial partway through recovery when it cannot meet max_accuracy_drop."""

    #: stop hopeless trials at recovery checkpoints (needs ``max_accuracy_drop``)
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
    #: record the search in MLflow: a parent run, a child run per trial
    enabled: bool = True
    uri: str | None = Field(default=None, description="MLflow tracking URI; default sqlite in runs dir.")
    #: MLflow experiment name
    experiment: str = "orchestrator"


class FinalizeSpec(StrictModel):
    """The long recovery budget ``orchestrate finalize`` gives the Pareto plans of a search."""

    distiller: ComponentSpec = Field(
        description="Recovery for the final plans: usually the search's distiller with a longer budget."
    )


class SearchSpec(StrictModel):
    """The search: space rules, objectives, constraints, sampler, budget, storage and tracking."""

    #: rules that give layers their searched variables; each variable of a layer comes from the first
    #: rule that selects the layer and gives it
    space: list[SearchRule] = Field(min_length=1)
    #: metrics to optimize together; their Pareto front is the search's answer
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="accuracy", direction="maximize"),
            Objective(metric="macs", direction="minimize"),
        ],
        min_length=1,
    )
    #: limits a feasible plan meets; infeasible plans are recorded, not Pareto candidates
    constraints: Constraints = Field(default_factory=Constraints)
    #: Optuna sampler by registered name (``tpe``, ``nsga2``, ``random``, ...)
    sampler: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="tpe"))
    reference_plans: bool = Field(
        default=True, description="Start with uniform, all-int8 and unchanged plans."
    )
    #: early stop of trials that cannot meet ``max_accuracy_drop``
    gate: GateSpec = Field(default_factory=GateSpec)
    #: score-shaped search: narrow ratio ranges by layer importance, warm-start plans
    priors: PriorsSpec | None = None
    budget: str | int | None = Field(default=None, description="Trials (20) or wall time (90s, 30m, 2h).")
    #: study name (default: the policy file's name); the same name resumes the study
    study: str | None = None
    #: Optuna storage URL (default ``sqlite:///<runs dir>/optuna.db``; ``postgresql://...`` to share it
    #: among workers)
    storage: str | None = None
    #: MLflow tracking
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    #: the long recovery ``orchestrate finalize`` gives the Pareto plans
    finalize: FinalizeSpec | None = None

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            try:
                parse_budget(value)
            except PolicyError as exc:
                raise ValueError(exc.message) from None
        return value


class Policy(StrictModel):
    """A policy file: the task, the pipeline and either a fixed plan or a search."""

    schema_version: Literal[1] = Field(
        description="Version of this schema; policies written for another version are refused."
    )
    #: what to compress: a registered task (``digits-cnn``, ``mnist-resnet``, ``minilm``, a plugin's) or
    #: your own Task class by import path, ``module:Class``, found in the working directory or installed
    task: ComponentSpec
    #: which component does each step
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec)
    #: a fixed plan to ``apply`` (or ``export``)
    plan: CompressionPlan | None = None
    #: a search to run with ``orchestrate search``
    search: SearchSpec | None = None
    #: how latency is measured
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    #: seed of recovery training and of the search's sampler (``orchestrate search --seed`` overrides it)
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
        """Check that every named component exists, that its options are valid and that the plan names
        only quantizers of the pipeline."""
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
            if self.search.finalize is not None:
                final = self.search.finalize.distiller
                entries.append(("distiller", final, ("search", "finalize", "distiller")))
        for kind, spec, loc in entries:
            try:
                cls = registry.get(kind, spec.name)
            except UnknownComponentError as exc:
                field = (*loc, "name")
                line = self.line_of(field)
                raise exc.with_location(path=self._path, line=line, field=_dotted(field)) from None
            try:
                cls.Options.model_validate(spec.options)
            except ValidationError as exc:
                first, field_loc = _reported(exc, self._root, (*loc, "options"))
                inner = field_loc[len(loc) + 1 : -1]
                raise self.error(_message(first, _fields_at(cls.Options, inner)), field_loc) from None
        self._check_steps(registry)
        self._check_plan_quantizers()

    def _check_steps(self, registry: ComponentRegistry) -> None:
        """Refuse a plan or search rule asking for a step the pipeline lacks, before any work (see
        :class:`~orchestrator.steps.PipelineSteps`)."""
        from orchestrator.steps import PipelineSteps

        classes = [(k, s.name, registry.get(k, s.name)) for k, s, _ in self.pipeline.steps()]
        steps = PipelineSteps(
            {name: cls for kind, name, cls in classes if kind == "pruner"},
            {name: cls for kind, name, cls in classes if kind == "quantizer"},
        )
        conflict = steps.conflict()
        if conflict is not None:
            raise self.error(conflict, ("pipeline", "pruner"))
        for at, variable, bits in self._asked_steps():
            why = steps.lacks(variable, bits)
            if why is not None:
                raise self.error(f"the {'layer' if at[0] == 'plan' else 'rule'} {why}", (*at, variable))

    def _asked_steps(self) -> Iterator[tuple[tuple[str | int, ...], str, list[int]]]:
        """(where, variable, bits below 32) for what the plan's layers and the search rules ask for."""
        from orchestrator.steps import asked_by

        if self.plan is not None:
            for layer, decision in self.plan.layers.items():
                at: tuple[str | int, ...] = ("plan", "layers", layer)
                yield from ((at, variable, bits) for variable, bits in asked_by(decision).items())
        for index, rule in enumerate(self.search.space if self.search is not None else ()):
            ratios = rule.prune_ratio if isinstance(rule.prune_ratio, tuple) else (rule.prune_ratio,)
            bits = rule.bits if isinstance(rule.bits, list) else [] if rule.bits is None else [rule.bits]
            quantized = [b for b in bits if b != FLOAT_BITS]
            drops = rule.drop if isinstance(rule.drop, list) else [rule.drop]
            asked = {"prune_ratio": max(ratios) > 0, "drop": any(drops), "bits": bool(quantized)}
            yield from ((("search", "space", index), v, quantized) for v, yes in asked.items() if yes)

    def _check_plan_quantizers(self) -> None:
        if self.plan is None:
            return
        names = [spec.name for kind, spec, _ in self.pipeline.steps() if kind == "quantizer"]
        for layer, decision in self.plan.layers.items():
            if decision.quantizer is not None and decision.quantizer not in names:
                raise self.error(
                    f"layer '{printable(layer)}' asks for quantizer '{printable(decision.quantizer)}', which "
                    f"the pipeline does not have; its quantizers: {', '.join(names) or 'none'}",
                    ("plan", "layers", layer, "quantizer"),
                )

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
    return parse_policy(_read_text(path, "policy"), path=path)


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; a :class:`PolicyError` if it cannot be read or decoded."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read {what}: {exc.strerror or exc}", path=path) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded", path=path, line=line
        ) from None


#: deepest nesting of flow collections read; a policy needs a handful
_MAX_DEPTH = 100


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: a ``!!python/...`` tag is an error, never a call) that also
    refuses duplicate keys and reports a value it cannot build (an integer of 5,000 digits, a 13th month)
    as a YAML error at its line."""

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # PyYAML's scanner slows down with the square of the depth of ``[[[...`` (1 s at 1,000 levels)
        if self.flow_level >= _MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"more than {_MAX_DEPTH} nested '[' or '{{'", self.get_mark()
            )
        super().fetch_flow_collection_start(token_class)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            shown = f" {_short(node.value)}" if isinstance(node, yaml.ScalarNode) else ""
            problem = f"cannot read the value{shown}: {str(exc).split(';')[0]}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            first = seen.setdefault(key.value, key)
            if first is not key:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_short(key.value)} (first on line {first.start_mark.line + 1})",
                    key.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, shown: Path) -> tuple[Any, yaml.Node | None]:
    """The data of a YAML document and its node tree (for lines), read safely."""
    loader: _SafeLoader | None = None
    try:
        loader = _SafeLoader(text)
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.reader.ReaderError as exc:
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        at = text[: exc.position].count("\n") + 1
        raise PolicyError(f"invalid YAML: character {char}: {exc.reason}", path=shown, line=at) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(f"invalid YAML: {problem}", path=shown, line=line) from exc
    except RecursionError:
        raise PolicyError("invalid YAML: nested too deeply", path=shown) from None
    finally:
        if loader is not None:
            loader.dispose()


def is_bare_plan(path: str | Path) -> bool:
    """True for a file holding only ``layers:`` (a plan without task and pipeline)."""
    data, _ = _read_yaml(_read_text(Path(path), "file"), Path(path))
    return isinstance(data, Mapping) and "layers" in data and "task" not in data


def load_plan(path: str | Path) -> CompressionPlan:
    """Read a bare plan file (``layers:`` only); errors name file, line and field."""
    path = Path(path)
    data, root = _read_yaml(_read_text(path, "plan"), path)
    if not isinstance(data, Mapping):
        raise PolicyError("a plan is a YAML mapping holding 'layers:'", path=path, line=1)
    try:
        return CompressionPlan.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc, CompressionPlan, root, path) from None


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
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise PolicyError(
            f"schema_version {_short(version)} is not supported; this version of "
            f"compression-orchestrator reads schema_version {SCHEMA_VERSION}",
            path=shown,
            line=_line_of(root, ("schema_version",)),
            field="schema_version",
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc, Policy, root, shown) from None
    policy._path = Path(path) if path is not None else None
    policy._root = root
    return policy


def _schema_error(
    exc: ValidationError, model: type[BaseModel], root: yaml.Node | None, path: Path
) -> PolicyError:
    """The first error of ``exc`` as a :class:`PolicyError` naming file, line and field."""
    first, loc = _reported(exc, root)
    return PolicyError(
        _message(first, _fields_at(model, loc[:-1])),
        path=path,
        line=_line_of(root, loc),
        field=_dotted(loc) or "<root>",
    )


def _reported(
    exc: ValidationError, root: yaml.Node | None, prefix: Sequence[str | int] = ()
) -> tuple[ErrorDetails, list[str | int]]:
    """The error to report and its place in the document: the deepest one, so that for a union (a
    component or a list of them, ``0.5`` or ``[low, high]``) it is that of the member the input is shaped
    as, and not the member's complaint about the input's type."""
    placed = [(e, _located(root, (*prefix, *e["loc"]), e["type"])) for e in exc.errors()]
    return max(placed, key=lambda p: (len(p[1]), not p[0]["type"].endswith("_type")))


def _short(value: Any, *, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]}...{text[-1]}"


def _dotted(loc: Sequence[str | int]) -> str:
    return ".".join(map(str, loc))


def _message(error: Mapping[str, Any], siblings: Mapping[str, Any] | None) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ").split(" or instance of ")[0]
    if error["type"] == "extra_forbidden":
        name = str(error["loc"][-1])
        msg = f"unknown field {_short(name)}"
        if siblings:
            close = difflib.get_close_matches(name, list(siblings), n=1)
            msg += f" (did you mean '{close[0]}'?)" if close else ""
            msg += f"; allowed: {', '.join(siblings)}"
    elif error["type"] == "missing":
        msg = "required field is missing"
    return msg


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> Mapping[str, Any] | None:
    """The fields of the pydantic model found by following ``loc`` from ``model`` (through unions, lists
    and dicts)."""
    current: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for branch in (b for a in current for b in members(a)):
            origin, args = typing.get_origin(branch), typing.get_args(branch)
            if isinstance(branch, type) and issubclass(branch, BaseModel) and isinstance(part, str):
                field = branch.model_fields.get(part)
                following += [field.annotation] if field is not None else []
            elif origin in (list, tuple) and isinstance(part, int) and args:
                following.append(args[0])
            elif origin is dict and len(args) == 2:
                following.append(args[1])
        current = following
    models = [b for a in current for b in members(a) if isinstance(b, type) and issubclass(b, BaseModel)]
    return dict(models[0].model_fields) if models else None


def _is_tag(part: str | int) -> bool:
    """Whether ``part`` of a pydantic error location is not a key but the member of a union it tried
    (``float``, ``tuple[float, float]``, ``ComponentSpec``) or a marker (``[key]``)."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS or part[:1].isupper())


_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "list", "dict", "tuple"})


def _located(root: yaml.Node | None, loc: Sequence[Any], error_type: str) -> list[str | int]:
    """``loc`` as the user wrote it: the keys and indexes found in the document (a missing or unknown key
    last), without pydantic's union members and key markers."""
    parts: list[str | int] = [p for p in loc if isinstance(p, str | int)]
    if root is None:
        return [p for p in parts if not _is_tag(p)]
    out: list[str | int] = []
    node: yaml.Node | None = root
    for index, part in enumerate(parts):
        child = _child(node, part)
        if child is not None:
            out.append(part)
            node = child
        elif index == len(parts) - 1 and error_type in ("missing", "extra_forbidden"):
            out.append(part)
    return out


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if str(k.value) == str(key):
                return cast("yaml.Node", v)
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return cast("yaml.Node", node.value[key])
    return None


def _key_node(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if str(k.value) == str(key):
                return cast("yaml.Node", k)
    return None


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
