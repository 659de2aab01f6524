"""Tables and verdict lines of benchmarks/concurrency.py (stdout; --json prints the dict)."""

from __future__ import annotations

from typing import Any

from benchmarks import _harness as h

DRAIN_COLUMNS = ["side", "N", "wall s", "startup s", "runs/s", "steady/s", "cpu s"]
"""cpu s: the worker's whole CPU time at the end of its drain, start-up included."""


def _drain_row(name: str, d: dict[str, Any]) -> list[Any]:
    return [name, d["n"], d["wall_s"], d["startup_s"], d["runs_per_s"],
            d.get("steady_per_s"), d["cpu_s"]]  # fmt: skip


def _verdict(text: str, met: bool | None) -> None:
    print(f"verdict: {text}: {'MET' if met else 'MISSED'}")


def _statuses(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.get("statuses", {}).items()))


def capacity(m: dict[str, Any]) -> None:
    conv, raw = m["conveyor"], m["raw_solo"]
    h.print_table(
        f"capacity: {m['n']} runs awaiting {m['seconds']:g}s, one io worker "
        f"c={conv['concurrency']}",
        [*DRAIN_COLUMNS, "peak (rows)", "peak (gauge)", "fill s"],
        [[*_drain_row("conveyor", conv), conv["peak_in_flight_rows"],
          conv["peak_in_flight_gauge"], conv["fill_s"]],
         [*_drain_row("raw solo no-op", raw), None, None, None]],
    )  # fmt: skip
    print(f"  conveyor runs: {_statuses(conv)}; gauge: {conv['gauge_note']}; first start -> "
          f"last finish {conv['first_start_to_last_finish_s']:.2f}s")  # fmt: skip
    terms = (
        f"[io c={conv['concurrency']}, N={m['n']}, S={m['seconds']:g}s, raw solo no result store]"
    )
    _verdict(f"capacity wall {conv['wall_s']:.2f}s <= S + 1.25 x raw solo wall "
             f"({m['wall_limit_s']:.2f}s) {terms}", m["wall_met"])  # fmt: skip
    _verdict(f"peak in flight {conv['peak_in_flight_rows']} >= 0.9 N ({0.9 * m['n']:.0f})",
             m["peak_met"])  # fmt: skip
    _verdict(f"all {m['n']} runs succeeded", m["all_succeeded"])


def floor(m: dict[str, Any]) -> None:
    conv, bare = m["conveyor"], m["floor"]
    th, pf = m["raw_threads"], m["raw_prefork"]
    h.print_table(
        f"floor and peers: runs waiting {m['seconds']:g}s",
        ["side", "N", "wall s", "runs/s", "cpu s"],
        [[f"conveyor io c={conv['concurrency']}", conv["n"], conv["wall_s"],
          conv["runs_per_s"], conv["cpu_s"]],
         ["floor (asyncio.gather)", bare["n"], bare["wall_s"], bare["n"] / bare["wall_s"], None],
         ["raw threads c=512", th["n"], th["wall_s"], th["runs_per_s"], th["cpu_s"]],
         ["raw prefork c=2", pf["n"], pf["wall_s"], pf["runs_per_s"], pf["cpu_s"]]],
    )  # fmt: skip
    print(f"  conveyor awaits asyncio.sleep, raw Celery blocks in time.sleep; the floor's "
          f"gather alone took {bare['gather_s']:.2f}s")  # fmt: skip
    print(f"  conveyor wall / floor wall (start-up in both) = {m['wall_over_floor']:.2f}")
    print(f"  conveyor first start -> last finish / gather alone = {m['runs_over_gather']:.2f}")
    print(f"  conveyor runs/s / raw threads c=512 = {m['rate_over_threads']:.2f}")
    print(f"  conveyor runs/s / raw prefork c=2 = {m['rate_over_prefork']:.2f}")
    _verdict(f"all {m['n']} runs succeeded", m["all_succeeded"])


