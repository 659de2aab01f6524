"""docker-compose.yml: `docker-compose config` validates it, and policy checks on its YAML.

No Docker engine runs here, so the stack is never started; deploy/README.md says what is
checked instead. `docker-compose config` needs no engine: it interpolates the .env values,
merges the anchors and validates the file against the Compose schema.
"""

from __future__ import annotations

import copy
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.config import Settings
from conveyor.pools import BUILTIN_POOLS
from tests.support.docker import COMPOSE_FILE
from tests.support.workers import ROOT

ENV_EXAMPLE = ROOT / ".env.example"
CONVEYOR_IMAGE = "${CONVEYOR_IMAGE:-conveyor:0.1.0}"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|_PASS$|SECRET|TOKEN|API_?KEY|BASIC_AUTH|AUTH$", re.I)
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")
REFERENCE = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")
HEALTHY_CONDITIONS = {"service_healthy", "service_completed_successfully"}
ROLES = {"worker", "beat", "exporter", "flower", "migrate", "client"}


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def env_example() -> tuple[dict[str, str], set[str]]:
    """(assignments, names mentioned in commented-out assignments) of .env.example."""
    values: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.match(r"^(\w+)=(.*)$", line):
            values[match.group(1)] = match.group(2)
        elif match := re.match(r"^#\s*(\w+)=", line):
            commented.add(match.group(1))
    return values, commented


def is_conveyor(service: dict[str, Any]) -> bool:
    return service.get("image") == CONVEYOR_IMAGE


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return env


def secret_value_problem(key: str, value: Any) -> str | None:
    """Why an environment value holds a secret literally, or None."""
    if value is None:
        return None  # passed on from .env or the shell, if set there
    text = str(value)
    if SECRET_NAME.search(key):
        if re.fullmatch(r"\$\{\w+(:\?[^}]*|:-|)\}", text):
            return None
        return f"{key}: a secret must be ${{VAR:?...}} (or ${{VAR:-}}), not {text!r}"
    for match in re.finditer(r"://([^:/@\s]*):(\$\{[^}]*\}|[^@\s]*)@", text):
        if not re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", match.group(2)):
            return f"{key}: the password in {text!r} is not a ${{VAR:?...}} reference"
    return None


def policy_problems(compose: dict[str, Any]) -> list[str]:
    """Every way the compose file breaks the deployment's policy; empty when it keeps it."""
    found: list[str] = []
    services: dict[str, dict[str, Any]] = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    used_volumes: set[str] = set()
    for name, service in services.items():
        where = f"service {name}"
        health = service.get("healthcheck")
        if not health or not health.get("test") or health.get("disable"):
            found.append(f"{where}: no healthcheck")
        depends = service.get("depends_on") or {}
        if not isinstance(depends, dict):
            found.append(f"{where}: depends_on must map each service to a condition")
            depends = {}
        for target, spec in depends.items():
            condition = (spec or {}).get("condition")
            if condition not in HEALTHY_CONDITIONS:
                found.append(f"{where}: depends_on {target} with condition {condition!r}")
            if target not in services:
                found.append(f"{where}: depends_on unknown service {target}")
            elif condition == "service_completed_successfully" and (
                services[target].get("restart", "no") != "no"
            ):
                found.append(f"{where}: {target} is one-shot but restarts")
            if (services.get(target) or {}).get("profiles") and not service.get("profiles"):
                found.append(f"{where}: depends on {target}, which only runs in a profile")
        for volume in service.get("volumes") or []:
            source, _, rest = str(volume).partition(":")
            if not rest:
                found.append(f"{where}: anonymous volume {volume}")
            elif source.startswith((".", "/")):
                if not rest.endswith(":ro"):
                    found.append(f"{where}: bind mount {volume} must be read-only")
                elif not (ROOT / source).exists():
                    found.append(f"{where}: bind mount of a missing {source}")
            elif source not in named_volumes:
                found.append(f"{where}: volume {source} is not declared")
            else:
                used_volumes.add(source)
        for port in service.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                found.append(f"{where}: port {port} is published beyond 127.0.0.1")
        for key, value in environment(service).items():
            if why := secret_value_problem(key, value):
                found.append(f"{where}: {why}")
        if is_conveyor(service):
            found += conveyor_problems(name, service)
        elif service.get("read_only") is False:
            found.append(f"{where}: read_only false")
    for unused in sorted(named_volumes - used_volumes):
        found.append(f"volume {unused} is declared but unused")
    found += secret_default_problems(compose)
    return found


