"""Malformed policies and plans, made by mutating the shipped ones, are refused the same way every time.

Each generated file must give a :class:`PolicyError` naming the file, the line and (when the mutation is
at a field) the field, and ``orchestrate validate`` / ``apply`` / ``search`` must exit 2 with a one-line
message and no traceback. The properties run in-process (Typer's ``CliRunner``); a few files go through a
real process at the end.
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from orchestrator import OrchestratorError, PolicyError, load_registry, parse_policy
from orchestrator._strict import members
from orchestrator.cli import app
from orchestrator.plan import VALID_BITS
from orchestrator.policy import Policy, load_plan, load_policy

from .conftest import POLICIES, REPO

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hypothesis.strategies import DrawFn

Path_ = tuple[str | int, ...]

BASES: dict[str, dict[str, Any]] = {
    path.name: yaml.safe_load(path.read_text()) for path in sorted(POLICIES.glob("*.yaml"))
}
#: the shipped policies that hold a plan (``apply`` reaches their components) and their bare plans
WITH_PLAN = sorted(name for name, base in BASES.items() if "plan" in base)
PLANS = {name: BASES[name]["plan"] for name in WITH_PLAN}
#: the policy given to ``apply`` with a bare plan; valid, so the plan file's error is the one reported
PLAN_POLICY = POLICIES / "digits-apply.yaml"
REGISTRY = load_registry()
COMPONENTS = REGISTRY.components

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Mutation:
    """A malformed file and what its error must name.

    ``field``: the path of the field the mutation is at; the error names exactly it (``exact``) or a field
    inside it, at the line of its key (or of its closest parent, for a missing field).
    ``line``: the line the error must give (for text-level damage); ``min_line``: the earliest it may give.
    """

    content: str | bytes
    what: str
    field: Path_ | None = None
    exact: bool = True
    line: int | None = None
    min_line: int | None = None
    in_message: str | None = None


# -- helpers ---------------------------------------------------------------------------------------------


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _dotted(path: Path_) -> str:
    return ".".join(map(str, path))


def _walk(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``path`` (missing mappings on the way are created)."""
    out = copy.deepcopy(data)
    node: Any = out
    for part in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(part), dict | list):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return out


def _delete(data: dict[str, Any], path: Path_) -> dict[str, Any]:
    out = copy.deepcopy(data)
    del _get(out, path[:-1])[path[-1]]
    return out


def _is_layer_names(path: Path_) -> bool:
    """The mapping under ``plan.layers`` (or a bare plan's ``layers``) is keyed by layer names."""
    return path[-1:] == ("layers",) and path[:-1] in ((), ("plan",))


def _component_slots(policy: dict[str, Any]) -> list[tuple[str, Path_]]:
    """(kind, path) of every component a policy names."""
    slots: list[tuple[str, Path_]] = [("task", ("task",))]
    for kind, spec in (policy.get("pipeline") or {}).items():
        if isinstance(spec, list):
            slots += [(kind, ("pipeline", kind, i)) for i in range(len(spec))]
        else:
            slots.append((kind, ("pipeline", kind)))
    search = policy.get("search") or {}
    if "sampler" in search:
        slots.append(("sampler", ("search", "sampler")))
    for key in ("scorer", "drop_scorer"):
        if key in (search.get("priors") or {}):
            slots.append(("scorer", ("search", "priors", key)))
    if "finalize" in search:
        slots.append(("distiller", ("search", "finalize", "distiller")))
    return slots


def _as_spec(value: Any) -> dict[str, Any]:
    return {"name": value} if isinstance(value, str) else copy.deepcopy(value)


