"""Reading deploy/docker/Dockerfile and .dockerignore the way Docker does, enough to check them.

No Docker engine runs on the test machine, so the image is never built here; these helpers let
the tests check the files themselves and replay the builder's install step.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.workers import ROOT

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (CMD ["a", "b"]), else None."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list)
        return [str(p) for p in parsed]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    """ARGs declared before the first FROM, with their defaults."""
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def resolve(self, text: str) -> str:
        """Substitute ${ARG} / $ARG of the global ARGs, as FROM lines see them."""
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each instruction: comments dropped, `\\` continuations
    joined (comment lines inside a continuation are skipped, as Docker does)."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((start, " ".join(p for p in current if p)))
        current = []
    if current:
        lines.append((start, " ".join(current)))
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may come before FROM"
            key, _, default = value.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, value.strip(), number))
    return Dockerfile(args, stages)


def copy_sources(instruction: Instruction) -> tuple[list[str], str, str | None]:
    """(sources, destination, --from stage or None) of a COPY instruction."""
    words = instruction.exec_form() or shlex.split(instruction.value)
    source_stage = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            source_stage = flag.removeprefix("--from=")
    return words[:-1], words[-1], source_stage


@dataclass
class DockerIgnore:
    """.dockerignore rules: the last pattern that matches a path decides; `!` lets it back in.
    A pattern that matches a directory matches everything under it."""

    rules: list[tuple[bool, str]]

    @classmethod
    def read(cls, path: Path = DOCKERIGNORE) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line.removeprefix("!").strip().strip("/")
            rules.append((negate, pattern))
        return cls(rules)

    @staticmethod
    def _matches(pattern: str, path: str) -> bool:
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            prefix = "/".join(parts[:end])
            if _glob(pattern, prefix):
                return True
        return False

    def excluded(self, path: str) -> bool:
        path = path.strip("/")
        verdict = False
        for negate, pattern in self.rules:
            if self._matches(pattern, path):
                verdict = not negate
        return verdict


def _glob(pattern: str, path: str) -> bool:
    """Go's filepath.Match segment by segment; a leading `**/` matches any number of
    directories (none included). The only `**` form the .dockerignore uses."""
    if pattern.startswith("**/"):
        parts = path.split("/")
        return any(_glob(pattern[3:], "/".join(parts[i:])) for i in range(len(parts)))
    pattern_parts, path_parts = pattern.split("/"), path.split("/")
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(s, p) for p, s in zip(pattern_parts, path_parts, strict=True)
    )
