"""The image's builder stage, replayed here: its COPY and RUN steps in a fresh virtualenv.

SLOW (about half a minute with a warm pip cache, a few minutes cold; marked `slow`): it
installs every pinned dependency. No Docker engine runs here, so instead of building the
image this test copies what the builder stage copies and runs the builder's own RUN lines
(deploy/docker/install.sh) with the paths moved under tmp_path. A requirements.txt that is
incomplete, conflicts with pyproject.toml, or names a release that does not exist fails here.

One difference from `docker build`: the builder sets PIP_NO_CACHE_DIR=1 (a smaller layer);
this test leaves pip's cache on, so a second run does not download everything again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docker import Stage, copy_sources, parse_dockerfile
from tests.support.workers import ROOT

REQUIREMENTS = ROOT / "deploy" / "docker" / "requirements.txt"
INSTALL = ROOT / "deploy" / "docker" / "install.sh"
VENV = "/opt/conveyor/venv"
NOT_REPLAYED = {"PIP_NO_CACHE_DIR"}


def stage_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.value):
            key, _, value = word.partition("=")
            if key not in NOT_REPLAYED:
                env[key] = value
    return env


def replay_builder(tmp_path: Path) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """Run the builder stage's COPY and RUN steps under tmp_path; returns the venv."""
    stage = parse_dockerfile().stage("builder")
    (workdir,) = [i.value for i in stage.all("WORKDIR")]
    root, venv = tmp_path / "src", tmp_path / "venv"
    root.mkdir()
    env = {**os.environ, **stage_env(stage), "PYTHON": sys.executable}
    steps = []
    for instruction in stage.instructions:
        if instruction.keyword == "COPY":
            sources, destination, _ = copy_sources(instruction)
            target = root / destination
            for source in sources:
                path = ROOT / source
                into = target / path.name if destination.endswith("/") else target
                if path.is_dir():
                    shutil.copytree(
                        path, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, into)
        elif instruction.keyword == "RUN":
            words = [
                str(venv) if w == VENV else str(root) if w == workdir else w
                for w in shlex.split(instruction.value)
            ]
            done = subprocess.run(
                words, cwd=root, env=env, capture_output=True, text=True, timeout=540
            )
            steps.append(done)
            assert done.returncode == 0, (
                f"RUN {instruction.value} (line {instruction.line}) failed:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    return venv, steps


def pins(text: str) -> set[str]:
    return {
        line.strip().lower().replace("_", "-")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_builder_stage_installs_conveyor_from_the_pins(tmp_path: Path) -> None:
    venv, steps = replay_builder(tmp_path)
    assert len(steps) == 2, "the builder has two RUN steps: pins, then conveyor"
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude", "conveyor"],
        capture_output=True,
        text=True,
        check=True,
    )
    # Exactly the pins: nothing resolved on the side, nothing left out.
    assert pins(freeze.stdout) == pins(REQUIREMENTS.read_text())
    for role_help in (["--help"], ["health", "worker", "--help"], ["worker", "--help"]):
        done = subprocess.run(
            [str(venv / "bin" / "conveyor"), *role_help], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    # The project installed as a wheel (not editable), so the image holds no source tree.
    location = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import conveyor; print(conveyor.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert location.startswith(str(venv)), location


EXTRA_PACKAGES = {
    "redis": "redis",
    "hiredis": "hiredis",
    "binary": "psycopg-binary",
    "pool": "psycopg-pool",
}
"""The package each extra used in pyproject.toml's dependencies brings in."""


def test_every_runtime_dependency_is_pinned() -> None:
    """Fast: each dependency of pyproject.toml has an exact pin (the slow test checks the
    whole set with pip check)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line}: not an exact pin"
            pinned[name.lower().replace("_", "-")] = version
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is not in {REQUIREMENTS.name}: run deploy/docker/lock.sh"
        assert requirement.specifier.contains(pinned[name]), (
            f"{name}=={pinned[name]} does not satisfy {dependency}: run deploy/docker/lock.sh"
        )
        for extra in requirement.extras:
            assert EXTRA_PACKAGES.get(extra) in pinned, (
                f"{dependency}: extra {extra!r} pulls {EXTRA_PACKAGES.get(extra, '?')}, which is "
                f"not pinned in {REQUIREMENTS.name}: run deploy/docker/lock.sh"
            )


def install(step: str, venv: Path, source: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), step, str(venv), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )


def test_a_pin_that_does_not_exist_fails_the_install(tmp_path: Path) -> None:
    """Offline (no index, nothing to find): the release cannot be found, the step fails."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("click==0.0.0\n")
    empty = tmp_path / "wheels"
    empty.mkdir()
    done = install(
        "requirements", tmp_path / "venv", requirements, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty)
    )
    assert done.returncode != 0
    assert "click==0.0.0" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dependency_missing_from_the_pins_fails_pip_check(tmp_path: Path) -> None:
    """conveyor installed with --no-deps over an incomplete set: pip check refuses it."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing pinned\n")
    venv = tmp_path / "venv"
    assert install("requirements", venv, requirements).returncode == 0
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "conveyor", source / "conveyor", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = install("project", venv, source)
    assert done.returncode != 0
    assert "requires celery, which is not installed" in done.stdout + done.stderr


def test_install_sh_refuses_bad_arguments(tmp_path: Path) -> None:
    assert install("everything", tmp_path / "venv", tmp_path).returncode == 2
    done = install("project", tmp_path / "no-venv", ROOT)
    assert done.returncode == 2 and "requirements step first" in done.stderr
    done = install("requirements", tmp_path / "venv", tmp_path / "missing.txt")
    assert done.returncode == 2 and "no requirements file" in done.stderr


def test_the_image_pins_the_signing_extra() -> None:
    """The image supports message signing: the `signing` extra's packages are pinned too."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pinned = pins(REQUIREMENTS.read_text())
    for dependency in extras["signing"]:
        requirement = Requirement(dependency)
        found = [p for p in pinned if p.startswith(f"{requirement.name.lower()}==")]
        assert found, f"{requirement.name} is not in {REQUIREMENTS.name}: run deploy/docker/lock.sh"
        assert requirement.specifier.contains(found[0].partition("==")[2])