def _models_along(data: Any, model: type[BaseModel], path: Path_ = ()) -> Iterator[tuple[Path_, type]]:
    """(path, model) of every mapping of ``data`` that the schema reads with a pydantic model."""
    import typing

    yield path, model
    if not isinstance(data, dict):
        return
    for name, field in model.model_fields.items():
        value = data.get(name)
        for branch in members(field.annotation):
            origin, args = typing.get_origin(branch), typing.get_args(branch)
            if isinstance(branch, type) and issubclass(branch, BaseModel) and isinstance(value, dict):
                if branch.__name__ != "ComponentSpec":  # options are checked by the component's Options
                    yield from _models_along(value, branch, (*path, name))
            elif origin is list and isinstance(value, list) and _is_model(args[0]):
                for i, item in enumerate(value):
                    yield from _models_along(item, args[0], (*path, name, i))
            elif origin is dict and isinstance(value, dict) and _is_model(args[1]):
                for key, item in value.items():
                    yield from _models_along(item, args[1], (*path, name, key))


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _bounded_fields(model: type) -> list[tuple[str, Any, list[Any]]]:
    """(name, annotation, bounds) of the numeric fields of ``model`` that have bounds."""
    out = []
    for name, field in model.model_fields.items():
        bounds = [m for m in field.metadata if isinstance(m, annotated_types.Ge | annotated_types.Gt)]
        bounds += [m for m in field.metadata if isinstance(m, annotated_types.Le | annotated_types.Lt)]
        kinds = set(members(field.annotation))
        if bounds and kinds & {int, float}:
            out.append((name, field.annotation, bounds))
    return out


@st.composite
def _violating(draw: DrawFn, annotation: Any, bounds: list[Any]) -> int | float:
    """A number that breaks one of ``bounds`` (NaN and infinities included for floats)."""
    integer = float not in members(annotation)
    bound = draw(st.sampled_from(bounds))
    if isinstance(bound, annotated_types.Ge | annotated_types.Gt):
        limit = bound.ge if isinstance(bound, annotated_types.Ge) else bound.gt
        if integer:
            top = math.ceil(limit) - 1 if isinstance(bound, annotated_types.Ge) else math.floor(limit)
            return draw(st.integers(max_value=top, min_value=top - 10**12))
        low = st.floats(max_value=limit, exclude_max=isinstance(bound, annotated_types.Ge))
        return draw(st.one_of(low, st.just(-math.inf), st.just(math.nan)))
    limit = bound.le if isinstance(bound, annotated_types.Le) else bound.lt
    if integer:
        bottom = math.floor(limit) + 1 if isinstance(bound, annotated_types.Le) else math.ceil(limit)
        return draw(st.integers(min_value=bottom, max_value=bottom + 10**12))
    high = st.floats(min_value=limit, exclude_min=isinstance(bound, annotated_types.Le))
    return draw(st.one_of(high, st.just(math.inf), st.just(math.nan)))


#: keys no schema has; the ``zz`` start keeps them clear of every field name (and of ``<<`` merges)
UNKNOWN_KEYS = st.one_of(
    st.from_regex(r"zz_[a-z0-9_]{0,12}", fullmatch=True),
    # any text PyYAML writes and reads back (it folds a NEL inside a quoted key into a space)
    st.text(max_size=12).map(lambda t: f"zz {t}").filter(lambda k: yaml.safe_load(_dump({k: 1})) == {k: 1}),
)
NOT_A_NUMBER = st.sampled_from(["twelve", "1,5", "", "0x", "- 1", "1 000", [1], {"zz": 1}, True, False])


def _wrong_type(value: Any) -> st.SearchStrategy[Any]:
    """Values of a type the field holding ``value`` never takes."""
    if isinstance(value, bool):
        return st.sampled_from(["zz", "maybe", [True], {"zz": True}])
    if isinstance(value, int | float):
        return NOT_A_NUMBER
    if isinstance(value, str):
        return st.sampled_from([{"zz": [1]}, [{"zz": 1}], {}])
    if isinstance(value, list):
        return st.sampled_from(["zz", {"zz": 1}])
    return st.sampled_from(["zz", [1, 2], 3, 0.5])


# -- strategies: structural mutations of a valid document ------------------------------------------------


