"""What every command shares: the lazily built app, and JSON or table output."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from conveyor.app import create_app, resolve_services
from conveyor.celery_app import ConveyorApp

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
if not console.is_terminal:
    console = Console(width=200)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_AGE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(value: str) -> timedelta | None:
    """An age such as 30s, 15m, 2h or 7d, or None if `value` is not one."""
    match = _AGE.match(value)
    if match is None:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Age(click.ParamType[timedelta, Any]):
    """A length of time such as 30s, 15m, 2h, 7d."""

    name = "AGE"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        age = parse_age(str(value))
        if age is None:
            self.fail(f"{value!r} is not an age like 30s, 15m, 2h, 7d", param, ctx)
        return age


def build_app() -> ConveyorApp:
    """The configured app, the embedded services started (and migrated) for unset URLs."""
    return create_app(resolve_services())


def get_app() -> ConveyorApp:
    """The app for this invocation, built (and embedded services started) on first use."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, ConveyorApp):
        root.obj = build_app()
    return root.obj


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_default, indent=2))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
