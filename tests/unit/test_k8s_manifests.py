"""The Kubernetes manifests under deploy/k8s/, rendered and checked without a cluster.

`kubectl kustomize` (or `kustomize build`) renders overlays/dev and overlays/prod. Every
rendered object is validated: built-in kinds against the Kubernetes schemas bundled in the
`kubernetes-validate` package (strict: unknown fields fail), KEDA and Istio kinds against
their CRDs vendored under deploy/k8s/schemas/. Then policy checks run on the render:
hardened containers with requests and limits, pinned images, one Deployment + ScaledObject +
PDB per pool, a grace period that covers the hard time limit, a single beat, no mounted
tokens, default-deny networking with only the documented flows, no secret values, and (prod)
Istio's STRICT mTLS with per-role AuthorizationPolicies. Every checker is a function that
returns its findings, and a negative test breaks a rendered object to show it reports them.

Without kubectl or kustomize on PATH the render-based tests are skipped, saying so; `./dev
test` should install Debian's kubectl package. The tests that read the files only still run.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
import yaml

from conveyor.config import Settings, load_settings
from conveyor.pools import BUILTIN_POOLS
from tests.support.k8s import (
    CRD_FILES,
    K8S_DIR,
    KUSTOMIZE_GROUP,
    Doc,
    inline_credentials,
    kustomize_build,
    schema_errors,
)

BASE = K8S_DIR / "base"
OVERLAYS = ("dev", "prod")
NAMESPACE = "conveyor"
IMAGE = "ghcr.io/conveyor/conveyor"
UID = 10001
GRACE_MARGIN = 30
"""Seconds on top of the hard time limit: closing connections and sending the last events."""
MIN_KUBERNETES = "1.30"
"""The oldest Kubernetes the manifests support (the preStop `sleep` action is on from 1.30)."""
PARENT_MEMORY = 256 * 2**20
"""Headroom for a prefork worker's parent process over its children's recycle threshold."""
ROLES = ("worker", "beat", "exporter", "flower", "migrate")
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
SECRET_ENV = {
    "CONVEYOR_BROKER_URL",
    "CONVEYOR_DATABASE_URL",
    "CONVEYOR_RESULT_BACKEND",
    "CONVEYOR_CACHE_URL",
    "CONVEYOR_FLOWER_BASIC_AUTH",
    "CONVEYOR_EXPORTER_TOKEN",
    "CONVEYOR_RABBITMQ_MANAGEMENT_URL",
}
"""Settings that hold credentials: only ever from a Secret."""
READ_WRITE_ROOT: dict[tuple[str, str], str] = {}
"""(workload, container) allowed a writable root filesystem, with the reason. None needs one:
conveyor writes only to /tmp and /data, both emptyDirs."""
EXPECTED_INGRESS = {
    "worker": set(),
    "beat": set(),
    "migrate": set(),
    "exporter": {("monitoring", 9810), ("keda", 9810)},
    "flower": {("ingress-nginx", 5555)},
}
"""Who may open a connection to each role: (source namespace, port)."""
EXPECTED_CALLERS = {
    "worker": set(),
    "beat": set(),
    "migrate": set(),
    "exporter": {"monitoring", "keda"},
    "flower": {"ingress-nginx"},
}
"""Istio: the source namespaces each role's AuthorizationPolicies allow."""
RELEASE_TAG = re.compile(r"v?\d+\.\d+\.\d+([-+.][0-9A-Za-z.-]+)?")


# -- rendering ---------------------------------------------------------------------------


@functools.cache
def _render(overlay: str) -> tuple[Doc, ...]:
    return tuple(kustomize_build(K8S_DIR / "overlays" / overlay))


def render(overlay: str) -> list[Doc]:
    """The objects the overlay renders to; a fresh copy, so a test may break them."""
    return copy.deepcopy(list(_render(overlay)))


def name_of(doc: Doc) -> str:
    return str((doc.get("metadata") or {}).get("name"))


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if name_of(d) == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name} in the render"
    return found[0]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d.get("kind") in POD_KINDS]


def pod_template(doc: Doc) -> Doc:
    """The workload's pod template itself (not a copy: negative tests change it)."""
    template: Doc = (
        doc["spec"]["jobTemplate"]["spec"]["template"]
        if doc["kind"] == "CronJob"
        else doc["spec"]["template"]
    )
    return template


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = pod_template(doc)["spec"]
    return spec


def pod_labels(doc: Doc) -> dict[str, str]:
    return dict((pod_template(doc).get("metadata") or {}).get("labels") or {})


def all_containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def role_of(doc: Doc) -> str:
    return pod_labels(doc).get("app.kubernetes.io/component", "?")


def workers(docs: list[Doc]) -> list[Doc]:
    return [d for d in of_kind(docs, "Deployment") if role_of(d) == "worker"]


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def settings_configmap(docs: list[Doc]) -> Doc:
    found = [d for d in of_kind(docs, "ConfigMap") if name_of(d).startswith("conveyor-settings")]
    assert len(found) == 1, f"{len(found)} conveyor-settings ConfigMaps"
    return found[0]


def settings_from(docs: list[Doc]) -> Settings:
    """conveyor's Settings as a container sees them: the ConfigMap's data as its environment."""
    data = settings_configmap(docs).get("data") or {}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with mock.patch.dict(os.environ, {**clean, **data}, clear=True):
        return load_settings()


