"""What every command shares: the lazily built app, and JSON or table output."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from conveyor.app import ConveyorApp, create_app

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
if not console.is_terminal:
    console = Console(width=200)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def get_app() -> ConveyorApp:
    """The app for this invocation, built (and embedded services started) on first use."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, ConveyorApp):
        root.obj = create_app()
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
