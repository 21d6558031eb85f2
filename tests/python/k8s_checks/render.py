"""Rendering kustomizations and validating objects and CRDs against their schemas."""
from __future__ import annotations

import subprocess
from pathlib import Path

from k8s_checks.common import K8S, KUBE_VERSIONS, REPO, REQUIRED_KUSTOMIZATIONS, check, jsonschema, kubernetes_validate, yaml


def kustomizations() -> list[Path]:
    found = sorted(
        p.parent
        for name in ("kustomization.yaml", "kustomization.yml", "Kustomization")
        for p in K8S.rglob(name)
    )
    for required in REQUIRED_KUSTOMIZATIONS:
        check((K8S / required) in found, f"k8s/{required}/kustomization.yaml is missing")
    return found


def render(kubectl: str, directory: Path) -> list[dict]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True
    )
    if result.returncode != 0:
        check(False, f"kubectl kustomize {directory.relative_to(REPO)} failed:\n{result.stderr}")
        return []
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def validate_schema(obj: dict, where: str) -> None:
    label = f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            check(False, f"{label} is invalid for Kubernetes {version} at {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            check(False, f"{label}: {e.message}")
        except Exception as e:  # noqa: BLE001 - VersionNotSupportedError and friends
            check(False, f"{label}: cannot validate for Kubernetes {version}: {e!r}")


def load_yaml_docs(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        check(False, f"{path.relative_to(REPO)} is not valid YAML: {e}")
        return []


def strictify(schema: object) -> object:
    """A CRD's structural schema, with unknown fields rejected the way the
    API server's strict field validation does (except where the schema
    preserves unknown fields)."""
    if isinstance(schema, list):
        return [strictify(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strictify(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return out


def is_custom(doc: dict, custom_groups: set[str]) -> bool:
    group = str(doc.get("apiVersion", "")).split("/")[0]
    return group in custom_groups or group == "edgeserve.dev"


def check_crds() -> None:
    """k8s/crds: every Kubernetes object schema-valid (the CRDs themselves);
    every custom resource of an edgeserve.dev (or k8s/crds-defined) kind,
    there or elsewhere under k8s/ and examples/, valid against its CRD."""
    crds_dir = K8S / "crds"
    if not crds_dir.is_dir():
        print("note: k8s/crds does not exist; no CRDs to validate")
        return
    files = sorted(p for ext in ("*.yaml", "*.yml") for p in crds_dir.rglob(ext))
    if not files:
        print("note: k8s/crds holds no YAML files yet")
    docs = [(path, doc) for path in files for doc in load_yaml_docs(path)]
    schemas = {}
    for path, doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc.get("spec", {})
        group, kind = spec.get("group"), spec.get("names", {}).get("kind")
        for version in spec.get("versions", []):
            schema = version.get("schema", {}).get("openAPIV3Schema")
            check(schema is not None, f"{path.name}: {kind} {version.get('name')} has no openAPIV3Schema")
            if schema is not None and version.get("served", True):
                root = strictify(schema)
                root.setdefault("properties", {}).update(
                    {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
                )
                schemas[(f"{group}/{version['name']}", kind)] = root
    custom_groups = {av.split("/")[0] for av, _ in schemas}
    crds = sum(1 for _, d in docs if d.get("kind") == "CustomResourceDefinition")
    print(f"k8s/crds: {len(files)} file(s), {crds} CRD(s), {len(schemas)} served version schema(s)")

    custom = []
    for path, doc in docs:
        if is_custom(doc, custom_groups):
            custom.append((path, doc))
        else:
            validate_schema(doc, str(path.relative_to(REPO)))
    for base in (K8S, REPO / "examples"):
        for path in sorted(p for ext in ("*.yaml", "*.yml") for p in base.rglob(ext)):
            if crds_dir in path.parents:
                continue
            try:
                found = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
            except yaml.YAMLError:
                continue
            custom += [(path, d) for d in found if is_custom(d, custom_groups)]
    for path, doc in custom:
        api = str(doc.get("apiVersion", ""))
        where = f"{path.relative_to(REPO)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        schema = schemas.get((api, doc.get("kind")))
        if not check(schema is not None, f"{where}: no CRD in k8s/crds serves {api} {doc.get('kind')}"):
            continue
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
            path_s = "/".join(str(p) for p in error.path)
            check(False, f"{where} does not match its CRD at {path_s}: {error.message}")
    if custom:
        print(f"custom resources checked against their CRDs: {len(custom)}")


