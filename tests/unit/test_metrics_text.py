"""The exporter's own gauge rendering writes exactly what prometheus_client would."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from conveyor.metrics.text import Gauges, render

label_values = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12).map(float)
)


class _Families(Collector):
    def __init__(self, families: list[Gauges]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return [f.metric() for f in self.families]


def _families(draw: st.DrawFn) -> list[Gauges]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        labels = ("queue", "pool") if i % 2 == 0 else ("pool",)
        family = Gauges(f"conveyor_test_{i}", draw(st.text(max_size=30)), labels)
        for _ in range(draw(st.integers(0, 5))):
            family.add(tuple(draw(label_values) for _ in labels), draw(values))
        out.append(family)
    return out


@given(st.composite(_families)())
def test_render_matches_prometheus_client_byte_for_byte(families: list[Gauges]) -> None:
    registry = CollectorRegistry()
    registry.register(_Families(families))
    assert render(families).encode() == generate_latest(registry)


def test_render_escapes_quotes_backslashes_and_newlines() -> None:
    family = Gauges("conveyor_x", "help", ("queue",))
    family.add(('a"b\\c\nd',), 1.0)
    assert render([family]).splitlines()[-1] == 'conveyor_x{queue="a\\"b\\\\c\\nd"} 1.0'
