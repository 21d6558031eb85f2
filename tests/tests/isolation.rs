//! A plugin that traps, loops or eats memory fails only its own request: the
//! instance is replaced and every other request keeps being served.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, error_text};

/// Runs faulty `action` and asserts it fails with `status` and an error
/// that contains `message`.
async fn assert_fails(server: &TestServer, action: i32, status: u16, message: &str) {
    let (got, body) = server.faulty(action).await;
    assert_eq!(got, status, "{body}");
    assert!(error_text(&body).contains(message), "{body}");
}

/// Runs faulty `action` and asserts it succeeds, answering 0.
async fn assert_answers_zero(server: &TestServer, action: i32) {
    let (status, body) = server.faulty(action).await;
    assert_eq!(
        (status, body["outputs"][0]["data"][0].as_i64()),
        (200, Some(0)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_fail_one_request_and_the_instance_is_replaced() {
    let server = TestServer::start(&["faulty", "linear"]).await;
    assert_eq!(server.faulty(0).await.0, 200);

    assert_fails(&server, 1, 500, "model faulty:1 trapped").await;
    // The single instance was replaced: the next request succeeds.
    assert_answers_zero(&server, 0).await;

    let started = Instant::now();
    assert_fails(
        &server,
        2,
        500,
        "model faulty:1 exceeded its 500 ms deadline",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deadline interrupted the loop"
    );
    assert_eq!(server.faulty(0).await.0, 200);

    let memory = "model faulty:1 exceeded its memory limit of 32 MiB";
    assert_fails(&server, 3, 500, memory).await;
    assert_eq!(server.faulty(0).await.0, 200);

    // Host tensors are capped too: the handler gets an out-of-memory value.
    assert_fails(&server, 4, 500, "max_tensor_mib").await;
    assert_eq!(server.faulty(0).await.0, 200);

    let rejected = "model faulty:1 rejected the request: action 5 is a bad request on purpose";
    assert_fails(&server, 5, 400, rejected).await;

    // No ambient authority: no environment, no filesystem, no sockets.
    assert_answers_zero(&server, 6).await;

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
    let stuck = common::spawn_faulty(&server.client, &server.base, 2);
    common::wait_inflight(&server.client, &server.base, 1).await;
    // faulty has one instance, busy spinning: the queue deadline (300 ms)
    // passes before the spin's deadline (500 ms).
    let response = server
        .send_json(common::FAULTY, &common::faulty_request(0))
        .await;
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
    assert_eq!(stuck.await.unwrap().unwrap().status(), 500);
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

/// faulty's quick calls run on the async worker that took them; when one
/// of them then spins, it must leave that worker at the next epoch tick, so
/// a server with a single worker goes on answering everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_call_that_spins_on_the_async_worker_leaves_it_to_the_others() {
    let server = TestServer::start(&["faulty", "linear"]).await;
    // Measured quick, so the next call starts on the worker.
    for _ in 0..3 {
        assert_eq!(server.faulty(0).await.0, 200);
    }
    let stuck = common::spawn_faulty(&server.client, &server.base, 2);
    common::wait_inflight(&server.client, &server.base, 1).await;
    let ys = server.linear(&[1.0]).await;
    assert!((ys[0] - 0.4).abs() < 1e-6);
    assert!(
        !stuck.is_finished(),
        "linear answered only after faulty's 500 ms spin ended"
    );
    let (status, body) = common::status_json(stuck.await.unwrap().unwrap()).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains("exceeded its 500 ms deadline"),
        "{body}"
    );
    server.stop().await;
}

/// A panic in the host while it serves a call (a bug in a kernel or the
/// runtime, which no guest can be made to cause on purpose, so the call
/// panics here in its place) fails that call alone with a fault naming it:
/// the instance it left mid-call is replaced, and the pool keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_the_host_fails_its_call_and_the_pool_keeps_serving() {
    use edgeserve::runtime::{Fault, InstancePool, PoolError, Runtime, Value};
    use edgeserve_e2e::linear::{Linear, MODEL, check, input};

    let linear = Linear::load().expect("linear");
    let runtime = Runtime::new(&edgeserve_e2e::runtime_config(None)).expect("runtime");
    let factory = linear.factory(&runtime).expect("factory");
    // Instances start blocking, as the server starts them.
    let pool = tokio::task::spawn_blocking(move || {
        InstancePool::start(
            MODEL.into(),
            1,
            factory,
            Duration::from_secs(30),
            Default::default(),
            true,
        )
    })
    .await
    .expect("started")
    .map(std::sync::Arc::new)
    .expect("pool");
    let panicked = pool
        .run(|_| Box::pin(async { panic!("a kernel bug") }))
        .await
        .map(|_: ((), _)| ())
        .expect_err("a panicking call fails");
    let fault = match &panicked {
        PoolError::Fault(fault) => fault,
        other => panic!("{other}"),
    };
    assert!(
        matches!(fault, Fault::HostPanic { message, .. } if message == "a kernel bug"),
        "{panicked}"
    );
    assert!(
        panicked.to_string().contains("hit a bug in the server"),
        "{panicked}"
    );
    // The pool's one instance was replaced: the next call is served.
    let (outputs, _) = pool
        .run(|instance| {
            Box::pin(async move {
                let x = Value::Numeric(input().expect("x"));
                instance
                    .infer(vec![("x".into(), x)], Vec::new(), None)
                    .await
            })
        })
        .await
        .expect("served after the panic");
    check(&outputs).expect("y");
    assert_eq!(pool.live(), 1);
}