def conveyor_problems(name: str, service: dict[str, Any]) -> list[str]:
    found: list[str] = []
    where = f"service {name}"
    if str(service.get("user", "")).split(":")[0] != "10001":
        found.append(f"{where}: must run as uid 10001")
    if service.get("read_only") is not True:
        found.append(f"{where}: must have read_only: true")
    if "/tmp" not in (service.get("tmpfs") or []):
        found.append(f"{where}: needs a tmpfs at /tmp")
    if (service.get("healthcheck") or {}).get("test") != ["CMD", "conveyor-entrypoint", "health"]:
        found.append(f"{where}: healthcheck must run `conveyor-entrypoint health`")
    command = service.get("command") or []
    env = environment(service)
    role = env.get("CONVEYOR_ROLE")
    if role not in ROLES or not command or command[0] != role:
        found.append(f"{where}: command {command} and CONVEYOR_ROLE {role!r} disagree")
    if role == "worker":
        if command[1:2] != [env.get("CONVEYOR_POOL")]:
            found.append(f"{where}: command {command} and CONVEYOR_POOL disagree")
        grace = str(service.get("stop_grace_period", "10s"))
        seconds = int(grace.removesuffix("s")) if re.fullmatch(r"\d+s", grace) else 0
        if seconds < Settings().time_limit + 30:
            found.append(f"{where}: stop_grace_period {grace} is below the hard time limit + 30s")
    return found


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def secret_default_problems(compose: dict[str, Any]) -> list[str]:
    """A secret variable with a non-empty default would ship a known password."""
    return [
        f"${{{m.group(1)}:-{m.group(2)}}}: a secret with a default value"
        for text in strings(compose)
        for m in re.finditer(r"\$\{(\w+):?-([^}]+)\}", text)
        if SECRET_NAME.search(m.group(1))
    ]


def test_the_compose_file_keeps_the_policy(compose: dict[str, Any]) -> None:
    """Healthchecks everywhere, depends_on with conditions, non-root read-only conveyor
    containers, named volumes, no secret values, host ports on loopback only."""
    assert policy_problems(compose) == []


def test_every_role_and_pool_has_its_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {f"worker-{pool}" for pool in BUILTIN_POOLS} <= set(services)
    for pool in BUILTIN_POOLS:
        worker = services[f"worker-{pool}"]
        assert (worker["command"], environment(worker)["CONVEYOR_POOL"]) == (["worker", pool], pool)
    for infra in ("postgres", "redis", "rabbitmq", "prometheus", "grafana"):
        assert infra in services
    roles = {environment(s)["CONVEYOR_ROLE"] for s in services.values() if is_conveyor(s)}
    assert roles == ROLES
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services["client"]["profiles"] == ["tools"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    for name, service in services.items():
        if is_conveyor(service) and name not in ("migrate", "flower"):
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }, name


def test_flower_requires_its_basic_auth(compose: dict[str, Any]) -> None:
    value = environment(compose["services"]["flower"])["CONVEYOR_FLOWER_BASIC_AUTH"]
    assert REQUIRED.fullmatch(value), value


def test_prometheus_and_grafana_find_what_they_load(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus_config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "conveyor"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    exporter = services["exporter"]
    assert host in exporter["networks"]["default"]["aliases"]
    assert f"127.0.0.1:{port}:{port}" in exporter["ports"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    url = datasources["datasources"][0]["url"]
    assert url == "http://prometheus:9090" and "prometheus" in services
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/conveyor.yaml").read_text()
    )
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards_path}:ro" in services["grafana"]["volumes"]
    password = environment(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"]
    assert REQUIRED.fullmatch(password)


def test_env_example_lists_every_variable_and_no_secret() -> None:
    text = COMPOSE_FILE.read_text()
    values, commented = env_example()
    referenced = set(REFERENCE.findall(text))
    missing = referenced - set(values) - commented
    assert not missing, f"not in .env.example: {sorted(missing)}"
    for name in REQUIRED.findall(text):
        assert name in values, f"{name} is required: give it a line in .env.example"
    for name, value in values.items():
        if SECRET_NAME.search(name) or name.endswith("_URL"):
            assert value == "", f".env.example: {name} has a value; secrets stay empty there"


def test_git_ignores_the_filled_in_env_file() -> None:
    """.env.example promises that a filled-in .env is never committed."""
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", ".env"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode == 128:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    assert done.returncode == 0, ".env is not in .gitignore"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def mutate(compose: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    *parents, last = path.split(".")
    node = broken
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("services.redis.healthcheck", KeyError, "service redis: no healthcheck"),
        ("services.beat.depends_on", ["migrate"], "map each service to a condition"),
        (
            "services.worker-vector.depends_on.migrate",
            {"condition": "service_started"},
            "condition 'service_started'",
        ),
        ("services.exporter.read_only", False, "read_only: true"),
        ("services.worker-memory.user", "0:0", "uid 10001"),
        ("services.worker-memory.tmpfs", [], "tmpfs at /tmp"),
        ("services.worker-vector.volumes", ["/data"], "anonymous volume"),
        ("services.worker-vector.volumes", ["scratch:/data"], "not declared"),
        ("services.grafana.volumes", ["./deploy/grafana/dashboards:/x"], "read-only"),
        ("services.flower.ports", ["5555:5555"], "beyond 127.0.0.1"),
        (
            "services.postgres.environment.POSTGRES_PASSWORD",
            "hunter2hunter2",
            "a secret must be",
        ),
        (
            "services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD",
            "${GRAFANA_ADMIN_PASSWORD:-admin}",
            "a secret",
        ),
        (
            "services.beat.environment.CONVEYOR_DATABASE_URL",
            "postgresql://conveyor:s3cret@postgres:5432/conveyor",
            "the password in",
        ),
        ("services.worker-default.stop_grace_period", "10s", "hard time limit"),
        ("services.worker-default.command", ["worker", "memory"], "CONVEYOR_POOL disagree"),
        ("services.beat.command", ["exporter"], "disagree"),
        ("services.beat.depends_on.rabbitmq", {"condition": "service_healthy"}, "profile"),
    ],
)
def test_each_policy_check_can_fail(
    compose: dict[str, Any], path: str, value: Any, problem: str
) -> None:
    found = policy_problems(mutate(compose, path, value))
    assert any(problem in p for p in found), found


