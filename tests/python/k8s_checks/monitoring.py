"""Checks of the monitoring objects against the exported metrics."""
from __future__ import annotations

import json
import re

from k8s_checks.common import INFLIGHT, K8S, NAMESPACE, check, yaml
from k8s_checks.render import load_yaml_docs
from k8s_checks.workload import by_kind, selects


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


