"""Metadata filters (`where`) as SQL conditions; keys and values are always bound parameters."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, cast, func, literal, or_, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import Numeric

from conveyor.memory.schema import OneOf, Range, Where
from conveyor.models.memory import MemoryItem

_OPS = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}


def where_clause(where: Where | None) -> ColumnElement[bool]:
    """All conditions of `where` joined with AND (true for no conditions)."""
    if not where:
        return true()
    return and_(*(_condition(key, cond) for key, cond in where.items()))


def _contains(key: str, value: Any) -> ColumnElement[bool]:
    """metadata @> {key: value}: uses the GIN index."""
    return MemoryItem.meta.op("@>")(cast(literal(json.dumps({key: value})), JSONB))


def _condition(key: str, cond: Any) -> ColumnElement[bool]:
    if isinstance(cond, OneOf):
        return or_(*(_contains(key, value) for value in cond.in_))
    if isinstance(cond, Range):
        return _range(key, cond)
    return _contains(key, cond)


def _range(key: str, rng: Range) -> ColumnElement[bool]:
    field = MemoryItem.meta.op("->")(bindparam(None, key))
    text_value = MemoryItem.meta.op("->>")(bindparam(None, key))
    if rng.on_times:
        value: ColumnElement[Any] = case(
            (func.jsonb_typeof(field) == "string", func.conveyor_try_timestamptz(text_value)),
        )
    else:
        value = case((func.jsonb_typeof(field) == "number", cast(text_value, Numeric)))
    bounds = [
        getattr(value, _OPS[name])(bound)
        for name in _OPS
        if (bound := getattr(rng, name)) is not None
    ]
    return and_(*bounds)
