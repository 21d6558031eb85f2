"""Checks of the rendered workload objects, per tier and across tiers."""
from __future__ import annotations

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore

from k8s_checks.common import GPU_RESOURCE, INFLIGHT, NAMESPACE, REPO, TIERS, TIER_LABEL, check


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
    # gRPC (EDGESERVE_GRPC_PORT, 0 = off) = containerPort "grpc" = the Service's "grpc" targetPort,
    # and, when on, the image's: Dockerfile EXPOSE = its EDGESERVE_GRPC_PORT.
    grpc_port = int(settings.get("EDGESERVE_GRPC_PORT", docker.get("env", {}).get("EDGESERVE_GRPC_PORT", 0)))
    if grpc_port:
        check(ports.get("grpc") == grpc_port, f"{where}: container port grpc {ports.get('grpc')} != EDGESERVE_GRPC_PORT {grpc_port}")
        check(docker.get("grpc_port") == grpc_port, f"{where}: EDGESERVE_GRPC_PORT {grpc_port} != Dockerfile's gRPC EXPOSE {docker.get('grpc_port')}")

    def resolve(p: object) -> object:
        return ports.get(p) if isinstance(p, str) else p

    svc_ports = svc.get("spec", {}).get("ports", [])
    check(len(svc_ports) >= 1, f"{where}: Service has no ports")
    for sp in svc_ports:
        want = grpc_port if sp.get("name") == "grpc" else port
        check(resolve(sp.get("targetPort", sp.get("port"))) == want, f"{where}: Service port {sp.get('name')} targets {sp.get('targetPort')}, not the container's {want}")
    check(not grpc_port or any(sp.get("name") == "grpc" for sp in svc_ports), f"{where}: the Service does not expose gRPC port {grpc_port}")
    for rule in ing.get("spec", {}).get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            backend = path["backend"]["service"]
            check(backend["name"] == svc["metadata"]["name"], f"{where}: Ingress backend {backend['name']} is not the Service {svc['metadata']['name']}")
            bp = backend["port"]
            check(any(bp.get("name") == sp.get("name") or bp.get("number") == sp.get("port") for sp in svc_ports), f"{where}: Ingress backend port {bp} is not a Service port")
            check(path["path"].startswith("/v2"), f"{where}: Ingress path {path['path']} (only the OIP API /v2 should be public)")
    allowed = [resolve(p.get("port")) for r in netpol.get("spec", {}).get("ingress", []) for p in r.get("ports", [])]
    check(port in allowed, f"{where}: NetworkPolicy does not let traffic reach port {port}")
    check(not grpc_port or grpc_port in allowed, f"{where}: NetworkPolicy does not let traffic reach gRPC port {grpc_port}")
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


