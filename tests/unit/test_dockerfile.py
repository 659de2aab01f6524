"""deploy/docker/Dockerfile, its entrypoint and .dockerignore, checked without a Docker engine.

No engine runs here, so the image is never built (deploy/README.md says what is checked
instead). The builder's install step runs in tests/unit/test_docker_install.py.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.docker import (
    DOCKERFILE,
    Dockerfile,
    DockerIgnore,
    copy_sources,
    parse_dockerfile,
)
from tests.support.workers import ROOT

ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
SCRIPTS = sorted((ROOT / "deploy" / "docker").glob("*.sh"))
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|BASIC_AUTH|PRIVATE", re.I)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile()


def image_tag_problem(image: str) -> str | None:
    """Why `image` is not pinned to a tag (or digest), or None."""
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return f"{image}: no tag"
    if tag == "latest":
        return f"{image}: the latest tag"
    return None


def problems(dockerfile: Dockerfile) -> list[str]:
    """Every way the Dockerfile breaks the image's policy; empty when it keeps it."""
    found: list[str] = []
    if [s.name for s in dockerfile.stages] != ["builder", "runtime"]:
        found.append("stages: want a builder and a runtime stage")
        return found
    for name, default in dockerfile.args.items():
        if SECRET_NAME.search(name):
            found.append(f"ARG {name}: secrets come from the environment at run time")
        if name.endswith("IMAGE") and (why := image_tag_problem(default)):
            found.append(f"ARG {name}: {why}")
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        if why := image_tag_problem(base):
            found.append(f"FROM {why}")
        if not base.startswith("python:3.11") or "slim" not in base:
            found.append(f"FROM {base}: want python:3.11 slim (the lock is made on 3.11)")
        for instruction in stage.all("ENV") + stage.all("ARG"):
            if SECRET_NAME.search(instruction.value):
                found.append(f"line {instruction.line}: a secret in the image")
    runtime = dockerfile.stage("runtime")
    from_builder = [c for c in map(copy_sources, runtime.all("COPY")) if c[2] is not None]
    if from_builder != [(["/opt/conveyor/venv"], "/opt/conveyor/venv", "builder")]:
        found.append("runtime: only the virtualenv may come from the builder")
    users = runtime.all("USER")
    if not users or users[-1].value.split(":")[0] != "10001":
        found.append("USER: the runtime must run as uid 10001")
    elif runtime.all("RUN") and users[-1].line < max(i.line for i in runtime.all("RUN")):
        found.append("USER: a RUN after USER")
    env = " ".join(i.value for i in runtime.all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "CONVEYOR_DATA_DIR=/data", "HOME=/tmp"):
        if setting not in env:
            found.append(f"ENV: {setting} missing")
    if "chown 10001:10001 /data" not in " ".join(i.value for i in runtime.all("RUN")):
        found.append("RUN: /data must belong to uid 10001")
    if runtime.all("VOLUME"):
        found.append("VOLUME: gives every container an anonymous volume; mount named ones")
    healthchecks = runtime.all("HEALTHCHECK")
    if len(healthchecks) != 1:
        found.append("HEALTHCHECK: want exactly one")
    else:
        check = healthchecks[0].value
        command = check[check.index("CMD") + 3 :].strip() if "CMD" in check else ""
        if command != '["conveyor-entrypoint", "health"]':
            found.append(f"HEALTHCHECK: runs {command!r}, not the role's probe")
        if not re.search(r"--timeout=\d+s", check):
            found.append("HEALTHCHECK: no --timeout")
    entrypoints = runtime.all("ENTRYPOINT")
    if not entrypoints or entrypoints[-1].exec_form() != ["conveyor-entrypoint"]:
        found.append('ENTRYPOINT: want the exec form ["conveyor-entrypoint"]')
    labels = " ".join(i.value for i in runtime.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created"):
        if f"org.opencontainers.image.{key}=" not in labels:
            found.append(f"LABEL: org.opencontainers.image.{key} missing")
    return found


def test_the_dockerfile_keeps_the_image_policy(dockerfile: Dockerfile) -> None:
    """Multi-stage, slim and pinned bases, non-root, read-only friendly, a HEALTHCHECK that
    runs the role's probe, OCI labels, no secrets."""
    assert problems(dockerfile) == []


def test_image_tags() -> None:
    assert image_tag_problem("python:3.11-slim-bookworm") is None
    assert image_tag_problem("python:latest") == "python:latest: the latest tag"
    assert image_tag_problem("python") == "python: no tag"
    assert image_tag_problem("localhost:5000/python") == "localhost:5000/python: no tag"
    assert image_tag_problem("python@sha256:" + "0" * 64) is None


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python:latest", "latest"),
        ("ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python", "no tag"),
        ("FROM ${PYTHON_IMAGE} AS builder", "FROM python:3.12 AS builder", "want python:3.11"),
        ("USER 10001:10001", "USER root", "uid 10001"),
        ("USER 10001:10001", "USER 10001:10001\nRUN true", "RUN after USER"),
        ("HEALTHCHECK --interval", "# HEALTHCHECK --interval", "exactly one"),
        ('CMD ["conveyor-entrypoint", "health"]', 'CMD ["true"]', "not the role's probe"),
        ('ENTRYPOINT ["conveyor-entrypoint"]', "ENTRYPOINT conveyor-entrypoint", "exec form"),
        ("PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=", "PYTHONDONTWRITEBYTECODE"),
        ("WORKDIR /srv/conveyor", "VOLUME /data\nWORKDIR /srv/conveyor", "anonymous volume"),
        ("HOME=/tmp", "HOME=/tmp CONVEYOR_FLOWER_BASIC_AUTH=a:b", "a secret in the image"),
        ("COPY --from=builder", "COPY --from=builder /src /src\nCOPY --from=builder", "only"),
        ("org.opencontainers.image.version=", "org.opencontainers.image.vers=", "version"),
    ],
)
def test_each_policy_check_can_fail(tmp_path: Path, old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text, old
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    found = problems(parse_dockerfile(broken))
    assert any(problem in p for p in found), found


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignore = DockerIgnore.read()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        ".env.local",
        ".conveyor/embedded.json",
        "tests/unit/test_dockerfile.py",
        "benchmarks/README.md",
        "conveyor/__pycache__/app.cpython-311.pyc",
        "conveyor/cli/__pycache__",
        "conveyor.egg-info/PKG-INFO",
        "build/lib/conveyor/app.py",
    ):
        assert ignore.excluded(path), f"{path} would be sent to the Docker build"


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile: Dockerfile) -> None:
    ignore = DockerIgnore.read()
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY"):
            sources, _, from_stage = copy_sources(instruction)
            if from_stage is not None:
                continue
            for source in sources:
                path = ROOT / source
                assert path.exists(), f"line {instruction.line}: COPY {source}: no such file"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                wanted = [f for f in files if "__pycache__" not in f.parts]
                assert wanted
                for file in wanted:
                    relative = file.relative_to(ROOT).as_posix()
                    assert not ignore.excluded(relative), (
                        f"line {instruction.line}: COPY {source} needs {relative}, "
                        "which .dockerignore excludes"
                    )


