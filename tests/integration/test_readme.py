"""Every code block of README.md is executed or checked here, so the README cannot rot.

The rule, block by block (fences are found in README order):

- ```python blocks run, against real services: the session's Redis (broker, cache) and
  PostgreSQL (a scratch database), with real `conveyor worker` processes for the pools the
  blocks use (default, memory, vector). `CONVEYOR_*` point at them, as a user's environment
  would, so `Client()` needs no argument. Each block runs in a fresh namespace, in README
  order, with the README's directory layout mimicked: a scratch working directory on the
  import path.
- A python block preceded by `<!-- readme-test: file NAME.py -->` is a module of agents: it is
  written to NAME.py in that directory, imported by the workers and by the blocks through
  `CONVEYOR_AGENT_MODULES`, and so also executed.
- A python block preceded by `<!-- readme-test: continue -->` runs in the namespace of the
  block before it (the tutorial's steps share `run_id`).
- ```bash blocks are not run (they start long-lived processes, the whole test suite, or need
  real servers); instead every `conveyor COMMAND [SUBCOMMAND]` they contain, and every command
  of the Commands table, must exist: `conveyor ... --help` exits 0.
- Other fences (formulas, the layout) are text.

No python block may keep a placeholder such as `[...]`.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from conveyor.cli import cli
from tests.integration.conftest import make_app, service_env
from tests.support.workers import ROOT, WorkerProcess

README = ROOT / "README.md"
POOLS = ("default", "memory", "vector")
_FENCE = re.compile(
    r"(?:^<!-- readme-test: (?P<marker>[^>]*?) -->\n)?^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$",
    re.M | re.S,
)
_COMMAND = re.compile(r"\bconveyor ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    marker: str
    code: str

    @property
    def file(self) -> str | None:
        return (
            self.marker.removeprefix("file ").strip() if self.marker.startswith("file ") else None
        )


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(
            line=text.count("\n", 0, m.start("code")) + 1,
            lang=m["lang"],
            marker=m["marker"] or "",
            code=m["code"],
        )
        for m in _FENCE.finditer(text)
    ]


def python_blocks() -> list[Block]:
    return [b for b in blocks() if b.lang == "python"]


def test_the_readme_starts_with_the_two_commands_and_has_runnable_blocks() -> None:
    first = blocks()[0]
    assert first.lang == "bash" and first.line == 4
    assert [line.split("#")[0].strip() for line in first.code.splitlines()] == [
        "./dev demo",
        "./dev test",
    ]
    found = python_blocks()
    assert len(found) >= 6
    for block in found:
        assert block.marker in ("", "continue") or block.file, block
        assert "[..." not in block.code and "...]" not in block.code, f"README.md:{block.line}"
        compile(block.code, f"README.md:{block.line}", "exec")


def _commands() -> set[tuple[str, ...]]:
    text = README.read_text()
    table = text[text.index("## Commands") :]
    table = table[: table.index("\n## ")]
    sources = [b.code for b in blocks() if b.lang == "bash"] + [table]
    found: set[tuple[str, ...]] = set()
    for source in sources:
        for m in _COMMAND.finditer(source):
            command = cli.commands.get(m[1])
            assert command is not None, f"README names `conveyor {m[1]}`, which does not exist"
            if isinstance(command, click.Group) and m[2] in command.commands:
                found.add((m[1], m[2]))
            else:
                found.add((m[1],))
    return found


def test_every_conveyor_command_in_the_readme_exists() -> None:
    commands = _commands()
    assert {("demo",), ("up",), ("worker",), ("autoscale",), ("db", "upgrade")} <= commands
    runner = CliRunner()
    for command in sorted(commands):
        done = runner.invoke(cli, [*command, "--help"])
        assert done.exit_code == 0, (command, done.output)


@pytest.fixture(scope="module")
def readme_env(
    redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Path]]:
    """The README's agent modules in a scratch directory, and workers that import them."""
    workdir = tmp_path_factory.mktemp("readme")
    modules = []
    for block in python_blocks():
        if block.file:
            (workdir / block.file).write_text(block.code)
            modules.append(block.file.removesuffix(".py"))
    env = service_env(redis_url, database_url, f"readme{uuid.uuid4().hex[:6]}.")
    env["CONVEYOR_AGENT_MODULES"] = ",".join(modules)
    env["CONVEYOR_DATA_DIR"] = str(workdir / ".conveyor")
    sys.path.insert(0, str(workdir))
    app = make_app(env)
    logs = tmp_path_factory.mktemp("readme-logs")
    workers = [WorkerProcess(app, env, pool, logs, cwd=workdir) for pool in POOLS]
    try:
        for worker in workers:
            worker.wait_ready()
        yield env, workdir
    finally:
        for worker in workers:
            worker.stop()
        sys.path.remove(str(workdir))


def test_every_python_block_runs_against_real_services(
    readme_env: tuple[dict[str, str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, workdir = readme_env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.chdir(workdir)
    namespace: dict[str, Any] = {}
    for block in python_blocks():
        if block.file:
            continue  # imported by the workers, and here through CONVEYOR_AGENT_MODULES
        if block.marker != "continue":
            namespace = {"__name__": f"readme_block_{block.line}"}
        try:
            exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"README.md:{block.line} raised {exc!r}")
    printed = capsys.readouterr().out
    assert "{'count': 4, 'longest': 'agents'}" in printed
    assert "100 of 100 succeeded" in printed
    assert "{'text': 'HELLO THERE', 'words': 2} 6" in printed
