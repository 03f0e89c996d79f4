"""Strictness shared by every schema: no unknown keys, immutable, and ``true``/``false`` is not a number.

pydantic's lax mode reads ``true`` as ``1`` and ``false`` as ``0``, so ``seed: yes`` or ``bits: [true]``
would pass silently. Policies, plans and component options (all :class:`StrictBase`) refuse a boolean
wherever the field expects a number and not a boolean.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = ["StrictBase", "members", "refuse_bool_for_number"]


def members(annotation: Any) -> list[Any]:
    """The members of a union (``X | None``), with ``Annotated[X, ...]`` unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in members(arg)]
    return [annotation]


def _kinds(annotation: Any) -> set[type]:
    """The scalar types ``annotation`` accepts (through unions, ``Optional``, ``Literal``, ``Annotated``)."""
    kinds: set[type] = set()
    for member in members(annotation):
        if typing.get_origin(member) is Literal:
            kinds |= {type(value) for value in typing.get_args(member)}
        elif isinstance(member, type) and typing.get_origin(member) is None:
            kinds.add(member)
    return kinds


def _items(annotation: Any) -> set[type]:
    """The scalar types of the items of the lists and tuples ``annotation`` accepts."""
    kinds: set[type] = set()
    for member in members(annotation):
        if typing.get_origin(member) in (list, tuple, set, frozenset):
            kinds |= {k for arg in typing.get_args(member) if arg is not Ellipsis for k in _kinds(arg)}
    return kinds


def _wants_number(kinds: set[type]) -> bool:
    return bool(kinds & {int, float}) and bool not in kinds


def refuse_bool_for_number(value: Any, annotation: Any) -> Any:
    """``value``, or ``ValueError`` when it is a boolean (or a list holding one) in place of a number."""
    if isinstance(value, bool) and _wants_number(_kinds(annotation)):
        raise ValueError(f"expected a number, not {str(value).lower()}")
    booleans = isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value)
    if booleans and _wants_number(_items(annotation)):
        raise ValueError("expected numbers, not true/false")
    return value


class StrictBase(BaseModel):
    """A pydantic model that forbids unknown keys, is immutable and takes no boolean for a number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_number(value, cls.model_fields[str(info.field_name)].annotation)
