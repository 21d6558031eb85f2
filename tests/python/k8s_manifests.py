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
import subprocess
from pathlib import Path

from k8s_checks.common import INFLIGHT, K8S, KUBE_VERSIONS, TIERS, all_versions, die, find_kubectl, kubernetes_validate, problems
from k8s_checks.dockerfile import check_dockerfile, check_operator_dockerfile
from k8s_checks.metrics import metrics_from_exposition, metrics_from_source, sample_names
from k8s_checks.monitoring import check_monitoring
from k8s_checks.render import check_crds, kustomizations, render, validate_schema
from k8s_checks.workload import check_coexistence, check_tier, check_workload


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
