//! A plugin that traps, loops or eats memory fails only its own request: the
//! instance is replaced and every other request keeps being served.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, error_text};

#[tokio::test(flavor = "multi_thread")]
async fn faults_fail_one_request_and_the_instance_is_replaced() {
    let server = TestServer::start(&["faulty", "linear"]).await;
    assert_eq!(server.faulty(0).await.0, 200);

    let (status, body) = server.faulty(1).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains("model faulty:1 trapped"),
        "{body}"
    );
    // The single instance was replaced: the next request succeeds.
    let (status, body) = server.faulty(0).await;
    assert_eq!(
        (status, body["outputs"][0]["data"][0].as_i64()),
        (200, Some(0)),
        "{body}"
    );

    let started = Instant::now();
    let (status, body) = server.faulty(2).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains("model faulty:1 exceeded its 500 ms deadline"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deadline interrupted the loop"
    );
    assert_eq!(server.faulty(0).await.0, 200);

    let (status, body) = server.faulty(3).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains("model faulty:1 exceeded its memory limit of 32 MiB"),
        "{body}"
    );
    assert_eq!(server.faulty(0).await.0, 200);

    // Host tensors are capped too: the handler gets an out-of-memory value.
    let (status, body) = server.faulty(4).await;
    assert_eq!(status, 500, "{body}");
    assert!(error_text(&body).contains("max_tensor_mib"), "{body}");
    assert_eq!(server.faulty(0).await.0, 200);

    let (status, body) = server.faulty(5).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_text(&body)
            .contains("model faulty:1 rejected the request: action 5 is a bad request on purpose")
    );

    // No ambient authority: no environment, no filesystem, no sockets.
    let (status, body) = server.faulty(6).await;
    assert_eq!(
        (status, body["outputs"][0]["data"][0].as_i64()),
        (200, Some(0)),
        "{body}"
    );

    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"edgeserve_instances{model="faulty",version="1"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_instance_gives_503_to_its_queue_and_others_keep_serving() {
    let server = TestServer::start(&["faulty", "linear"]).await;
    let stuck = {
        let (client, base) = (server.client.clone(), server.base.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({"inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [2]}]});
            client
                .post(format!("{base}/v2/models/faulty/infer"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    common::wait_inflight(&server.client, &server.base, 1).await;
    // faulty has one instance, busy spinning: the queue deadline (300 ms)
    // passes before the spin's deadline (500 ms).
    let response = server
        .client
        .post(format!("{}/v2/models/faulty/infer", server.base))
        .json(&serde_json::json!({"inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [0]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        error_text(&body).contains("model faulty:1 is busy"),
        "{body}"
    );
    // Meanwhile linear answers.
    let ys = server.linear(&[1.0]).await;
    assert!((ys[0] - 0.4).abs() < 1e-6);
    assert_eq!(stuck.await.unwrap(), 500);
    // The replacement comes up and serves.
    let mut status = 0;
    for _ in 0..50 {
        status = server.faulty(0).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    server.stop().await;
}