@st.composite
def unknown_key(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    mappings = [p for p, v in _walk(base) if isinstance(v, dict) and not _is_layer_names(p)]
    path = draw(st.sampled_from(mappings))
    key = draw(UNKNOWN_KEYS)
    return _set(base, (*path, key), draw(st.sampled_from([1, "x", None, [1], {"a": 1}]))), Mutation(
        "", "unknown key", (*path, key), in_message="unknown field"
    )


@st.composite
def wrong_type(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    paths = [p for p, _ in _walk(base) if p]
    path = draw(st.sampled_from(paths))
    value = draw(_wrong_type(_get(base, path)))
    named = path[:-1] if isinstance(path[-1], int) else path  # an item's error may name its list
    return _set(base, path, value), Mutation("", "wrong type", named, exact=False)


def _required(base: dict[str, Any]) -> list[Path_]:
    paths: list[Path_] = [("schema_version",), ("task",)]
    paths += [(*p, "name") for _, p in _component_slots(base) if isinstance(_get(base, p), dict)]
    search = base.get("search")
    if search is not None:
        paths.append(("search", "space"))
        for i, _ in enumerate(search.get("objectives", [])):
            paths += [("search", "objectives", i, "metric"), ("search", "objectives", i, "direction")]
        if "finalize" in search:
            paths.append(("search", "finalize", "distiller"))
    return paths


@st.composite
def missing_field(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    path = draw(st.sampled_from(_required(base)))
    mutation = Mutation("", "missing field", path, in_message="missing")
    return _delete(base, path), mutation


@st.composite
def out_of_range(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    """A number outside the bounds the schema gives its field (every bounded field the base reaches)."""
    fields = [
        ((*path, name), annotation, bounds)
        for path, model in _models_along(base, Policy)
        for name, annotation, bounds in _bounded_fields(model)
    ]
    path, annotation, bounds = draw(st.sampled_from(fields))
    return _set(base, path, draw(_violating(annotation, bounds))), Mutation("", "out of range", path)


def _bad_bits() -> st.SearchStrategy[int]:
    return st.integers(min_value=-(10**30), max_value=10**30).filter(lambda b: b not in VALID_BITS)


@st.composite
def bad_value(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    """Values of the right type that the schema refuses: bits outside the valid set, ranges with
    min > max, empty choices, budgets that are neither trials nor time, other schema versions."""
    choices: list[tuple[Path_, st.SearchStrategy[Any], bool]] = [
        (
            ("schema_version",),
            st.one_of(
                st.integers().filter(lambda v: v != 1),
                st.sampled_from([1.0, "1", True, [1], None, "v1"]),
                st.text(),
            ),
            True,
        ),
        (("seed",), st.one_of(st.floats().filter(lambda f: not f.is_integer()), NOT_A_NUMBER), True),
        (("measure", "batch_sizes"), st.sampled_from([[], [0], [1, -64], [64, 0]]), False),
    ]
    for i, rule in enumerate((base.get("search") or {}).get("space", [])):
        at: Path_ = ("search", "space", i)
        ratio = st.floats(min_value=0, max_value=0.99)
        choices += [
            (
                (*at, "bits"),
                st.one_of(_bad_bits(), st.lists(_bad_bits(), min_size=1).map(lambda b: [8, *b])),
                True,
            ),
            ((*at, "bits"), st.just([]), True),
            ((*at, "drop"), st.just([]), True),
            ((*at, "step"), st.floats(max_value=0) | st.just(math.nan), True),
            (
                (*at, "prune_ratio"),
                st.tuples(ratio, ratio).filter(lambda r: r[0] > r[1]).map(list)
                | st.tuples(st.floats(max_value=-1e-9) | st.floats(min_value=1), ratio).map(list)
                | st.floats(min_value=1)
                | st.floats(max_value=-1e-9),
                True,
            ),
        ]
        if "drop" not in rule and ("bits" in rule or "prune_ratio" in rule):
            choices.append(((*at,), st.just({**rule, "drop": True}), True))
    if base.get("search") is not None:
        budgets = st.sampled_from(["abc", "0", 0, -3, "-5m", "0s", "10 minutes", "1.5", "m", "", "2d", True])
        blank = st.text().filter(lambda t: not t.strip())
        not_ascii_digits = st.text(
            alphabet="\u00b2\u00b3\u00b9\u2070\u2074", min_size=1
        )  # str.isdigit() holds
        choices.append((("search", "budget"), budgets | blank | not_ascii_digits, True))
    for name, decision in (base.get("plan") or {}).get("layers", {}).items():
        at = ("plan", "layers", name)
        choices.append(((*at, "bits"), _bad_bits(), True))
        if "bits" in decision and decision["bits"] != 32:
            choices.append(((*at,), st.just({**decision, "drop": True}), True))
            choices.append(((*at, "quantizer"), st.from_regex(r"zz[a-z-]{0,8}", fullmatch=True), True))
    path, values, exact = draw(st.sampled_from(choices))
    return _set(base, path, draw(values)), Mutation("", "bad value", path, exact=exact)


@st.composite
def unknown_component(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    kind, path = draw(st.sampled_from(_component_slots(base)))
    name = draw(st.one_of(st.from_regex(r"zz[a-z0-9-]{0,12}", fullmatch=True), st.text(max_size=10)))
    known = [n for n in COMPONENTS.names(kind)]  # type: ignore[arg-type]
    if name in known or not name.strip():
        name = f"zz{name}"
    spec = _as_spec(_get(base, path))
    mutated = _set(base, path, {**spec, "name": name} if draw(st.booleans()) else name)
    # the error lists every known name of the kind
    return mutated, Mutation(
        "", "unknown component", (*path, "name"), in_message=f"known {kind}s: {', '.join(known)}"
    )


@st.composite
def bad_option(draw: DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    """An unknown option key, an option of the wrong type, out of its bounds or not among its literals."""
    kind, path = draw(st.sampled_from(_component_slots(base)))
    spec = _as_spec(_get(base, path))
    options = dict(spec.get("options") or {})
    cls = COMPONENTS.get(kind, spec["name"])  # type: ignore[arg-type]
    fields = cls.Options.model_fields
    how = draw(st.sampled_from(["unknown", "type", "range", "literal"]))
    bounded = _bounded_fields(cls.Options)
    literal = [n for n, f in fields.items() if "Literal" in str(f.annotation)]
    numeric = [n for n, f in fields.items() if set(members(f.annotation)) & {int, float}]
    if how == "range" and bounded:
        key, annotation, bounds = draw(st.sampled_from(bounded))
        options[key] = draw(_violating(annotation, bounds))
    elif how == "literal" and literal:
        key = draw(st.sampled_from(literal))
        options[key] = draw(st.from_regex(r"zz[a-z-]{0,8}", fullmatch=True))
    elif how in ("type", "range", "literal") and numeric:
        key = draw(st.sampled_from(numeric))
        options[key] = draw(NOT_A_NUMBER)
    else:
        key = draw(UNKNOWN_KEYS)
        options[key] = draw(st.sampled_from([1, "x", None, [1]]))
    mutated = _set(base, path, {**spec, "options": options})
    return mutated, Mutation("", "bad option", (*path, "options", key))


STRUCTURAL = [unknown_key, wrong_type, missing_field, out_of_range, bad_value, unknown_component, bad_option]


@st.composite
def policy_mutations(draw: DrawFn) -> tuple[str, Mutation, str]:
    name = draw(st.sampled_from(sorted(BASES)))
    mutate = draw(st.sampled_from(STRUCTURAL))
    data, mutation = draw(mutate(BASES[name]))
    return name, Mutation(**{**mutation.__dict__, "content": _dump(data)}), ""


# -- strategies: damage to the text ----------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


#: a line ``key: value`` (not a list item, not a key opening a block)
KEY_VALUE = r"^ *[\w.]+: \S"


def _a_line(draw: DrawFn, lines: list[str], pattern: str) -> int:
    """The index of one of ``lines`` that matches ``pattern``."""
    return draw(st.sampled_from([i for i, line in enumerate(lines) if re.match(pattern, line)]))


@st.composite
def text_damage(draw: DrawFn) -> Mutation:
    """YAML that cannot be read, is not a mapping, or carries what safe loading refuses."""
    text = _dump(BASES[draw(st.sampled_from(sorted(BASES)))])
    lines = _lines(text)
    how = draw(
        st.sampled_from(
            [
                "tab",
                "unclosed",
                "duplicate",
                "not a mapping",
                "garbage",
                "not utf-8",
                "python tag",
                "huge number",
                "deep nesting",
                "two documents",
                "control character",
                "alias",
            ]
        )
    )
    if how == "tab":
        i = _a_line(draw, lines, r"^ ")
        lines[i] = "\t" + lines[i].lstrip(" ")
        return Mutation("".join(lines), how, line=i + 1)
    if how == "unclosed":
        i = _a_line(draw, lines, KEY_VALUE)
        key, _, value = lines[i].partition(": ")
        lines[i] = f"{key}: {draw(st.sampled_from(['[', '{', '[{']))}{value}"
        return Mutation("".join(lines), how, min_line=i + 1)
    if how == "duplicate":
        i = _a_line(draw, lines, KEY_VALUE)
        lines.insert(i + 1, lines[i])
        return Mutation("".join(lines), how, line=i + 2, in_message="duplicate key")
    if how == "not a mapping":
        content = draw(
            st.sampled_from(
                ["", "   \n", "# only a comment\n", "---\n", "- a\n- b\n", "42\n", "'text'\n", "null\n"]
            )
            | st.lists(st.integers()).map(_dump)
            | st.text().filter(lambda t: ":" not in t and "\\" not in t)
        )
        return Mutation(content, how)
    if how == "garbage":
        return Mutation(draw(st.binary(min_size=1, max_size=200)), how)
    if how == "not utf-8":
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        bad = draw(
            st.sampled_from([b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"])
        )
        raw = b"".join(line.encode() for line in lines[:i]) + bad + "".join(lines[i:]).encode()
        return Mutation(raw, how, line=i + 1, in_message="UTF-8")
    if how == "python tag":
        i = _a_line(draw, lines, KEY_VALUE)
        tag = draw(
            st.sampled_from(
                [
                    "!!python/object/apply:os.system ['touch {marker}']",
                    "!!python/object/new:subprocess.check_output [['touch', '{marker}']]",
                    "!!python/name:os.system",
                    "!!python/module:os",
                    "!!python/object:argparse.Namespace {a: 1}",
                ]
            )
        )
        key, _, _ = lines[i].partition(": ")
        lines[i] = f"{key}: {tag}\n"
        return Mutation("".join(lines), how, line=i + 1)
    if how == "huge number":
        i = _a_line(draw, lines, r"^ *(- |[\w.]+: )-?\d+(\.\d+)?$")
        digits = draw(st.integers(min_value=4301, max_value=20_000))
        head = re.match(r"^ *(- |[\w.]+: )", lines[i])
        assert head is not None
        lines[i] = f"{head.group(0)}{'9' * digits}\n"
        return Mutation("".join(lines), how, line=i + 1)
    if how == "deep nesting":
        depth = draw(st.integers(min_value=101, max_value=20_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")]))
        if draw(st.booleans()):  # flow collections: refused at the line, before the scanner slows down
            return Mutation(text + f"seed: {opener * depth}1{closer * depth}\n", how, line=len(lines) + 1)
        block = "".join(f"{' ' * i}- \n" for i in range(1, min(depth, 1500)))  # stops the composer
        return Mutation(text + f"seed:\n{block}", how)
    if how == "two documents":
        return Mutation(text + "---\n" + text, how)
    if how == "control character":
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        char = draw(st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\ufffe"]))
        lines[i] = lines[i].rstrip("\n") + char + "\n"
        return Mutation("".join(lines), how, line=i + 1)
    # "alias": a billion laughs; safe loading shares the lists, the schema refuses the first level
    bomb = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}' if n else 'lol'] * 9)}]\n" for n in range(9))
    return Mutation(bomb + text, how, field=("l0",), in_message="unknown field")


# -- strategies: bare plan files -------------------------------------------------------------------------


@st.composite
def plan_mutations(draw: DrawFn) -> Mutation:
    base = PLANS[draw(st.sampled_from(sorted(PLANS)))]
    layer = draw(st.sampled_from(sorted(base["layers"])))
    at: Path_ = ("layers", layer)
    field: Path_
    how = draw(st.sampled_from(["unknown key", "wrong type", "prune_ratio", "bits", "drop", "layers"]))
    if how == "unknown key":
        path = draw(st.sampled_from([(), at]))
        key = draw(UNKNOWN_KEYS)
        data, field = _set(base, (*path, key), 1), (*path, key)
    elif how == "wrong type":
        key = draw(st.sampled_from(["prune_ratio", "bits", "drop", "quantizer", None]))
        path = at if key is None else (*at, key)
        value = draw(
            _wrong_type({"prune_ratio": 0.5, "bits": 8, "drop": True, "quantizer": "x"}.get(key, {}))
        )
        data, field = _set(base, path, value), path
    elif how == "prune_ratio":
        value = draw(st.floats(max_value=-1e-9) | st.floats(min_value=1) | st.just(math.nan))
        data, field = _set(base, (*at, "prune_ratio"), value), (*at, "prune_ratio")
    elif how == "bits":
        data, field = _set(base, (*at, "bits"), draw(_bad_bits())), (*at, "bits")
    elif how == "drop":
        decision = {**base["layers"][layer], "drop": True, "bits": 8}
        data, field = _set(base, at, decision), at
    else:
        data, field = {"layers": draw(st.sampled_from([[1], "all", 3, [{"a": 1}]]))}, ("layers",)
    return Mutation(_dump(data), how, field, exact=how not in ("wrong type", "layers"))


# -- the properties --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(workdir: Path, content: str | bytes, name: str = "policy.yaml") -> Path:
    path = workdir / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _refused(load: Any, path: Path) -> PolicyError:
    """The error ``load(path)`` (then the component check) raises; fails if the file is accepted."""
    try:
        loaded = load(path)
        if isinstance(loaded, Policy):
            loaded.check_components(COMPONENTS)
    except PolicyError as exc:
        return exc
    raise AssertionError(f"accepted:\n{path.read_text(errors='replace')[:2000]}")


def _expected_line(text: str, at: Path_) -> int:
    """The line of the key at ``at`` in ``text``, or of its closest parent present (PyYAML's composer)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    line = node.start_mark.line + 1
    for part in at:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if str(k.value) == str(part)]
            if not found:
                break
            line, node = found[0][0].start_mark.line + 1, found[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _check_error(error: PolicyError, mutation: Mutation, path: Path) -> None:
    assert isinstance(error, OrchestratorError)
    assert error.exit_code == 2
    assert error.path == str(path)
    assert str(error).startswith(str(path))
    text = mutation.content if isinstance(mutation.content, str) else ""
    count = len(_lines(text)) + 1
    if mutation.field is not None:
        field = _dotted(mutation.field)
        assert error.field is not None, error
        if mutation.exact:
            assert error.field == field, error
        else:
            assert error.field == field or error.field.startswith(f"{field}."), error
        assert f"field '{error.field}'" in str(error) or not error.field.isprintable()
        assert error.line is not None, error
        expected = _expected_line(text, mutation.field)
        if error.field == field:
            assert error.line == expected, (error, expected)
        else:  # a field inside the mutated one: at its line or below
            assert expected <= error.line <= count, (error, expected)
    if mutation.line is not None:
        assert error.line == mutation.line, error
    if mutation.min_line is not None:
        assert error.line is not None, error
        assert mutation.min_line <= error.line <= count, error
    if mutation.in_message is not None:
        assert mutation.in_message in str(error), error


def _check_cli(args: list[str], error: PolicyError | None, path: Path) -> None:
    result = CliRunner().invoke(app, args)
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("error: "), output
    assert str(path) in output
    if error is not None:
        assert str(error) in output


def _command(command: str, name: str, path: Path, workdir: Path) -> list[str]:
    if command == "apply" and name in WITH_PLAN:  # a policy without a plan stops at 'no plan:' first
        return ["apply", str(path), "--out", str(workdir / "out")]
    if command == "search":  # validates before any work; a budget of 1 if it ever got further
        runs = ["--runs-dir", str(workdir / "runs"), "--no-track", "--no-progress", "--budget", "1"]
        return ["search", str(path), *runs]
    return ["validate", str(path)]


COMMANDS = st.sampled_from(["validate", "validate", "apply", "search"])


def _case(
    name: str, path: Path_, value: Any, field: Path_ | None = None, *, exact: bool = True
) -> tuple[str, Mutation, str]:
    """An explicit example: ``value`` at ``path`` of the shipped policy ``name`` (the error names ``field``,
    by default ``path``)."""
    content = _dump(_set(BASES[name], path, value))
    return name, Mutation(content, "example", field or path, exact=exact), ""


QS = "quickstart.yaml"
LAYER = ("plan", "layers", "bert.encoder.layer.0.output.dense", "quantizer")


@FUZZ
@given(policy_mutations(), COMMANDS)
@example(_case(QS, ("seed",), True), "search")
@example(
    _case("minilm-int8.yaml", ("pipeline", "quantizer", 0, "name"), {"zz": [1]}, exact=False), "validate"
)
@example(_case(QS, ("search", "budget"), "abc"), "validate")
@example(_case(QS, ("search", "budget"), "\u00b2"), "validate")
@example(_case(QS, ("search", "space", 0, "bits"), 0), "validate")
@example(_case(QS, ("search", "space", 0, "prune_ratio"), [0.5, 0.1]), "validate")
@example(_case(QS, ("search", "space", 0, "prune_ratio"), "abc"), "validate")
@example(
    _case(QS, ("search", "space", 0, "prune_ratio", 0), True, ("search", "space", 0, "prune_ratio")),
    "validate",
)
@example(_case(QS, ("measure", "batch_sizes"), [1, 0], ("measure", "batch_sizes", 1)), "validate")
@example(_case(QS, ("search", "finalize", "distiller", "name"), "kd2"), "validate")
@example(_case(QS, ("search", "finalize", "distiller", "options", "epochs"), 0), "validate")
@example(_case("minilm-int8.yaml", LAYER, "gptq"), "apply")
@example(_case(QS, ("schema_version",), 1.0), "validate")
@example(_case(QS, ("schema_version",), True), "validate")
@example(_case("digits-apply.yaml", ("zz\nkey",), 1), "validate")
@example(_case("digits-apply.yaml", ("pipeline", "pruner", "options", "p"), True), "apply")
def test_mutated_policies_are_refused_naming_the_field(
    workdir: Path, case: tuple[str, Mutation, str], command: str
) -> None:
    name, mutation = case[0], case[1]
    path = _write(workdir, mutation.content)
    error = _refused(load_policy, path)
    _check_error(error, mutation, path)
    _check_cli(_command(command, name, path, workdir), error, path)


@FUZZ
@given(text_damage(), st.sampled_from(["validate", "validate", "search"]))
@example(
    Mutation("schema_version: 1\ntask: digits-cnn\nseed: 1" + "0" * 5000 + "\n", "huge", line=3), "validate"
)
@example(
    Mutation("schema_version: 1\ntask: digits-cnn\nseed: " + "[" * 5000 + "]" * 5000 + "\n", "deep", line=3),
    "validate",
)
@example(Mutation("schema_version: 1\ntask: digits-cnn\ntask: minilm\n", "duplicate", line=3), "validate")
@example(Mutation("schema_version: 1\ntask: digits-cnn\nseed: 2020-13-45\n", "bad date", line=3), "validate")
@example(Mutation(b"schema_version: 1\ntask: digits-cnn\n\xff: 1\n", "not utf-8", line=3), "search")
@example(Mutation("schema_version: 1\ntask: digits\x01cnn\n", "control", line=2), "validate")
def test_damaged_yaml_is_refused_with_file_and_line(workdir: Path, mutation: Mutation, command: str) -> None:
    marker = workdir / "executed"
    content = mutation.content
    if isinstance(content, str):
        content = content.replace("{marker}", str(marker))
    path = _write(workdir, content)
    error = _refused(load_policy, path)
    _check_error(error, Mutation(**{**mutation.__dict__, "content": content}), path)
    _check_cli(_command(command, "", path, workdir), error, path)
    assert not marker.exists()


@FUZZ
@given(plan_mutations())
@example(Mutation(_dump({"layers": {"a": {"bits": 9}}}), "bits", ("layers", "a", "bits")))
@example(Mutation(_dump({"layers": {"a": {"prune_ratio": 0.5, "zz": 1}}}), "unknown", ("layers", "a", "zz")))
def test_mutated_plans_are_refused_naming_the_layer(workdir: Path, mutation: Mutation) -> None:
    path = _write(workdir, mutation.content, "plan.yaml")
    error = _refused(load_plan, path)
    _check_error(error, mutation, path)
    _check_cli(["apply", str(path), "--policy", str(PLAN_POLICY), "--out", str(workdir / "out")], error, path)


# -- regressions and a real process ----------------------------------------------------------------------


def test_python_tags_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    for tag in (
        f"!!python/object/apply:os.system ['touch {marker}']",
        f"!!python/object/new:subprocess.check_output [['touch', '{marker}']]",
    ):
        with pytest.raises(PolicyError, match="could not determine a constructor"):
            parse_policy(f"schema_version: 1\ntask: {tag}\n")
    assert not marker.exists()


def test_unknown_component_is_a_policy_error_naming_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "schema_version: 1\ntask: digits-cnn\npipeline:\n  pruner: {name: zz}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path).check_components(COMPONENTS)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 4, "pipeline.pruner.name")
    assert "known pruners: " + ", ".join(COMPONENTS.names("pruner")) in str(info.value)


def test_unknown_field_inside_a_list_lists_the_allowed_fields() -> None:
    text = _dump(_set(BASES["quickstart.yaml"], ("search", "space", 0, "prune_ratios"), [0, 0.5]))
    with pytest.raises(PolicyError, match=r"did you mean 'prune_ratio'\?\); allowed: name, layers"):
        parse_policy(text)


def test_bits_zero_is_refused_in_a_search_rule() -> None:
    text = _dump(_set(BASES["quickstart.yaml"], ("search", "space", 0, "bits"), 0))
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert info.value.field == "search.space.0.bits"


def test_booleans_are_not_numbers_in_component_options() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            "schema_version: 1\ntask: {name: digits-cnn, options: {epochs: true}}\n"
        ).check_components(COMPONENTS)
    assert info.value.field == "task.options.epochs"
    assert "expected a number, not true" in str(info.value)


def test_apply_names_a_missing_file(tmp_path: Path) -> None:
    for args in (["apply", "nope.yaml"], ["apply", "nope.yaml", "--policy", str(PLAN_POLICY)]):
        _check_cli([*args, "--out", str(tmp_path / "out")], None, Path("nope.yaml"))


def test_valid_policies_still_load_with_merge_keys() -> None:
    policy = parse_policy(
        "schema_version: 1\ntask: digits-cnn\npipeline:\n  distiller: &kd {name: kd, options: {epochs: 1}}\n"
        + "search:\n  space: [{}]\n  finalize:\n    distiller: {<<: *kd, options: {epochs: 9}}\n"
    )
    assert policy.search is not None
    assert policy.search.finalize is not None
    assert policy.search.finalize.distiller.options == {"epochs": 9}


REAL_PROCESS = {
    "not-utf8.yaml": (b"schema_version: 1\ntask: digits-cnn\n\xff\xfe: 1\n", "not-utf8.yaml:3"),
    "tag.yaml": (
        b"schema_version: 1\ntask: !!python/object/apply:os.system ['touch {marker}']\n",
        "tag.yaml:2",
    ),
    "tab.yaml": (b"schema_version: 1\ntask:\n\tname: digits-cnn\n", "tab.yaml:3"),
    "huge.yaml": (b"schema_version: 1\ntask: digits-cnn\nseed: " + b"9" * 6000 + b"\n", "huge.yaml:3"),
    "deep.yaml": (
        b"schema_version: 1\ntask: digits-cnn\nseed: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        "deep.yaml:3",
    ),
    "option.yaml": (
        b"schema_version: 1\ntask: digits-cnn\npipeline:\n"
        b"  pruner: {name: torch-pruning, options: {round_to: 0}}\n",
        "option.yaml:4: field 'pipeline.pruner.options.round_to'",
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_PROCESS))
def test_a_real_process_exits_2_without_a_traceback(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    content, expected = REAL_PROCESS[name]
    path = _write(tmp_path, content.replace(b"{marker}", str(marker).encode()), name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in (["validate", str(path)], ["search", str(path), "--budget", "1", "--no-track"]):
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *command],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        assert expected in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not marker.exists()
