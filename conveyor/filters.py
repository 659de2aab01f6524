"""Metadata filters (`where`), shared by memory and vector search: the model, and SQL.

Keys and values always travel as bound parameters.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from sqlalchemy import ColumnElement, and_, bindparam, case, cast, func, literal, or_, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import Numeric

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None
"""A metadata value to match, compared as JSON: 1 matches 1 and 1.0, never true or "1"."""


class Range(BaseModel):
    """Bounds on a number, or on a time given as ISO 8601 text."""

    model_config = ConfigDict(extra="forbid")

    gt: float | datetime | None = None
    gte: float | datetime | None = None
    lt: float | datetime | None = None
    lte: float | datetime | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Range:
        bounds = [b for b in (self.gt, self.gte, self.lt, self.lte) if b is not None]
        if not bounds:
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        if len({isinstance(b, datetime) for b in bounds}) > 1:
            raise ValueError("a range compares numbers or times, not both")
        return self

    @property
    def on_times(self) -> bool:
        return any(isinstance(b, datetime) for b in (self.gt, self.gte, self.lt, self.lte))


class OneOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_: list[Scalar] = Field(alias="in", min_length=1, max_length=1000)


Condition = Annotated[Scalar | OneOf | Range, Field(union_mode="left_to_right")]
Where = dict[Annotated[str, Field(min_length=1, max_length=200)], Condition]
"""Metadata filters, all of which must hold: `{"topic": "billing"}` (equals),
`{"lang": {"in": ["en", "de"]}}`, `{"score": {"gte": 0.5}}`,
`{"at": {"gte": "2026-01-01T00:00:00Z"}}`."""


_OPS = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}


def where_clause(where: Where | None, column: ColumnElement[Any] | Any) -> ColumnElement[bool]:
    """All conditions of `where` on the JSONB `column`, joined with AND (true for none)."""
    if not where:
        return true()
    return and_(*(_condition(column, key, cond) for key, cond in where.items()))


def _contains(column: ColumnElement[Any], key: str, value: Any) -> ColumnElement[bool]:
    """column @> {key: value}: uses a GIN index on the column."""
    return column.op("@>")(cast(literal(json.dumps({key: value})), JSONB))


def _condition(column: ColumnElement[Any], key: str, cond: Any) -> ColumnElement[bool]:
    if isinstance(cond, OneOf):
        return or_(*(_contains(column, key, value) for value in cond.in_))
    if isinstance(cond, Range):
        return _range(column, key, cond)
    return _contains(column, key, cond)


def _range(column: ColumnElement[Any], key: str, rng: Range) -> ColumnElement[bool]:
    field = column.op("->")(bindparam(None, key))
    text_value = column.op("->>")(bindparam(None, key))
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
