"""Gauge families in Prometheus's text format (0.0.4), for series that repeat every scrape.

prometheus_client validates and escapes every label of every sample on each scrape. The queue
and pool gauges have the same few hundred label sets scrape after scrape, so their series
prefixes are escaped once and remembered; only the values are formatted anew.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString


def _value(value: float) -> str:
    return cast(str, floatToGoString(value))  # type: ignore[no-untyped-call]


@dataclass
class Gauges:
    """One gauge family: its samples as (label values, value) in the order of `labels`."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, values: tuple[str, ...], value: float) -> None:
        self.samples.append((values, value))

    def metric(self) -> GaugeMetricFamily:
        """The same family as prometheus_client's object, for its registry and exposition."""
        family = GaugeMetricFamily(self.name, self.help, labels=list(self.labels))
        for values, value in self.samples:
            family.add_metric(list(values), value)
        return family


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@lru_cache(maxsize=8192)
def _series(name: str, labels: tuple[str, ...], values: tuple[str, ...]) -> str:
    """`name{label="value",...} ` with labels sorted by name, as prometheus_client writes them."""
    pairs = sorted(zip(labels, values, strict=True))
    inner = ",".join(f'{label}="{_escape(value)}"' for label, value in pairs)
    return f"{name}{{{inner}}} " if inner else f"{name} "


def render(families: Iterable[Gauges]) -> str:
    """The families as exposition text, byte for byte what `generate_latest` would write."""
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {family.name} {help_text}\n# TYPE {family.name} gauge\n")
        lines.extend(
            f"{_series(family.name, family.labels, values)}{_value(value)}\n"
            for values, value in family.samples
        )
    return "".join(lines)
