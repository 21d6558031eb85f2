//! The `recommender` example model (plugins/recommender) on a real server:
//! top-k items against numpy's reference, and its 400s.

mod common;

use common::{TestServer, data_json, error_text, ints, max_abs_diff, output};
use serde_json::{Value, json};

fn reference() -> Value {
    data_json("recommender_reference.json")
}

/// Every number in `v` (nested arrays flattened), row-major.
fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![
            other
                .as_f64()
                .unwrap_or_else(|| panic!("not a number: {other}")),
        ],
    }
}

fn request(users: &[i64], k: Option<Value>) -> Value {
    let mut body = json!({"inputs": [{"name": "user_id", "shape": [users.len()], "datatype": "INT64", "data": users}]});
    if let Some(k) = k {
        body["parameters"] = json!({ "k": k });
    }
    body
}

const INFER: &str = "/v2/models/recommender/infer";

#[tokio::test(flavor = "multi_thread")]
async fn recommender_matches_numpy_reference() {
    let server = TestServer::start(&["recommender"]).await;
    let reference = reference();
    let k = reference["k"].as_u64().unwrap() as usize;
    let rows = reference["reference"].as_array().unwrap();
    let users: Vec<i64> = rows
        .iter()
        .map(|r| r["user_id"].as_i64().unwrap())
        .collect();
    let n = users.len();

    server
        .assert_signature(
            "recommender",
            json!([{"name": "user_id", "datatype": "INT64", "shape": [-1]}]),
            Some(json!([
                {"name": "items", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            ])),
        )
        .await;

    let (status, body) = server.post(INFER, &request(&users, Some(json!(k)))).await;
    assert_eq!(status, 200, "{body}");
    let items = output(&body, "items");
    let scores = output(&body, "scores");
    assert_eq!(items["datatype"], "INT64");
    assert_eq!(scores["datatype"], "FP32");
    assert_eq!(items["shape"], json!([n, k]));
    assert_eq!(scores["shape"], json!([n, k]));

    let got_items: Vec<i64> = flat(&items["data"]).iter().map(|&x| x as i64).collect();
    let want_items: Vec<i64> = rows.iter().flat_map(|r| ints(&r["items"])).collect();
    assert_eq!(got_items, want_items);

    let got_scores = flat(&scores["data"]);
    let want_scores: Vec<f64> = rows.iter().flat_map(|r| flat(&r["scores"])).collect();
    assert_eq!(got_scores.len(), want_scores.len());
    let worst = max_abs_diff(&got_scores, &want_scores);
    assert!(worst <= 1e-4, "max |score - numpy| = {worst}");

    // Without `k` the handler returns its default of 10.
    let (status, body) = server.post(INFER, &request(&users[..2], None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(output(&body, "items")["shape"], json!([2, 10]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recommender_rejects_bad_k_and_unknown_users() {
    let server = TestServer::start(&["recommender"]).await;
    let reference = reference();
    let items = reference["items"].as_i64().unwrap();
    let users = reference["users"].as_i64().unwrap();

    for k in [json!(0), json!(items + 1), json!(-3), json!("five")] {
        let (status, body) = server.post(INFER, &request(&[0, 1], Some(k.clone()))).await;
        assert_eq!(status, 400, "k = {k}: {body}");
        let text = error_text(&body);
        assert!(text.contains('k'), "k = {k}: {text}");
        assert!(text.contains(&format!("1..={items}")), "k = {k}: {text}");
    }
    // k = items is the largest allowed.
    let (status, body) = server.post(INFER, &request(&[0], Some(json!(items)))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(output(&body, "items")["shape"], json!([1, items]));

    for bad in [users, users + 1234, -1] {
        let (status, body) = server
            .post(INFER, &request(&[0, bad, 1], Some(json!(5))))
            .await;
        assert_eq!(status, 400, "user {bad}: {body}");
        let text = error_text(&body);
        assert!(text.contains(&bad.to_string()), "user {bad}: {text}");
        assert!(text.contains("user_id"), "user {bad}: {text}");
    }

    // The server keeps serving after the rejections.
    let (status, body) = server.post(INFER, &request(&[3], None)).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}
