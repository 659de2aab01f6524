"""`conveyor demo`: the example agents' workload on the embedded default, start to finish."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from threading import Event

import click

from conveyor.cli.common import console, get_app, json_option, print_json
from conveyor.client import Client
from conveyor.demo import SIZES, run_workload
from conveyor.demo.live import Live
from conveyor.demo.summary import render, summarise
from conveyor.embedded import Embedded
from conveyor.errors import ConfigError
from conveyor.workers.supervisor import Supervisor, stop_processes, worker_env

EXAMPLE_AGENTS = ("examples.ingest", "examples.research", "examples.fetch", "examples.flaky")
FLOWER_PORT, EXPORTER_PORT = 5555, 9810


def _explorers(env: dict[str, str], log_dir: str) -> dict[str, subprocess.Popen[bytes]]:
    """Flower and the exporter, for --keep-running; those still up after a moment."""
    procs = {}
    for name, args in (
        ("flower", ["flower", "--port", str(FLOWER_PORT)]),
        ("exporter", ["exporter", "--port", str(EXPORTER_PORT)]),
    ):
        out = open(os.path.join(log_dir, f"{name}.log"), "ab")  # noqa: SIM115
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    time.sleep(3)
    return procs


def _next_steps(keep_running: bool, up: dict[str, bool], log_dir: str) -> list[str]:
    steps = [
        "conveyor runs --since 15m       every run, from agent_runs",
        "conveyor runs --status rejected the malformed one, with its field errors",
        "conveyor report --since 15m     the analytics report",
    ]
    if keep_running:
        urls = {
            "flower": f"http://127.0.0.1:{FLOWER_PORT}/          Flower (workers, tasks)",
            "exporter": f"http://127.0.0.1:{EXPORTER_PORT}/metrics   exporter (queue depth, "
            "desired replicas)",
        }
        return [
            *steps,
            *(
                urls[n] if ok else f"{n} did not start: see {log_dir}/{n}.log"
                for n, ok in up.items()
            ),
        ]
    return [
        *steps,
        "conveyor demo --keep-running   keep the stack up, with Flower and the exporter",
    ]


@click.command()
@click.option(
    "--size",
    type=click.Choice(list(SIZES)),
    default="default",
    show_default=True,
    help="small (seconds, for tests), default (< 2 min on 2 cores), large (benchmarking).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds to wait for each stage.",
)
@click.option(
    "--runs",
    "questions",
    type=click.IntRange(1, 100_000),
    default=None,
    help="How many research questions to ask (default: as --size says).",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Leave the workers, the embedded services, Flower and the exporter up until Ctrl-C.",
)
@json_option
def demo(
    size: str, timeout: float, questions: int | None, keep_running: bool, as_json: bool
) -> None:
    """Run a realistic multi-agent workload on the example agents, end to end.

    Starts the services (embedded unless CONVEYOR_* URLs are set) and one worker per pool,
    then: ingest (embed and index stdlib docstrings), research (hybrid search over the
    collection and memory, an extractive answer, remembered), async fetch, flaky retries,
    a malformed submission (rejected), and the analytics report. Research and fetch wait, so
    they run on the asyncio pool `io`. Prints throughput, latency per agent, retries,
    rejections, the recall of the answers and the most runs the io pool had in flight at
    once; exit 1 on any failure.
    """
    t0 = time.perf_counter()
    app = get_app()
    missing = [a for a in EXAMPLE_AGENTS if a not in app.agents]
    if missing:
        raise ConfigError(
            f"example agents not registered: {', '.join(missing)}; install conveyor with "
            "`pip install -e .` so that its `conveyor.agents` entry point `examples` exists"
        )
    started_embedded = app.embedded
    log_dir = str(app.settings.data_dir / "logs")
    supervisor = Supervisor(
        app,
        sorted(app.settings.pools),
        node_suffix=".demo",
        grace=app.settings.time_limit + 5,
        log_dir=log_dir,
    )
    quiet = as_json or not console.is_terminal
    explorers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with console.status("starting workers...", spinner="dots") if not quiet else nullcontext():
            supervisor.start()
            supervisor.wait_ready()
        startup = time.perf_counter() - t0
        with Client(app) as client, Live(app, console, visible=not quiet) as live:
            chosen = SIZES[size]
            if questions is not None:
                chosen = dataclasses.replace(chosen, questions=questions)
            work = run_workload(client, live, chosen, timeout)
            peak = dict(live.peak)
        summary = {"size": size, **summarise(work, peak, startup)}
        summary["total_seconds"] = round(time.perf_counter() - t0, 2)
        if keep_running:
            # Embedded: the same env as ours, so that they reuse the embedded services as such
            # (Flower may then run open on loopback); configured: the resolved URLs.
            env = (
                {**os.environ, "CONVEYOR_DATA_DIR": str(app.settings.data_dir)}
                if started_embedded
                else worker_env(app)
            )
            explorers = _explorers(env, log_dir)
        up = {name: proc.poll() is None for name, proc in explorers.items()}
        steps = _next_steps(keep_running, up, log_dir)
        if as_json:
            print_json({**summary, "next": steps})
        else:
            render(console, summary, steps)
        if keep_running:
            stop = Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            console.print("[bold]running until Ctrl-C[/]", style="dim")
            try:
                while not stop.wait(1):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        stop_processes(explorers.values(), 10)
        supervisor.stop()
        if started_embedded:
            Embedded(app.settings.data_dir).stop()
    if summary["failures"] or not summary["rejected"]:
        raise SystemExit(1)
