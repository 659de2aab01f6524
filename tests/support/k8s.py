"""Shared by the Kubernetes manifest tests: CRD schemas as strict JSON Schemas, kustomize.

The CRDs under deploy/k8s/schemas/ (KEDA and Istio, copied byte for byte from upstream, see
SOURCE.md there) validate custom resources; kubernetes-validate's bundled schemas validate
the built-in kinds. Nothing here needs a cluster.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, FormatChecker

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
SCHEMA_DIR = K8S_DIR / "schemas"
CRD_FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "PeerAuthentication": "security.istio.io_peerauthentications.yaml",
    "AuthorizationPolicy": "security.istio.io_authorizationpolicies.yaml",
}
"""Every custom kind conveyor ships, and the vendored CRD that defines it."""
KUSTOMIZE_GROUP = "kustomize.config.k8s.io/"
NO_KUSTOMIZE = (
    "neither kustomize nor kubectl is on PATH; `./dev test` should install Debian's kubectl "
    "package (kubectl kustomize is built in)"
)
INLINE_CREDENTIAL = re.compile(r"://[^/@\s:]+:[^/@\s]+@|\bBearer\s+\S")

Doc = dict[str, Any]


# -- CRD schemas -------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """Close every object schema that lists properties, as the API server's pruning would."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_schema(kind: str, api_version: str) -> Doc:
    """The (strict) openAPIV3Schema that the vendored CRD for kind serves at api_version."""
    with (SCHEMA_DIR / CRD_FILES[kind]).open(encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    group, version = api_version.split("/")
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["group"] == group, f"{kind} is in group {crd['spec']['group']}"
    assert crd["spec"]["names"]["kind"] == kind
    served = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    assert served, f"the {kind} CRD serves no version {version}"
    schema = copy.deepcopy(served[0]["schema"]["openAPIV3Schema"])
    # Some CRDs (Istio's) describe only spec and status; the API server itself defines the
    # object's apiVersion, kind and metadata.
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string", "enum": [api_version]})
    properties.setdefault("kind", {"type": "string", "enum": [kind]})
    properties.setdefault("metadata", {"type": "object"})
    return strict(schema)


formats = FormatChecker()


@formats.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@formats.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _cel_errors(kind: str, spec: Doc) -> list[str]:
    """The CRDs' CEL rules (x-kubernetes-validations) that these manifests could break,
    re-checked by hand: JSON Schema cannot evaluate CEL."""
    errors = []
    if kind == "ScaledObject":
        low, high = spec.get("minReplicaCount"), spec.get("maxReplicaCount", 100)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            errors.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
    if kind in ("AuthorizationPolicy", "PeerAuthentication"):
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        if any("*" in k or not k for k in labels) or any("*" in str(v) for v in labels.values()):
            errors.append("spec.selector.matchLabels: no wildcard, no empty key")
    if kind == "AuthorizationPolicy":
        if sum(k in spec for k in ("selector", "targetRef", "targetRefs")) > 1:
            errors.append("spec: only one of targetRefs or selector can be set")
        for rule in spec.get("rules") or []:
            for source in (f.get("source") or {} for f in rule.get("from") or []):
                if {"serviceAccounts", "notServiceAccounts"} & set(source) and {
                    "principals",
                    "notPrincipals",
                    "namespaces",
                    "notNamespaces",
                } & set(source):
                    errors.append("source: cannot set serviceAccounts with namespaces/principals")
    if (
        kind == "PeerAuthentication"
        and spec.get("portLevelMtls")
        and not (spec.get("selector") or {}).get("matchLabels")
    ):
        errors.append("spec: portLevelMtls requires selector")
    return errors


def schema_errors(doc: Doc) -> list[str]:
    """Why doc does not validate against its vendored CRD; empty when it does."""
    kind, api_version = doc.get("kind"), doc.get("apiVersion", "")
    if kind not in CRD_FILES:
        return [f"kind {kind!r} is not one of {sorted(CRD_FILES)}"]
    validator = Draft7Validator(crd_schema(kind, api_version), format_checker=formats)
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]
    errors += _cel_errors(kind, doc.get("spec") or {})
    if not (doc.get("metadata") or {}).get("name"):
        errors.append("metadata.name is missing")
    return errors


# -- walking and secrets -----------------------------------------------------------------


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) under value, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}" if path else str(k), v
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


def inline_credentials(doc: Doc) -> list[str]:
    """Paths in doc whose string holds a credential (user:password@ in a URL, a Bearer value)."""
    return [
        f"{where} holds an inline credential"
        for where, value in walk(doc)
        if isinstance(value, str) and INLINE_CREDENTIAL.search(value)
    ]


# -- kustomize ---------------------------------------------------------------------------


def kustomize_argv(directory: Path) -> list[str]:
    if exe := shutil.which("kustomize"):
        return [exe, "build", str(directory)]
    if exe := shutil.which("kubectl"):
        return [exe, "kustomize", str(directory)]
    pytest.skip(NO_KUSTOMIZE)


def kustomize_build(directory: Path) -> list[Doc]:
    """The objects `kustomize build` (or `kubectl kustomize`) renders from directory."""
    out = subprocess.run(
        kustomize_argv(directory), capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]
