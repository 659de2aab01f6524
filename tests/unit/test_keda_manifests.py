"""The KEDA manifests in deploy/k8s/keda/, checked against KEDA's own CRD schemas.

Every YAML document there is validated against the openAPIV3Schema of the CRD (served
version) copied under deploy/k8s/schemas/, made strict so a misspelt field fails instead of
being dropped by the API server. On top of the schema: one ScaledObject per built-in pool,
triggers that name that pool, and no secret value anywhere. The negative tests prove each
check can fail. No cluster is needed; a kustomize build runs when kustomize or kubectl is on
PATH.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.pools import BUILTIN_POOLS
from tests.support.k8s import (
    CRD_FILES,
    K8S_DIR,
    KUSTOMIZE_GROUP,
    SCHEMA_DIR,
    Doc,
    inline_credentials,
    kustomize_build,
    schema_errors,
)

KEDA_DIR = K8S_DIR / "keda"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
NAMESPACE = "conveyor"
SENSITIVE_KEY = re.compile(
    r"(password|passwd|secret|token|api[-_]?key|credential|private|cert|^key$|^ca$)", re.I
)


# -- loading -----------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in KEDA_DIR.rglob("*") if p.suffix in (".yaml", ".yml"))


@functools.cache
def _documents() -> tuple[tuple[str, Doc], ...]:
    found = []
    for path in yaml_files():
        with path.open(encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    found.append((str(path.relative_to(KEDA_DIR)), doc))
    return tuple(found)


def manifests() -> list[tuple[str, Doc]]:
    """Every Kubernetes object in the folder (the kustomization itself excluded)."""
    return [
        (f, d)
        for f, d in _documents()
        if not str(d.get("apiVersion", "")).startswith(KUSTOMIZE_GROUP)
    ]


def of_kind(kind: str) -> list[Doc]:
    return [d for _, d in manifests() if d.get("kind") == kind]


def manifest_id(item: tuple[str, Doc]) -> str:
    file, doc = item
    return f"{file}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# -- schema validation (tests/support/k8s.py) -------------------------------------------


@pytest.mark.parametrize("item", manifests(), ids=manifest_id)
def test_manifest_is_valid_against_keda_crd(item: tuple[str, Doc]) -> None:
    _, doc = item
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    assert schema_errors(doc) == []


def test_folder_holds_scaled_objects_and_trigger_authentications() -> None:
    kinds = {d.get("kind") for _, d in manifests()}
    assert kinds == KEDA_KINDS, kinds
    names = [(d["kind"], d["metadata"]["name"]) for _, d in manifests()]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


def test_schema_files_are_the_recorded_upstream_copies() -> None:
    source = (SCHEMA_DIR / "SOURCE.md").read_text(encoding="utf-8")
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", source, re.M)
    )
    assert set(recorded) == set(CRD_FILES.values())
    for name, digest in recorded.items():
        assert hashlib.sha256((SCHEMA_DIR / name).read_bytes()).hexdigest() == digest, name
        assert f"| {name} |" in source, f"{name} has no provenance row in SOURCE.md"


# -- pools and triggers ------------------------------------------------------------------


def trigger(scaled_object: Doc, kind: str) -> Doc:
    found = [t for t in scaled_object["spec"]["triggers"] if t["type"] == kind]
    assert len(found) == 1, f"{scaled_object['metadata']['name']}: {len(found)} {kind} triggers"
    return found[0]


def pool_problems(scaled_object: Doc, pool: str) -> list[str]:
    """What is wrong with scaled_object as the autoscaler of pool; empty when nothing is."""
    problems = []
    spec = scaled_object["spec"]
    if spec["scaleTargetRef"]["name"] != f"conveyor-worker-{pool}":
        problems.append(f"targets {spec['scaleTargetRef']['name']}")
    if spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment":
        problems.append("does not target a Deployment")
    triggers = spec["triggers"]
    if triggers[0]["type"] != "prometheus":
        problems.append("the Prometheus trigger is not first (overlays patch triggers/0)")
    prometheus, metrics_api = (
        trigger(scaled_object, "prometheus"),
        trigger(scaled_object, "metrics-api"),
    )
    query = prometheus["metadata"]["query"]
    if query != f'max(conveyor_pool_desired_replicas{{pool="{pool}"}})':
        problems.append(f"query {query!r} does not read pool {pool}'s desired replicas")
    if prometheus["metadata"].get("ignoreNullValues") != "false":
        problems.append("an empty Prometheus result would read as 0 instead of failing")
    if not metrics_api["metadata"]["url"].endswith(f"/scale/{pool}"):
        problems.append(f"metrics-api url {metrics_api['metadata']['url']} is not /scale/{pool}")
    if metrics_api["metadata"].get("valueLocation") != "desired_replicas":
        problems.append("metrics-api does not read desired_replicas")
    for t, target_key in ((prometheus, "threshold"), (metrics_api, "targetValue")):
        # AverageValue with target 1: HPA desired = ceil(metric / 1) = the exporter's number.
        if t.get("metricType") != "AverageValue" or t["metadata"].get(target_key) != "1":
            problems.append(f"{t['type']} is not AverageValue with {target_key} 1")
    return problems


def scaled_objects_by_pool() -> dict[str, list[Doc]]:
    by_pool: dict[str, list[Doc]] = {}
    for so in of_kind("ScaledObject"):
        target = so["spec"]["scaleTargetRef"]["name"]
        by_pool.setdefault(target.removeprefix("conveyor-worker-"), []).append(so)
    return by_pool


def test_every_builtin_pool_has_exactly_one_scaled_object() -> None:
    by_pool = scaled_objects_by_pool()
    assert set(by_pool) == set(BUILTIN_POOLS), f"pools {sorted(by_pool)} != {sorted(BUILTIN_POOLS)}"
    for pool, objects in by_pool.items():
        assert len(objects) == 1, f"pool {pool} has {len(objects)} ScaledObjects"
        assert pool_problems(objects[0], pool) == [], pool


@pytest.mark.parametrize("pool", sorted(BUILTIN_POOLS))
def test_scaling_behaviour_is_fast_up_and_stabilised_down(pool: str) -> None:
    spec = scaled_objects_by_pool()[pool][0]["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["pollingInterval"] == 15 and spec["cooldownPeriod"] == 300
    fallback = spec["fallback"]
    assert fallback["failureThreshold"] == 3
    assert 1 <= fallback["replicas"] <= spec["maxReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0 and up["selectPolicy"] == "Max"
    assert {(p["type"], p["value"], p["periodSeconds"]) for p in up["policies"]} == {
        ("Percent", 100, 15),
        ("Pods", 4, 15),
    }
    assert down["stabilizationWindowSeconds"] == 300
    assert {(p["type"], p["value"], p["periodSeconds"]) for p in down["policies"]} == {
        ("Pods", 1, 60),
        ("Percent", 25, 60),
    }


def test_metrics_api_triggers_authenticate_through_a_trigger_authentication_here() -> None:
    defined = {ta["metadata"]["name"] for ta in of_kind("TriggerAuthentication")}
    for so in of_kind("ScaledObject"):
        metrics_api = trigger(so, "metrics-api")
        assert metrics_api["metadata"].get("authMode") == "bearer"
        ref = metrics_api["authenticationRef"]
        assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
        assert ref["name"] in defined, f"{so['metadata']['name']} refers to {ref['name']}"
    for ta in of_kind("TriggerAuthentication"):
        params = {r["parameter"] for r in ta["spec"]["secretTargetRef"]}
        assert "token" in params


# -- no secret values --------------------------------------------------------------------


def secret_problems(doc: Doc) -> list[str]:
    """Places where doc carries a credential instead of pointing at a Secret."""
    problems = []
    kind = doc.get("kind")
    if kind in ("Secret", "ConfigMap"):
        problems.append(f"a {kind} is committed; create it out of band")
    if kind == "TriggerAuthentication":
        extra = set(doc.get("spec") or {}) - {"secretTargetRef"}
        if extra:
            problems.append(f"TriggerAuthentication uses {sorted(extra)}, not secretTargetRef only")
        for ref in (doc.get("spec") or {}).get("secretTargetRef") or []:
            if set(ref) != {"parameter", "name", "key"}:
                problems.append(f"secretTargetRef entry {ref} is not exactly parameter/name/key")
    if kind == "ScaledObject":
        for t in doc["spec"].get("triggers") or []:
            for key, value in (t.get("metadata") or {}).items():
                if SENSITIVE_KEY.search(key) and not key.endswith("FromEnv"):
                    problems.append(f"trigger {t.get('name')} sets {key} in plain metadata")
                if key == "customHeaders" and re.search(r"authorization|token", value, re.I):
                    problems.append(f"trigger {t.get('name')} sends credentials in customHeaders")
    problems += inline_credentials(doc)
    return problems


@pytest.mark.parametrize("item", manifests(), ids=manifest_id)
def test_no_manifest_holds_a_secret_value(item: tuple[str, Doc]) -> None:
    assert secret_problems(item[1]) == []


# -- kustomization -----------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_sets_the_namespace() -> None:
    kustomizations = [d for _, d in _documents() if d.get("kind") == "Kustomization"]
    assert len(kustomizations) == 1
    k = kustomizations[0]
    assert k["namespace"] == NAMESPACE
    files = {str(p.relative_to(KEDA_DIR)) for p in yaml_files()} - {"kustomization.yaml"}
    assert set(k["resources"]) == files
    assert len(k["resources"]) == len(set(k["resources"]))


def test_kustomize_builds_valid_namespaced_objects() -> None:
    built = kustomize_build(KEDA_DIR)
    assert sorted(d["kind"] for d in built) == ["ScaledObject"] * len(BUILTIN_POOLS) + [
        "TriggerAuthentication"
    ]
    for doc in built:
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "conveyor"
        assert schema_errors(doc) == []


def test_one_overlay_patch_retargets_prometheus_for_every_pool(tmp_path: Path) -> None:
    address = "http://prometheus-operated.observability.svc:9090"
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "agents",
        "resources": [os.path.relpath(KEDA_DIR, tmp_path)],  # kustomize refuses absolute paths
        "patches": [
            {
                "target": {"group": "keda.sh", "kind": "ScaledObject"},
                "patch": yaml.safe_dump(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/triggers/0/metadata/serverAddress",
                            "value": address,
                        }
                    ]
                ),
            }
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")
    scaled = [d for d in kustomize_build(tmp_path) if d["kind"] == "ScaledObject"]
    assert len(scaled) == len(BUILTIN_POOLS)
    for so in scaled:
        assert so["metadata"]["namespace"] == "agents"
        assert trigger(so, "prometheus")["metadata"]["serverAddress"] == address
        assert schema_errors(so) == []


# -- the checks can fail -----------------------------------------------------------------


def a_scaled_object() -> Doc:
    return copy.deepcopy(scaled_objects_by_pool()["vector"][0])


def a_trigger_authentication() -> Doc:
    return copy.deepcopy(of_kind("TriggerAuthentication")[0])


def test_schema_rejects_a_string_replica_count() -> None:
    broken = a_scaled_object()
    broken["spec"]["minReplicaCount"] = "two"
    assert any(e.startswith("spec.minReplicaCount:") for e in schema_errors(broken))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["spec"].update(pollingIntervall=15), "spec: Additional properties"),
        (lambda d: d["spec"].pop("scaleTargetRef"), "'scaleTargetRef' is a required property"),
        (lambda d: d["spec"].update(triggers=[]), "spec.triggers: [] should be non-empty"),
        (lambda d: d["spec"]["fallback"].pop("replicas"), "'replicas' is a required property"),
        (lambda d: d["spec"]["fallback"].update(behavior="sometimes"), "spec.fallback.behavior"),
        (lambda d: d["spec"]["triggers"][0]["metadata"].update(threshold=1), "is not of type"),
        (lambda d: d["spec"].update(maxReplicaCount=2**31), "is not a 'int32'"),
        (lambda d: d["spec"].update(minReplicaCount=5), "minReplicaCount must be less than"),
        (
            lambda d: d["spec"]["triggers"][1]["authenticationRef"].update(kind="Secret"),
            "authenticationRef.kind",
        ),
    ],
    ids=[
        "unknown-field",
        "no-target",
        "no-triggers",
        "fallback-without-replicas",
        "bad-fallback-behavior",
        "numeric-metadata",
        "int32-overflow",
        "min-above-max",
        "bad-auth-kind",
    ],
)
def test_schema_rejects_broken_scaled_objects(mutate: Any, expected: str) -> None:
    broken = a_scaled_object()
    mutate(broken)
    errors = schema_errors(broken)
    assert any(expected in e for e in errors), errors


def test_schema_rejects_a_secret_ref_without_a_key() -> None:
    broken = a_trigger_authentication()
    del broken["spec"]["secretTargetRef"][0]["key"]
    assert any("'key' is a required property" in e for e in schema_errors(broken))


def test_pool_check_catches_a_trigger_for_another_pool() -> None:
    so = a_scaled_object()
    so["spec"]["triggers"][0]["metadata"]["query"] = (
        'max(conveyor_pool_desired_replicas{pool="default"})'
    )
    so["spec"]["triggers"][1]["metadata"]["url"] = "http://x:9810/scale/default"
    problems = pool_problems(so, "vector")
    assert len(problems) == 2, problems
    so["spec"]["triggers"].reverse()
    assert any("not first" in p for p in pool_problems(so, "vector"))


def test_secret_check_catches_literal_credentials() -> None:
    so = a_scaled_object()
    so["spec"]["triggers"][1]["metadata"]["token"] = "hunter2"
    so["spec"]["triggers"][0]["metadata"]["serverAddress"] = "http://admin:hunter2@prom:9090"
    assert len(secret_problems(so)) == 2, secret_problems(so)
    ta = a_trigger_authentication()
    ta["spec"]["env"] = [{"name": "TOKEN", "parameter": "token"}]
    assert secret_problems(ta) != []
    secret = {"apiVersion": "v1", "kind": "Secret", "stringData": {"token": "hunter2"}}
    assert secret_problems(secret) != []
