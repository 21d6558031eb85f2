"""The metric names edgeserve exports, from a live exposition or from the source."""
from __future__ import annotations

import re
from k8s_checks.common import REPO


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