def container_env(docs: list[Doc], container: Doc) -> dict[str, str | None]:
    """The container's environment: envFrom ConfigMaps, then env (None: from a Secret)."""
    env: dict[str, str | None] = {}
    configmaps = {name_of(c): c.get("data") or {} for c in of_kind(docs, "ConfigMap")}
    for source in container.get("envFrom") or []:
        if ref := source.get("configMapRef"):
            env.update(configmaps.get(ref["name"], {}))
    for var in container.get("env") or []:
        env[var["name"]] = var.get("value")
    return env


_UNITS = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (250m, 1, 512Mi, 6Gi) as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _UNITS, f"not a quantity: {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


# -- schema validation -------------------------------------------------------------------


def kubernetes_validate() -> ModuleType:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is in the dev extra: pip install -e .[dev]",
    )


def validation_errors(doc: Doc, version: str) -> list[str]:
    """Why doc is not a valid object: built-in kinds against Kubernetes `version`'s schemas
    (strict), KEDA and Istio kinds against the vendored CRDs."""
    where = f"{doc.get('kind')}/{name_of(doc)}"
    if doc.get("kind") in CRD_FILES:
        return [f"{where}: {e}" for e in schema_errors(doc)]
    kv = kubernetes_validate()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except kv.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


def kubernetes_versions() -> tuple[str, ...]:
    """The oldest supported Kubernetes and the newest that kubernetes-validate bundles."""
    newest = kubernetes_validate().latest_version()
    return (MIN_KUBERNETES, ".".join(newest.split(".")[:2]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_namespaced_objects(overlay: str) -> None:
    docs = render(overlay)
    assert docs, f"{overlay} renders nothing"
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            assert meta["name"] == NAMESPACE
        else:
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']}/{meta['name']}"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "conveyor", name_of(doc)
    keys = [(d["kind"], name_of(d)) for d in docs]
    assert len(keys) == len(set(keys)), "duplicate objects"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(overlay: str) -> None:
    docs = render(overlay)
    errors = [e for v in kubernetes_versions() for d in docs for e in validation_errors(d, v)]
    assert errors == []
    kinds = {d["kind"] for d in docs}
    assert {"ScaledObject", "TriggerAuthentication"} <= kinds
    if overlay == "prod":
        assert {"PeerAuthentication", "AuthorizationPolicy"} <= kinds


# -- policy: containers ------------------------------------------------------------------


def container_problems(doc: Doc) -> list[str]:
    """Hardening and resources of every (init) container of a workload."""
    problems = []
    pod = pod_spec(doc)
    pod_sc = pod.get("securityContext") or {}
    workload = f"{doc['kind']}/{name_of(doc)}"
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{workload}: {flag}")
    for c in all_containers(doc):
        where = f"{workload} container {c['name']}"
        sc = c.get("securityContext") or {}

        def effective(key: str, sc: Doc = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        resources = c.get("resources") or {}
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(bound) or {}):
                    problems.append(f"{where}: no {bound}.{resource}")
        for resource, low in (resources.get("requests") or {}).items():
            high = (resources.get("limits") or {}).get(resource)
            if high is not None and quantity(low) > quantity(high):
                problems.append(f"{where}: requests.{resource} {low} above limits {high}")
        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if effective("runAsUser") != UID:
            problems.append(f"{where}: runAsUser is {effective('runAsUser')}, not {UID}")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("readOnlyRootFilesystem") is not True and (
            (name_of(doc), c["name"]) not in READ_WRITE_ROOT
        ):
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []) or capabilities.get("add"):
            problems.append(f"{where}: capabilities are not drop ALL, add none")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened_and_bounded(overlay: str) -> None:
    docs = render(overlay)
    assert {role_of(d) for d in workloads(docs)} == set(ROLES)
    assert [p for d in workloads(docs) for p in container_problems(d)] == []


def image_problems(doc: Doc, *, pinned: bool) -> list[str]:
    """Every image is conveyor's, tagged and not `latest`; pinned: a release tag or digest."""
    problems = []
    for c in all_containers(doc):
        image, where = c["image"], f"{doc['kind']}/{name_of(doc)} container {c['name']}"
        repository, _, digest = image.partition("@")
        name, tag = repository, ""
        if ":" in repository.rsplit("/", 1)[-1]:  # a colon before the last / is a port
            name, tag = repository.rsplit(":", 1)
        if name != IMAGE:
            problems.append(f"{where}: image {image} is not {IMAGE}")
        if digest:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                problems.append(f"{where}: {digest} is not a sha256 digest")
            continue
        if not tag:
            problems.append(f"{where}: {image} has no tag (that is latest)")
        elif tag == "latest":
            problems.append(f"{where}: {image} is latest")
        elif pinned and not RELEASE_TAG.fullmatch(tag):
            problems.append(f"{where}: {image} is not pinned to a release or digest")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_tagged_and_prod_is_pinned(overlay: str) -> None:
    docs = render(overlay)
    pinned = overlay == "prod"
    assert [p for d in workloads(docs) for p in image_problems(d, pinned=pinned)] == []


# -- policy: pools -----------------------------------------------------------------------


def pool_problems(docs: list[Doc], pool: str) -> list[str]:
    """The pool has a worker Deployment with probes, exactly one ScaledObject targeting it
    with the pool's bounds, exactly one PDB selecting it (and no other pool), and a memory
    limit above what its children may use before they are recycled."""
    name = f"conveyor-worker-{pool}"
    deployments = [d for d in of_kind(docs, "Deployment") if name_of(d) == name]
    if len(deployments) != 1:
        return [f"pool {pool}: {len(deployments)} Deployments {name}"]
    deployment = deployments[0]
    problems = []
    settings = settings_from(docs).pool(pool)
    if "replicas" in deployment["spec"]:
        problems.append(f"{name}: sets replicas, which KEDA owns (an apply would reset it)")
    labels = pod_labels(deployment)
    if labels.get("conveyor/pool") != pool or role_of(deployment) != "worker":
        problems.append(f"{name}: pod labels {labels} do not name the pool and role")
    container = next((c for c in all_containers(deployment) if c["name"] == "worker"), None)
    if container is None:
        return [*problems, f"{name}: no container named worker"]
    if container.get("args") != ["worker", pool]:
        problems.append(f"{name}: args {container.get('args')} do not run the {pool} worker")
    probe_command = ["conveyor", "health", "worker", "--pool", pool]
    for probe in ("livenessProbe", "readinessProbe"):
        if (container.get(probe) or {}).get("exec", {}).get("command") != probe_command:
            problems.append(f"{name}: {probe} is not `{' '.join(probe_command)}`")
    if "startupProbe" in container and container["startupProbe"]["exec"]["command"] != (
        probe_command
    ):
        problems.append(f"{name}: startupProbe is not `{' '.join(probe_command)}`")
    scalers = [
        so
        for so in of_kind(docs, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == name
        and so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    ]
    if len(scalers) != 1:
        problems.append(f"{name}: {len(scalers)} ScaledObjects target it")
    else:
        spec = scalers[0]["spec"]
        bounds = (spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100))
        if bounds != (settings.min_replicas, settings.max_replicas):
            problems.append(
                f"{name}: ScaledObject bounds {bounds} differ from CONVEYOR_POOLS "
                f"{(settings.min_replicas, settings.max_replicas)}"
            )
    budgets = [
        pdb
        for pdb in of_kind(docs, "PodDisruptionBudget")
        if selects(pdb["spec"]["selector"], labels)
    ]
    if len(budgets) != 1:
        problems.append(f"{name}: {len(budgets)} PodDisruptionBudgets select it")
    for pdb in budgets:
        if not {"maxUnavailable", "minAvailable"} & set(pdb["spec"]):
            problems.append(f"{name}: PDB {name_of(pdb)} sets no budget")
        others = [
            name_of(w)
            for w in workers(docs)
            if w is not deployment and selects(pdb["spec"]["selector"], pod_labels(w))
        ]
        if others:
            problems.append(f"{name}: PDB {name_of(pdb)} also selects {others}")
    if settings.max_memory_per_child_kb:
        limit = (container.get("resources") or {}).get("limits", {}).get("memory")
        need = settings.concurrency * settings.max_memory_per_child_kb * 1024 + PARENT_MEMORY
        if limit is None or quantity(limit) < need:
            problems.append(
                f"{name}: memory limit {limit} is below {need / 2**20:.0f}Mi (concurrency x "
                "max_memory_per_child_kb + parent): the kernel kills before Celery recycles"
            )
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pool_has_a_deployment_scaled_object_and_pdb(overlay: str) -> None:
    docs = render(overlay)
    pools = set(settings_from(docs).pools)
    assert pools == set(BUILTIN_POOLS)
    deployed = {name_of(d).removeprefix("conveyor-worker-") for d in workers(docs)}
    assert deployed == pools
    assert [p for pool in sorted(pools) for p in pool_problems(docs, pool)] == []


def grace_problems(docs: list[Doc]) -> list[str]:
    """Each worker's terminationGracePeriodSeconds covers its hard time limit plus margin."""
    problems = []
    default = Settings.model_fields["time_limit"].default
    for deployment in workers(docs):
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        for c in pod_spec(deployment)["containers"]:
            limit = float(container_env(docs, c).get("CONVEYOR_TIME_LIMIT") or default)
            if grace < limit + GRACE_MARGIN:
                problems.append(
                    f"{name_of(deployment)}: terminationGracePeriodSeconds {grace} < "
                    f"time limit {limit:g} + {GRACE_MARGIN}"
                )
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_grace_period_covers_the_hard_time_limit(overlay: str) -> None:
    docs = render(overlay)
    assert grace_problems(docs) == []
    assert settings_from(docs).visibility_timeout > settings_from(docs).time_limit


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_configmap_loads_into_conveyor_settings(overlay: str) -> None:
    docs = render(overlay)
    settings = settings_from(docs)
    assert str(settings.data_dir) == "/data"
    assert settings.broker_url is None and settings.database_url is None  # from Secrets
    for deployment in workers(docs):
        mounts = {m["mountPath"] for c in all_containers(deployment) for m in c["volumeMounts"]}
        assert {"/tmp", "/data"} <= mounts, name_of(deployment)


def beat_problems(docs: list[Doc]) -> list[str]:
    beats = [d for d in workloads(docs) if role_of(d) == "beat"]
    if len(beats) != 1:
        return [f"{len(beats)} beat workloads, not 1"]
    beat, problems = beats[0], []
    if beat["kind"] != "Deployment" or beat["spec"].get("replicas") != 1:
        problems.append(f"beat: {beat['kind']} with replicas {beat['spec'].get('replicas')}")
    if (beat["spec"].get("strategy") or {}).get("type") != "Recreate":
        problems.append("beat: strategy is not Recreate (a rollout would run two)")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_beat_is_a_single_recreated_replica(overlay: str) -> None:
    assert beat_problems(render(overlay)) == []


def test_migration_job_upgrades_once_and_cleans_up() -> None:
    job = one(render("prod"), "Job", "conveyor-migrate")
    assert job["spec"]["backoffLimit"] <= 6
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert pod_spec(job)["containers"][0]["args"] == ["migrate"]


# -- policy: service accounts, secrets ---------------------------------------------------


def service_account_problems(docs: list[Doc]) -> list[str]:
    problems = []
    accounts = {name_of(sa): sa for sa in of_kind(docs, "ServiceAccount")}
    for name, sa in accounts.items():
        if sa.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {name} mounts its token")
    used: dict[str, set[str]] = {}
    for doc in workloads(docs):
        pod, where = pod_spec(doc), f"{doc['kind']}/{name_of(doc)}"
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: the pod mounts a service account token")
        account = pod.get("serviceAccountName", "default")
        if account not in accounts:
            problems.append(f"{where}: service account {account} is not in the render")
        used.setdefault(account, set()).add(role_of(doc))
    for account, roles in used.items():
        if len(roles) > 1:
            problems.append(f"service account {account} is shared by roles {sorted(roles)}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_role_has_its_own_tokenless_service_account(overlay: str) -> None:
    docs = render(overlay)
    assert service_account_problems(docs) == []
    assert len(of_kind(docs, "ServiceAccount")) == len(ROLES)


@functools.cache
def example_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from base/secret.example.yaml (the documented shapes)."""
    with (BASE / "secret.example.yaml").open(encoding="utf-8") as f:
        return {
            d["metadata"]["name"]: set(d.get("stringData") or {}) | set(d.get("data") or {})
            for d in yaml.safe_load_all(f)
            if d
        }


def secret_refs(docs: list[Doc]) -> Iterator[tuple[str, str, str]]:
    """(where, Secret name, key) of every Secret the render refers to."""
    for doc in workloads(docs):
        for c in all_containers(doc):
            for var in c.get("env") or []:
                if ref := (var.get("valueFrom") or {}).get("secretKeyRef"):
                    yield f"{name_of(doc)}/{c['name']} {var['name']}", ref["name"], ref["key"]
            for source in c.get("envFrom") or []:
                if ref := source.get("secretRef"):
                    yield f"{name_of(doc)}/{c['name']} envFrom", ref["name"], "*"
    for ta in of_kind(docs, "TriggerAuthentication"):
        for ref in ta["spec"].get("secretTargetRef") or []:
            yield f"TriggerAuthentication/{name_of(ta)}", ref["name"], ref["key"]
    for ingress in of_kind(docs, "Ingress"):
        annotations = ingress["metadata"].get("annotations") or {}
        if secret := annotations.get("nginx.ingress.kubernetes.io/auth-secret"):
            yield f"Ingress/{name_of(ingress)}", secret.rsplit("/", 1)[-1], "auth"


def secret_problems(docs: list[Doc]) -> list[str]:
    """No Secret (or any credential) in the render; credentials come from Secret references
    whose names and keys secret.example.yaml documents."""
    problems = [f"Secret/{name_of(d)} is in the render" for d in of_kind(docs, "Secret")]
    for doc in docs:
        problems += [f"{doc['kind']}/{name_of(doc)}: {p}" for p in inline_credentials(doc)]
    for configmap in of_kind(docs, "ConfigMap"):
        for key in SECRET_ENV & set(configmap.get("data") or {}):
            problems.append(f"ConfigMap/{name_of(configmap)} holds {key}")
    for doc in workloads(docs):
        for c in all_containers(doc):
            for var in c.get("env") or []:
                if var["name"] in SECRET_ENV and "secretKeyRef" not in (var.get("valueFrom") or {}):
                    problems.append(
                        f"{name_of(doc)}/{c['name']}: {var['name']} is not from a Secret"
                    )
    documented = example_secrets()
    for where, secret, key in secret_refs(docs):
        if secret not in documented or (key != "*" and key not in documented[secret]):
            problems.append(f"{where}: Secret {secret} key {key} is not in secret.example.yaml")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_only_documented_references(overlay: str) -> None:
    docs = render(overlay)
    assert secret_problems(docs) == []
    wanted = {
        "exporter": {"CONVEYOR_EXPORTER_TOKEN"},
        "flower": {"CONVEYOR_FLOWER_BASIC_AUTH"},
    }
    for doc in workloads(docs):
        names = {v["name"] for c in all_containers(doc) for v in c.get("env") or []}
        need = {"CONVEYOR_BROKER_URL", "CONVEYOR_DATABASE_URL"} | wanted.get(role_of(doc), set())
        assert need <= names, f"{name_of(doc)} lacks {need - names}"


# -- policy: network ---------------------------------------------------------------------


def _namespace_of(peer: Doc) -> str:
    """The namespace a NetworkPolicy peer names, `*` for any, `ipBlock` for an address block."""
    if "ipBlock" in peer:
        return "ipBlock"
    if "namespaceSelector" not in peer:
        return NAMESPACE
    labels = (peer["namespaceSelector"] or {}).get("matchLabels") or {}
    return str(labels.get("kubernetes.io/metadata.name", "*"))


def policies_for(docs: list[Doc], labels: dict[str, str], direction: str) -> list[Doc]:
    return [
        np
        for np in of_kind(docs, "NetworkPolicy")
        if direction in np["spec"].get("policyTypes", ["Ingress"])
        and selects(np["spec"]["podSelector"], labels)
    ]


def ingress_allowed(docs: list[Doc], labels: dict[str, str]) -> set[tuple[str, int | str]]:
    """(source namespace, port) pairs the NetworkPolicies let reach pods with labels."""
    allowed: set[tuple[str, int | str]] = set()
    for np in policies_for(docs, labels, "Ingress"):
        for rule in np["spec"].get("ingress") or []:
            sources = [_namespace_of(p) for p in rule.get("from") or [{"namespaceSelector": {}}]]
            ports = [p.get("port", "*") for p in rule.get("ports") or [{}]]
            allowed |= {(s, p) for s in sources for p in ports}
    return allowed


def egress_ports(docs: list[Doc], labels: dict[str, str]) -> set[int | str]:
    return {
        p.get("port", "*")
        for np in policies_for(docs, labels, "Egress")
        for rule in np["spec"].get("egress") or []
        for p in rule.get("ports") or [{}]
    }


def network_problems(docs: list[Doc]) -> list[str]:
    problems = []
    deny = [
        np
        for np in of_kind(docs, "NetworkPolicy")
        if np["spec"]["podSelector"] == {}
        and set(np["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
        and not np["spec"].get("ingress")
        and not np["spec"].get("egress")
    ]
    if not deny:
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress)")
    for doc in workloads(docs):
        role, labels = role_of(doc), pod_labels(doc)
        allowed = ingress_allowed(docs, labels)
        if allowed != EXPECTED_INGRESS.get(role, set()):
            problems.append(f"{name_of(doc)}: ingress allowed {sorted(allowed, key=str)}")
        ports = egress_ports(docs, labels)
        if "*" in ports:
            problems.append(f"{name_of(doc)}: egress to any port")
        for need in (53, 5432):
            if need not in ports:
                problems.append(f"{name_of(doc)}: no egress to port {need}")
        if not {6379, 5672} & ports:
            problems.append(f"{name_of(doc)}: no egress to a broker port")
    worker_ports = {frozenset(egress_ports(docs, pod_labels(w))) for w in workers(docs)}
    if len(worker_ports) > 1:
        problems.append("worker pools differ in egress (vector gets nothing extra)")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_the_flows(overlay: str) -> None:
    docs = render(overlay)
    assert network_problems(docs) == []
    dns = [
        np
        for np in of_kind(docs, "NetworkPolicy")
        if np["spec"]["podSelector"] == {}
        for rule in np["spec"].get("egress") or []
        if {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}
        and [_namespace_of(p) for p in rule["to"]] == ["kube-system"]
    ]
    assert len(dns) == 1


# -- services, ingress, scaling wiring ---------------------------------------------------


def test_exporter_service_is_scraped_and_reached_by_keda() -> None:
    docs = render("prod")
    service = one(docs, "Service", "conveyor-exporter")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9810"
    assert annotations["prometheus.io/path"] == "/metrics"
    exporter = one(docs, "Deployment", "conveyor-exporter")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(exporter))
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9810
    container_ports = {p["name"]: p["containerPort"] for p in all_containers(exporter)[0]["ports"]}
    assert container_ports[port["targetPort"]] == 9810
    url = f"http://conveyor-exporter.{NAMESPACE}.svc:9810/scale/"
    for so in of_kind(docs, "ScaledObject"):
        (metrics_api,) = [t for t in so["spec"]["triggers"] if t["type"] == "metrics-api"]
        assert metrics_api["metadata"]["url"].startswith(url)
    lifecycle = all_containers(exporter)[0]["lifecycle"]
    assert lifecycle["preStop"]["sleep"]["seconds"] > 0


def test_flower_ingress_has_nginx_basic_auth_and_flower_its_own() -> None:
    docs = render("prod")
    ingress = one(docs, "Ingress", "conveyor-flower")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic"
    assert annotations["nginx.ingress.kubernetes.io/auth-secret"] in example_secrets()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    flower = one(docs, "Deployment", "conveyor-flower")
    env = {v["name"]: v for v in all_containers(flower)[0]["env"]}
    assert env["CONVEYOR_FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"] in (
        example_secrets()
    )


def affinity_problems(doc: Doc) -> list[str]:
    """A worker prefers nodes without another pod of its own pool."""
    terms = ((pod_spec(doc).get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    required = ((pod_spec(doc).get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []
    own = pod_labels(doc)
    by_host = [
        t
        for t in [*(t["podAffinityTerm"] for t in terms), *required]
        if t["topologyKey"] == "kubernetes.io/hostname" and selects(t["labelSelector"], own)
    ]
    if not by_host:
        return [f"{name_of(doc)}: no pod anti-affinity by hostname within its pool"]
    others = [
        t for t in by_host if t["labelSelector"].get("matchLabels", {}).get("conveyor/pool") is None
    ]
    return [f"{name_of(doc)}: anti-affinity spans all pools"] if others else []


def test_prod_spreads_workers_and_dev_does_not() -> None:
    prod, dev = render("prod"), render("dev")
    assert [p for w in workers(prod) for p in affinity_problems(w)] == []
    assert all("affinity" not in pod_spec(w) for w in workers(dev))


def test_dev_is_small_and_scales_between_one_and_two() -> None:
    dev, prod = render("dev"), render("prod")
    for so in of_kind(dev, "ScaledObject"):
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 2)
        assert so["spec"]["fallback"]["replicas"] <= 2
    for deployment in workers(dev):
        limit = quantity(all_containers(deployment)[0]["resources"]["limits"]["memory"])
        bigger = one(prod, "Deployment", name_of(deployment))
        assert limit < quantity(all_containers(bigger)[0]["resources"]["limits"]["memory"])
    assert all(
        c["image"] == f"{IMAGE}:dev" and c["imagePullPolicy"] == "Always"
        for d in workloads(dev)
        for c in all_containers(d)
    )


def test_vector_gets_more_memory_than_any_other_pool() -> None:
    for overlay in OVERLAYS:
        docs = render(overlay)
        limits = {
            name_of(w): quantity(all_containers(w)[0]["resources"]["limits"]["memory"])
            for w in workers(docs)
        }
        vector = limits.pop("conveyor-worker-vector")
        assert vector > max(limits.values()), overlay


# -- Istio -------------------------------------------------------------------------------


def istio_problems(docs: list[Doc]) -> list[str]:
    """STRICT mTLS namespace-wide, and per-role AuthorizationPolicies allowing only the
    expected callers (ALLOW without rules allows nothing)."""
    problems = []
    peer = of_kind(docs, "PeerAuthentication")
    if [(p["spec"].get("selector"), p["spec"]["mtls"]["mode"]) for p in peer] != [(None, "STRICT")]:
        problems.append("no single namespace-wide PeerAuthentication with mtls STRICT")
    policies = of_kind(docs, "AuthorizationPolicy")
    for p in policies:
        if p["spec"].get("action", "ALLOW") != "ALLOW":
            problems.append(f"AuthorizationPolicy/{name_of(p)}: action {p['spec']['action']}")
    for doc in workloads(docs):
        labels, role = pod_labels(doc), role_of(doc)
        mine = [
            p
            for p in policies
            if "selector" in p["spec"] and selects(p["spec"]["selector"], labels)
        ]
        if not mine:
            problems.append(f"{name_of(doc)}: no AuthorizationPolicy of its own")
        callers = set()
        for p in policies:
            if "selector" in p["spec"] and not selects(p["spec"]["selector"], labels):
                continue
            for rule in p["spec"].get("rules") or []:
                sources = [f.get("source") or {} for f in rule.get("from") or [{}]]
                for source in sources:
                    callers |= set(source.get("namespaces") or ["*"])
        if callers != EXPECTED_CALLERS[role]:
            problems.append(f"{name_of(doc)}: Istio lets {sorted(callers)} call it")
    return problems


def test_prod_has_istio_strict_mtls_and_per_role_policies() -> None:
    docs = render("prod")
    assert istio_problems(docs) == []
    namespace = one(docs, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"
    job = one(docs, "Job", "conveyor-migrate")
    assert pod_labels(job)["sidecar.istio.io/inject"] == "false"
    for deployment in of_kind(docs, "Deployment"):
        annotations = pod_template(deployment)["metadata"]["annotations"]
        assert "EXIT_ON_ZERO_ACTIVE_CONNECTIONS" in annotations["proxy.istio.io/config"]
    istiod = [
        np
        for np in of_kind(docs, "NetworkPolicy")
        for rule in np["spec"].get("egress") or []
        if [_namespace_of(p) for p in rule["to"]] == ["istio-system"]
    ]
    assert len(istiod) == 1


def test_dev_has_no_istio() -> None:
    kinds = {d["kind"] for d in render("dev")}
    assert not {"PeerAuthentication", "AuthorizationPolicy"} & kinds


# -- files, kustomizations, optional components ------------------------------------------


def kustomizations() -> Iterator[tuple[Path, Doc]]:
    for path in sorted(K8S_DIR.rglob("kustomization.yaml")):
        yield path, yaml.safe_load(path.read_text(encoding="utf-8"))


def test_base_lists_every_manifest_but_the_secret_example() -> None:
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(base["resources"]) == files
    assert base["namespace"] == NAMESPACE
    assert base["configMapGenerator"][0]["envs"] == ["settings.env"]
    for path, k in kustomizations():
        listed = [*(k.get("resources") or []), *(k.get("components") or [])]
        assert not any("secret.example" in str(r) for r in listed), path
        assert str(k.get("apiVersion", "")).startswith(KUSTOMIZE_GROUP), path


def test_overlays_wire_base_keda_and_istio() -> None:
    for overlay in OVERLAYS:
        k = yaml.safe_load((K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text())
        assert {"../../base", "../../keda"} <= set(k["resources"]), overlay
        assert k["namespace"] == NAMESPACE
        components = set(k.get("components") or [])
        assert ("../../components/istio" in components) == (overlay == "prod")


def test_secret_example_has_only_placeholders() -> None:
    text = (BASE / "secret.example.yaml").read_text(encoding="utf-8")
    assert text.startswith("# EXAMPLE ONLY")
    for secret in yaml.safe_load_all(text):
        for key, value in (secret.get("stringData") or {}).items():
            assert "REPLACE-ME" in value, f"{secret['metadata']['name']}.{key}"


def test_optional_components_render_and_wire_up(tmp_path: Path) -> None:
    """servicemonitor and tls-ca, on top of the base, in an overlay of their own."""
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, tmp_path)],  # kustomize refuses absolute paths
        "components": [
            os.path.relpath(K8S_DIR / "components" / c, tmp_path)
            for c in ("servicemonitor", "tls-ca")
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")
    docs = kustomize_build(tmp_path)
    monitor = one(docs, "ServiceMonitor", "conveyor-exporter")
    service = one(docs, "Service", "conveyor-exporter")
    assert "annotations" not in service["metadata"], "scraped twice: annotations and monitor"
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "conveyor"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] in example_secrets()[credentials["name"]]
    for doc in workloads(docs):
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        assert volumes["conveyor-ca"]["configMap"]["name"] == "conveyor-ca"
        mounts = {m["mountPath"]: m for m in all_containers(doc)[0]["volumeMounts"]}
        assert mounts["/etc/conveyor/ca"]["readOnly"] is True, name_of(doc)
    version = kubernetes_versions()[0]
    others = [d for d in docs if d["kind"] != "ServiceMonitor"]  # its CRD is not vendored
    assert [e for d in others for e in validation_errors(d, version)] == []


# -- the checks can fail -----------------------------------------------------------------


def _worker(docs: list[Doc], pool: str = "vector") -> Doc:
    return one(docs, "Deployment", f"conveyor-worker-{pool}")


def _container(doc: Doc) -> Doc:
    return all_containers(doc)[0]


def _set(mapping: Doc, key: str, value: Any) -> None:
    mapping[key] = value


Mutation = Callable[[list[Doc]], None]
Checker = Callable[[list[Doc]], list[str]]


def _all_containers(docs: list[Doc]) -> list[str]:
    return [p for d in workloads(docs) for p in container_problems(d)]


def _all_pools(docs: list[Doc]) -> list[str]:
    return [p for pool in BUILTIN_POOLS for p in pool_problems(docs, pool)]


def _all_images(docs: list[Doc]) -> list[str]:
    return [p for d in workloads(docs) for p in image_problems(d, pinned=True)]


def _add_init_container(docs: list[Doc]) -> None:
    worker = _worker(docs)
    init = copy.deepcopy(_container(worker))
    init["name"] = "warm-up"
    del init["resources"]["limits"]
    pod_spec(worker).setdefault("initContainers", []).append(init)


def _drop_pdb(docs: list[Doc]) -> None:
    docs.remove(one(docs, "PodDisruptionBudget", "conveyor-worker-memory"))


def _drop_scaled_object(docs: list[Doc]) -> None:
    docs.remove(one(docs, "ScaledObject", "conveyor-worker-analytics"))


def _drop_default_deny(docs: list[Doc]) -> None:
    docs.remove(one(docs, "NetworkPolicy", "conveyor-default-deny"))


def _open_workers(docs: list[Doc]) -> None:
    policy = copy.deepcopy(one(docs, "NetworkPolicy", "conveyor-flower-ingress"))
    policy["metadata"]["name"] = "oops"
    policy["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/component": "worker"}}
    docs.append(policy)


def _add_secret(docs: list[Doc]) -> None:
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "conveyor-broker"},
            "stringData": {"url": "redis://:hunter2@redis:6379/0"},
        }
    )


def _inline_database_url(docs: list[Doc]) -> None:
    env = _container(_worker(docs))["env"]
    env[1] = {"name": "CONVEYOR_DATABASE_URL", "value": "postgresql://db/conveyor"}


def _loose_istio(docs: list[Doc]) -> None:
    policy = one(docs, "AuthorizationPolicy", "conveyor-worker")
    policy["spec"]["rules"] = [{"from": [{"source": {"namespaces": ["default"]}}]}]


NEGATIVE_CASES: list[tuple[str, Mutation, Checker, str]] = [
    (
        "no-limits",
        lambda d: _container(_worker(d))["resources"].pop("limits"),
        _all_containers,
        "no limits.memory",
    ),
    (
        "no-requests",
        lambda d: _container(_worker(d))["resources"].pop("requests"),
        _all_containers,
        "no requests.cpu",
    ),
    (
        "request-above-limit",
        lambda d: _container(_worker(d))["resources"]["requests"].update(memory="64Gi"),
        _all_containers,
        "above limits",
    ),
    ("init-container-unbounded", _add_init_container, _all_containers, "warm-up: no limits.cpu"),
    (
        "root",
        lambda d: pod_spec(_worker(d))["securityContext"].pop("runAsNonRoot"),
        _all_containers,
        "runAsNonRoot is not true",
    ),
    (
        "writable-root",
        lambda d: _container(_worker(d))["securityContext"].update(readOnlyRootFilesystem=False),
        _all_containers,
        "readOnlyRootFilesystem",
    ),
    (
        "escalation",
        lambda d: _container(_worker(d))["securityContext"].pop("allowPrivilegeEscalation"),
        _all_containers,
        "allowPrivilegeEscalation",
    ),
    (
        "capability",
        lambda d: _container(_worker(d))["securityContext"]["capabilities"].update(add=["NET_RAW"]),
        _all_containers,
        "capabilities",
    ),
    (
        "job-unhardened",
        lambda d: _container(one(d, "Job", "conveyor-migrate")).pop("securityContext"),
        _all_containers,
        "Job/conveyor-migrate container migrate: allowPrivilegeEscalation",
    ),
    (
        "latest",
        lambda d: _container(_worker(d)).update(image=f"{IMAGE}:latest"),
        _all_images,
        "is latest",
    ),
    ("untagged", lambda d: _container(_worker(d)).update(image=IMAGE), _all_images, "no tag"),
    (
        "moving-tag-in-prod",
        lambda d: _container(_worker(d)).update(image=f"{IMAGE}:main"),
        _all_images,
        "not pinned",
    ),
    (
        "other-image",
        lambda d: _container(_worker(d)).update(image="docker.io/library/python:3.11.7"),
        _all_images,
        "is not ghcr.io/conveyor/conveyor",
    ),
    ("no-pdb", _drop_pdb, _all_pools, "0 PodDisruptionBudgets select it"),
    ("no-scaled-object", _drop_scaled_object, _all_pools, "0 ScaledObjects target it"),
    (
        "no-liveness",
        lambda d: _container(_worker(d)).pop("livenessProbe"),
        _all_pools,
        "livenessProbe is not",
    ),
    (
        "probe-other-pool",
        lambda d: _set(
            _container(_worker(d))["readinessProbe"]["exec"],
            "command",
            ["conveyor", "health", "worker", "--pool", "default"],
        ),
        _all_pools,
        "readinessProbe is not",
    ),
    (
        "replicas-set",
        lambda d: _worker(d)["spec"].update(replicas=3),
        _all_pools,
        "sets replicas",
    ),
    (
        "bounds-drift",
        lambda d: one(d, "ScaledObject", "conveyor-worker-vector")["spec"].update(
            maxReplicaCount=9
        ),
        _all_pools,
        "differ from CONVEYOR_POOLS",
    ),
    (
        "vector-too-small",
        lambda d: _container(_worker(d))["resources"]["limits"].update(memory="2Gi"),
        _all_pools,
        "the kernel kills before Celery recycles",
    ),
    (
        "short-grace",
        lambda d: pod_spec(_worker(d)).update(terminationGracePeriodSeconds=300),
        grace_problems,
        "terminationGracePeriodSeconds 300 < time limit 300 + 30",
    ),
    (
        "longer-time-limit",
        lambda d: _container(_worker(d))["env"].append(
            {"name": "CONVEYOR_TIME_LIMIT", "value": "600"}
        ),
        grace_problems,
        "time limit 600",
    ),
    (
        "two-beats",
        lambda d: one(d, "Deployment", "conveyor-beat")["spec"].update(replicas=2),
        beat_problems,
        "replicas 2",
    ),
    (
        "beat-rolling",
        lambda d: one(d, "Deployment", "conveyor-beat")["spec"].update(
            strategy={"type": "RollingUpdate"}
        ),
        beat_problems,
        "not Recreate",
    ),
    (
        "sa-token",
        lambda d: one(d, "ServiceAccount", "conveyor-flower").pop("automountServiceAccountToken"),
        service_account_problems,
        "ServiceAccount conveyor-flower mounts its token",
    ),
    (
        "pod-token",
        lambda d: pod_spec(_worker(d)).update(automountServiceAccountToken=True),
        service_account_problems,
        "the pod mounts a service account token",
    ),
    (
        "shared-sa",
        lambda d: pod_spec(one(d, "Deployment", "conveyor-beat")).update(
            serviceAccountName="conveyor-worker"
        ),
        service_account_problems,
        "shared by roles",
    ),
    ("no-default-deny", _drop_default_deny, network_problems, "no default-deny"),
    ("open-workers", _open_workers, network_problems, "conveyor-worker-vector: ingress allowed"),
    (
        "no-database-egress",
        lambda d: d.remove(one(d, "NetworkPolicy", "conveyor-egress-database")),
        network_problems,
        "no egress to port 5432",
    ),
    ("secret-object", _add_secret, secret_problems, "Secret/conveyor-broker is in the render"),
    ("inline-url", _inline_database_url, secret_problems, "is not from a Secret"),
    (
        "undocumented-secret",
        lambda d: _container(_worker(d))["env"][0]["valueFrom"]["secretKeyRef"].update(
            name="my-redis"
        ),
        secret_problems,
        "Secret my-redis key url is not in secret.example.yaml",
    ),
    (
        "credential-in-configmap",
        lambda d: settings_configmap(d)["data"].update(CONVEYOR_CACHE_URL="redis://u:pw@r:6379"),
        secret_problems,
        "holds CONVEYOR_CACHE_URL",
    ),
    (
        "permissive-mtls",
        lambda d: one(d, "PeerAuthentication", "default")["spec"]["mtls"].update(mode="PERMISSIVE"),
        istio_problems,
        "mtls STRICT",
    ),
    ("worker-callable", _loose_istio, istio_problems, "Istio lets ['default'] call it"),
]


@pytest.mark.parametrize(
    ("mutate", "check", "expected"),
    [case[1:] for case in NEGATIVE_CASES],
    ids=[case[0] for case in NEGATIVE_CASES],
)
def test_policy_checks_report_a_broken_render(
    mutate: Mutation, check: Checker, expected: str
) -> None:
    docs = render("prod")
    assert check(docs) == [], "the unbroken render must pass first"
    mutate(docs)
    problems = check(docs)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("kind", "name", "mutate", "expected"),
    [
        (
            "Deployment",
            "conveyor-worker-vector",
            lambda d: _container(d).pop("name"),
            "'name' is a required property",
        ),
        (
            "Deployment",
            "conveyor-worker-vector",
            lambda d: pod_spec(d).update(terminationGracePeriod=330),
            "terminationGracePeriod",
        ),
        (
            "PodDisruptionBudget",
            "conveyor-worker-vector",
            lambda d: d["spec"].update(maxUnavailable=[1]),
            "maxUnavailable",
        ),
        ("NetworkPolicy", "conveyor-default-deny", lambda d: d.update(spec=[]), "spec"),
        (
            "AuthorizationPolicy",
            "conveyor-exporter",
            lambda d: d["spec"].update(action="PERMIT"),
            "spec.action",
        ),
        (
            "AuthorizationPolicy",
            "conveyor-exporter",
            lambda d: d["spec"].update(targetRefs=[{"kind": "Service", "name": "x"}]),
            "only one of targetRefs or selector",
        ),
        (
            "PeerAuthentication",
            "default",
            lambda d: d["spec"]["mtls"].update(mode="STRICTER"),
            "spec.mtls.mode",
        ),
    ],
    ids=[
        "no-container-name",
        "misspelt-field",
        "wrong-type",
        "spec-not-object",
        "bad-istio-action",
        "istio-cel-rule",
        "bad-mtls-mode",
    ],
)
def test_schema_validation_rejects_broken_objects(
    kind: str, name: str, mutate: Callable[[Doc], None], expected: str
) -> None:
    doc = one(render("prod"), kind, name)
    assert validation_errors(doc, MIN_KUBERNETES) == []
    mutate(doc)
    errors = validation_errors(doc, MIN_KUBERNETES)
    assert any(expected in e for e in errors), errors
