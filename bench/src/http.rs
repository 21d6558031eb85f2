//! Measurement 3: `linear` over HTTP under concurrent load on loopback —
//! edgeserve (started in-process) against the native handler of
//! [`crate::native`] on its own port, both driven by the same keep-alive
//! client in the same process.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::Value as Json;

use crate::native::NativeServer;
use crate::stats::Samples;
use edgeserve_e2e::linear::MODEL;

/// The request: four values of x, shape [4, 1] (`bench/server_cpu.py`
/// sends the same file).
pub const BODY: &str = include_str!("../linear_request.json");

/// The request's content type.
const JSON_TYPE: (&str, &str) = ("content-type", "application/json");

/// How hard and how long to drive each server.
pub struct Config {
    /// Concurrent connections (one request in flight on each).
    pub connections: usize,
    /// Untimed load on each server before measuring.
    pub warmup: Duration,
    /// Timed load on each server, in total.
    pub duration: Duration,
    /// Slices the timed load is cut into, alternating between the servers
    /// so that drift in the machine's speed hits both alike.
    pub rounds: u32,
}

/// What one server did under load.
pub struct Load {
    /// Latency of each successful request.
    pub latency: Samples,
    /// Requests that did not get a 200.
    pub errors: usize,
    /// Wall time of the timed phases.
    pub elapsed: Duration,
    /// Successful requests per second in each round's slice, in order.
    pub rounds: Vec<f64>,
}

impl Load {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// What one server's rounds added up to so far.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    rounds: Vec<f64>,
}

/// Starts both servers side by side and loads them in alternating slices;
/// returns (edgeserve, native).
pub async fn run(config: &Config) -> anyhow::Result<(Load, Load)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.connections)
        .build()?;
    let native = NativeServer::start().await?;
    let repo = edgeserve_e2e::model_repository(&[MODEL]);
    let cache = tempfile::Builder::new()
        .prefix("edgeserve-bench-cache-")
        .tempdir()?;
    // As the e2e tests start it, with a compile cache of its own.
    let edgeserve =
        edgeserve::app::start(edgeserve_e2e::server_settings(&repo, cache.path())).await?;
    let urls = [edgeserve.addr(), native.addr()]
        .map(|addr| format!("http://{addr}/v2/models/{MODEL}/infer"));

    let (got, expected) = (
        check(&client, &urls[0]).await?,
        check(&client, &urls[1]).await?,
    );
    ensure!(
        same_outputs(&got, &expected),
        "edgeserve answered {got}, the native handler {expected}"
    );
    for url in &urls {
        phase(&client, url, config.connections, config.warmup).await?;
    }
    let slice = config.duration / config.rounds.max(1);
    let mut tallies: [Tally; 2] = Default::default();
    for round in 0..config.rounds.max(1) {
        // Each server goes first in every other round.
        for i in [0, 1].map(|i| (i + round as usize) % 2) {
            let started = Instant::now();
            let (latencies, errors) = phase(&client, &urls[i], config.connections, slice).await?;
            let elapsed = started.elapsed();
            let tally = &mut tallies[i];
            tally.elapsed += elapsed;
            tally
                .rounds
                .push(latencies.len() as f64 / elapsed.as_secs_f64());
            tally.latencies.extend(latencies);
            tally.errors += errors;
        }
    }
    edgeserve.shutdown().await?;
    native.shutdown().await?;

    let [edgeserve, native] = tallies.map(|t| {
        (!t.latencies.is_empty()).then(|| Load {
            latency: Samples::new(t.latencies),
            errors: t.errors,
            elapsed: t.elapsed,
            rounds: t.rounds,
        })
    });
    Ok((
        edgeserve.context("no request to edgeserve succeeded")?,
        native.context("no request to the native handler succeeded")?,
    ))
}

/// One request; returns the response's `outputs` after checking the status.
async fn check(client: &reqwest::Client, url: &str) -> anyhow::Result<Json> {
    let response = client
        .post(url)
        .header(JSON_TYPE.0, JSON_TYPE.1)
        .body(BODY)
        .send()
        .await?;
    let status = response.status();
    let body: Json = response.json().await?;
    ensure!(status.is_success(), "{url}: {status} {body}");
    body.get("outputs").cloned().context("no outputs")
}

/// Whether two `outputs` arrays agree: same names, datatypes and shapes,
/// data equal to f32 precision (the encodings of a number may differ).
fn same_outputs(a: &Json, b: &Json) -> bool {
    let numbers =
        |v: &Json| -> Option<Vec<f64>> { v["data"].as_array()?.iter().map(Json::as_f64).collect() };
    let (Some(a), Some(b)) = (a.as_array(), b.as_array()) else {
        return false;
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            ["name", "datatype", "shape"].iter().all(|k| a[k] == b[k])
                && match (numbers(a), numbers(b)) {
                    (Some(x), Some(y)) => {
                        x.len() == y.len()
                            && x.iter()
                                .zip(&y)
                                .all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs().max(1.0))
                    }
                    _ => false,
                }
        })
}

/// `connections` workers sending requests back to back until `duration`
/// is up; returns every success's latency and the failure count.
async fn phase(
    client: &reqwest::Client,
    url: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let ok = match client
                        .post(&url)
                        .header(JSON_TYPE.0, JSON_TYPE.1)
                        .body(BODY)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    Ok((latencies, errors))
}