def test_the_ignore_rules_behave_like_dockers() -> None:
    """The matcher itself: last match wins, `!` lets back in, a directory covers its files."""
    ignore = DockerIgnore([(False, "*"), (True, "conveyor"), (False, "**/__pycache__")])
    assert ignore.excluded("README.md")
    assert not ignore.excluded("conveyor/cli/health.py")
    assert ignore.excluded("conveyor/cli/__pycache__/health.cpython-311.pyc")
    assert ignore.excluded("tests/conveyor")  # `conveyor` is a top-level pattern only


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_executable_posix_sh(script: Path) -> None:
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
    assert script.read_text().startswith("#!/bin/sh\n"), "python:slim has no bash by design"
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (`./dev test` installs Debian's shellcheck)")
    done = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# The entrypoint, run for real with a stand-in `conveyor` that prints its arguments.


@pytest.fixture
def entrypoint_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "conveyor"
    fake.write_text('#!/bin/sh\necho "conveyor $*"\n[ "${FAKE_FAIL:-}" != "$1 $2" ]\n')
    fake.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp)}


def entrypoint(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env={**env, **extra},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("worker", "vector"), {}, "conveyor worker --pool vector"),
        (
            ("worker", "memory", "--concurrency", "2"),
            {},
            "conveyor worker --pool memory --concurrency 2",
        ),
        (("worker",), {"CONVEYOR_POOL": "analytics"}, "conveyor worker --pool analytics"),
        (("worker", "--loglevel", "DEBUG"), {}, "conveyor worker --pool default --loglevel DEBUG"),
        (
            (),
            {"CONVEYOR_ROLE": "worker", "CONVEYOR_POOL": "vector"},
            "conveyor worker --pool vector",
        ),
        (("beat",), {}, "conveyor beat"),
        (("exporter",), {}, "conveyor exporter --host 0.0.0.0 --port 9810"),
        (
            ("exporter",),
            {"CONVEYOR_EXPORTER_PORT": "9900"},
            "conveyor exporter --host 0.0.0.0 --port 9900",
        ),
        (("flower",), {}, "conveyor flower --address 0.0.0.0 --port 5555"),
        (
            ("flower",),
            {"CONVEYOR_FLOWER_URL_PREFIX": "/flower/"},
            "conveyor flower --address 0.0.0.0 --port 5555 --url-prefix /flower/",
        ),
        (("migrate",), {}, "conveyor db upgrade"),
        (("client", "status", "--json"), {}, "conveyor status --json"),
        (("client",), {}, "conveyor --help"),
        ((), {}, "conveyor --help"),
        (("conveyor", "demo", "--runs", "10"), {}, "conveyor demo --runs 10"),
    ],
)
def test_each_role_runs_its_command(
    entrypoint_env: dict[str, str], args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    done = entrypoint(entrypoint_env, *args, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


@pytest.mark.parametrize(
    ("started", "env", "expected"),
    [
        (("worker", "vector"), {}, ["conveyor health worker --pool vector"]),
        (
            ("exporter",),
            {"CONVEYOR_EXPORTER_PORT": "9900"},
            ["conveyor health exporter --url http://127.0.0.1:9900/healthz"],
        ),
        (
            ("flower",),
            {"CONVEYOR_FLOWER_URL_PREFIX": "/flower/"},
            ["conveyor health flower --url http://127.0.0.1:5555/flower/healthcheck"],
        ),
        (("beat",), {}, ["conveyor health broker", "conveyor health database"]),
        (("migrate",), {}, ["conveyor health database"]),
        (("client", "status"), {}, ["conveyor health broker"]),
    ],
)
def test_health_checks_the_role_the_entrypoint_started(
    entrypoint_env: dict[str, str],
    started: tuple[str, ...],
    env: dict[str, str],
    expected: list[str],
) -> None:
    assert entrypoint(entrypoint_env, *started, **env).returncode == 0
    done = entrypoint(entrypoint_env, "health", **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


def test_health_falls_back_to_conveyor_role_without_a_role_file(
    entrypoint_env: dict[str, str],
) -> None:
    done = entrypoint(entrypoint_env, "health", CONVEYOR_ROLE="worker", CONVEYOR_POOL="memory")
    assert done.stdout.strip() == "conveyor health worker --pool memory"
    done = entrypoint(entrypoint_env, "health")
    assert done.stdout.strip() == "conveyor health broker"
    done = entrypoint(entrypoint_env, "health", CONVEYOR_ROLE="nonsense")
    assert done.returncode == 1
    assert "unknown role 'nonsense'" in done.stderr


def test_health_fails_when_the_probe_fails(entrypoint_env: dict[str, str]) -> None:
    entrypoint(entrypoint_env, "beat")
    done = entrypoint(entrypoint_env, "health", FAKE_FAIL="health broker")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["conveyor health broker"]  # database not even tried


def test_an_unwritable_tmp_does_not_stop_a_role(entrypoint_env: dict[str, str]) -> None:
    """With no writable /tmp the role still starts; health then goes by CONVEYOR_ROLE."""
    missing = str(Path(entrypoint_env["TMPDIR"]) / "missing")
    done = entrypoint(entrypoint_env, "worker", "vector", TMPDIR=missing)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "conveyor worker --pool vector"
    assert done.stderr == ""