def rss(m: dict[str, Any]) -> None:
    h.print_table(
        f"rss: {m['n']} runs awaiting {m['seconds']:g}s on one io worker",
        ["idle MiB", "at peak MiB", "max MiB", "in flight at peak", "peak (rows)",
         "peak (gauge)", "KB per run"],
        [[m["idle_rss_kb"] / 1024, m["rss_at_peak_kb"] / 1024, m["max_rss_kb"] / 1024,
          m["in_flight_at_peak"], m["peak_in_flight_rows"], m["peak_in_flight_gauge"],
          m["kb_per_run"]]],
    )  # fmt: skip
    if m["in_flight_at_peak"] < 0.9 * m["n"]:
        print(f"  note: only {m['in_flight_at_peak']} of {m['n']} in flight at once; "
              "a longer --rss-seconds gets them all")  # fmt: skip
    _verdict(f"(RSS at peak - idle) / runs in flight = {m['kb_per_run']:.2f} KB <= 20 KB "
             f"[N={m['n']}]", m["target_met"])  # fmt: skip


def throughput(m: dict[str, Any]) -> None:
    conv, raw = m["conveyor"], m["raw_solo"]
    h.print_table(
        f"throughput: {m['n']} no-op runs, one worker",
        [*DRAIN_COLUMNS, "cpu ms/run"],
        [[*_drain_row(f"conveyor io c={conv['concurrency']}", conv), conv["cpu_ms_per_run"]],
         [*_drain_row("raw solo", raw), raw["cpu_ms_per_run"]]],
    )  # fmt: skip
    print("  cpu ms/run: the worker's CPU from its first run done to its last, per run")
    print(f"  conveyor / raw wall rate = {m['ratio_wall']:.2f}; conveyor runs: {_statuses(conv)}")
    _verdict(f"conveyor / raw solo runs/s (steady) = {m['ratio_steady']:.2f} >= 0.8 "
             f"[N={m['n']}, raw: no result store]", m["target_met"])  # fmt: skip


def roundtrip(m: dict[str, Any]) -> None:
    stats = m["latency_ms"]
    h.print_table(
        f"roundtrip, ms ({m['terms']})",
        ["side", "n", "p50", "p90", "p99", "mean", "max"],
        [[name, s["n"], s["p50"], s["p90"], s["p99"], s["mean"], s["max"]]
         for name, s in stats.items()],
    )  # fmt: skip
    for name, r in m["ratios"].items():
        _verdict(f"{name} p50 / raw_redis p50 = {r['p50']:.2f} (p90 {r['p90']:.2f}) <= 1.2",
                 m["target_met"][name])  # fmt: skip


def bulk(m: dict[str, Any]) -> None:
    print("\nbulk submit (benchmarks/bulk_submit.py)")
    if "skipped" in m:
        print(f"  skipped: {m['skipped']}")
        return
    _verdict(f"submit_many / send_task loop = {m['ratio_median']:.2f} [N={m['n']}] "
             f"({m['target']})", m["target_met"])  # fmt: skip


def peers(m: dict[str, Any]) -> None:
    rows = [[*_drain_row("conveyor", m["conveyor"]), "", m["conveyor"]["succeeded"]]]
    rows += [[*_drain_row(name, m[name]), m[name]["version"], m[name]["succeeded"]]
             for name in ("arq", "taskiq")]  # fmt: skip
    h.print_table(
        f"peers: {m['n']} runs awaiting {m['seconds']:g}s, one worker process each, "
        f"concurrency {m['concurrency']}",
        [*DRAIN_COLUMNS, "version", "succeeded"],
        rows,
    )
    _verdict(f"conveyor wall / {m['faster_peer']} wall = {m['ratio']:.2f} <= 1.0", m["target_met"])


def report(result: dict[str, Any]) -> None:
    machine = result["machine"]
    print(f"concurrency ({machine['date']}, load {machine['loadavg_at_start']}, "
          f"{machine['cpus']} CPUs, Python {machine['python']})")  # fmt: skip
    for name, m in result["measures"].items():
        PRINTERS[name](m)


PRINTERS = {
    "capacity": capacity, "floor": floor, "rss": rss, "throughput": throughput,
    "roundtrip": roundtrip, "bulk": bulk, "peers": peers,
}  # fmt: skip