# `docker-compose config`: the real validator.


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip(
            "docker-compose is not installed; `./dev test` installs Debian's docker-compose "
            "package (`apt-get install --no-install-recommends docker-compose`)"
        )
    return found


def write_env(tmp_path: Path, **overrides: str | None) -> Path:
    values: dict[str, str | None] = {
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "REDIS_PASSWORD": secrets.token_hex(12),
        "CONVEYOR_FLOWER_BASIC_AUTH": f"admin:{secrets.token_hex(8)}",
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(12),
        "RABBITMQ_PASSWORD": secrets.token_hex(12),
    }
    values["CONVEYOR_BROKER_URL"] = f"redis://:{values['REDIS_PASSWORD']}@redis:6379/0"
    values.update(overrides)
    path = tmp_path / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v is not None))
    return path


def compose_config(env_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    args = [docker_compose(), "--env-file", str(env_file), "--file", str(COMPOSE_FILE)]
    args += ["--project-directory", str(ROOT)]
    for profile in profiles:
        args += ["--profile", profile]
    return subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_docker_compose_config_validates_the_stack(tmp_path: Path) -> None:
    env_file = write_env(tmp_path)
    done = compose_config(env_file, "rabbitmq", "tools")
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    services = rendered["services"]
    assert set(services) == set(load_compose()["services"])
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    beat = services["beat"]["environment"]
    assert beat["CONVEYOR_BROKER_URL"] == values["CONVEYOR_BROKER_URL"]
    assert beat["CONVEYOR_DATABASE_URL"] == (
        f"postgresql://conveyor:{values['POSTGRES_PASSWORD']}@postgres:5432/conveyor"
    )
    assert (
        services["flower"]["environment"]["CONVEYOR_FLOWER_BASIC_AUTH"]
        == (values["CONVEYOR_FLOWER_BASIC_AUTH"])
    )
    # The anchors merged as intended: each worker is a conveyor container of its pool.
    for pool in BUILTIN_POOLS:
        worker = services[f"worker-{pool}"]
        assert worker["read_only"] is True and worker["user"] == "10001:10001"
        assert worker["environment"]["CONVEYOR_POOL"] == pool
    # Optional settings not set in .env are not passed on as empty strings.
    assert beat["CONVEYOR_EXPORTER_TOKEN"] is None


def test_docker_compose_config_without_profiles(tmp_path: Path) -> None:
    done = compose_config(write_env(tmp_path, RABBITMQ_PASSWORD=None))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "variable",
    [
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "CONVEYOR_BROKER_URL",
        "CONVEYOR_FLOWER_BASIC_AUTH",
        "GRAFANA_ADMIN_PASSWORD",
    ],
)
def test_docker_compose_config_refuses_a_missing_secret(tmp_path: Path, variable: str) -> None:
    done = compose_config(write_env(tmp_path, **{variable: None}))
    assert done.returncode != 0
    assert f"set {variable}" in done.stderr


def test_docker_compose_config_refuses_an_invalid_file(tmp_path: Path) -> None:
    """The validator can fail: a misspelt key is refused by the Compose schema."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("read_only: true", "readonly: true", 1))
    args = [docker_compose(), "--env-file", str(write_env(tmp_path)), "--file", str(broken)]
    args += ["--project-directory", str(ROOT)]
    done = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode != 0
    assert "readonly" in done.stderr
