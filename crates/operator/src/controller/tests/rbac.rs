//! The ClusterRole in `k8s/operator` against the calls the reconciler makes.

use serde_json::Value;

use crate::test_support::read_repo_file;

/// The ClusterRole in k8s/operator must grant every call the `reconcile` scenarios make (and the
/// watches of `run`), so the manifests cannot fall behind the code.
#[test]
fn operator_rbac_grants_every_call_the_reconciler_makes() {
    use serde::Deserialize;
    let path = "k8s/operator/rbac.yaml";
    let text = read_repo_file(path);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let allowed = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|rule| {
            let has = |key: &str, value: &str| {
                rule[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == value || v == "*")
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    let needs = [
        (
            "edgeserve.dev",
            "modeldeployments",
            &["get", "list", "watch", "patch"][..],
        ),
        ("edgeserve.dev", "modeldeployments/status", &["patch"]),
        ("apps", "deployments", &["list", "watch", "patch", "delete"]),
        ("", "services", &["list", "watch", "patch", "delete"]),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            &["list", "watch", "patch", "delete"],
        ),
    ];
    for (group, resource, verbs) in needs {
        for verb in verbs {
            assert!(
                allowed(group, resource, verb),
                "{path}: no {verb} on {group}/{resource}"
            );
        }
    }
    let account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("a ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
}
