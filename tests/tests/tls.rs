//! HTTPS with certificates from a CA generated here: real clients (curl and
//! reqwest) verify the server, a client that offers the post-quantum hybrid
//! key exchange gets it (and an edge offloading to an HTTPS upstream offers
//! it), mutual TLS refuses a client without a certificate, gRPC gets the
//! same TLS (tritonclient.grpc), and SIGHUP swaps the certificate without a
//! restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;
use edgeserve::app::Settings;
use edgeserve::tls::TlsSettings;
use edgeserve_e2e::{model_repository, tls_client};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// A certificate authority and the PEM files it signs, in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.pem` and `<name>.key`, a certificate for 127.0.0.1
    /// and localhost signed by this CA; returns the certificate's path.
    fn issue(&self, name: &str) -> PathBuf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        self.path(&format!("{name}.pem"))
    }

    fn tls(&self, name: &str, client_ca: Option<PathBuf>) -> TlsSettings {
        TlsSettings {
            cert: self.issue(name),
            key: self.path(&format!("{name}.key")),
            client_ca,
        }
    }
}

/// The `linear` model served over `tls`, with whatever else `configure`
/// sets: the server, its HTTPS port and its gRPC port when one is asked for.
async fn serve_linear(
    tls: TlsSettings,
    configure: impl FnOnce(&mut Settings),
) -> (TestServer, u16, Option<u16>) {
    let repo = model_repository(&["linear"]);
    let mut settings = common::settings(&repo);
    settings.tls = Some(tls);
    configure(&mut settings);
    let running = edgeserve::app::start(settings).await.unwrap();
    let grpc_port = running.grpc_addr().map(|a| a.port());
    let port = running.addr().port();
    (TestServer::attach(running, repo), port, grpc_port)
}

fn linear_request() -> serde_json::Value {
    json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})
}

/// `curl` of the linear model at `url` trusting `ca` → (exit code, stdout).
fn curl(url: &str, ca: Option<&Path>, extra: &[&str]) -> (i32, String) {
    curl_body(url, ca, &linear_request().to_string(), extra)
}

/// `curl` POSTing `body` (from stdin) to `url` trusting `ca` → (exit
/// code, stdout).
fn curl_body(url: &str, ca: Option<&Path>, body: &str, extra: &[&str]) -> (i32, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "60"]);
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    let output = command
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ])
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("running curl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    // A request left unanswered fails the test instead of stalling it.
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Asserts that a request sent `how` was refused, not answered and not left
/// hanging until the client's timeout.
fn refused_by_tls(sent: reqwest::Result<reqwest::Response>, how: &str) {
    match sent {
        Ok(response) => panic!("answered {how}: {}", response.status()),
        Err(e) => assert!(!e.is_timeout(), "no answer at all {how}: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_is_verified_by_real_clients_and_plain_http_gets_nothing() {
    let pki = Pki::new("server");
    let (server, port, _) = serve_linear(pki.tls("server", None), |settings| {
        settings.access.api_keys = vec!["tls-key".parse().unwrap()];
    })
    .await;
    let url = format!("https://127.0.0.1:{port}/v2/models/linear/infer");

    let (code, body) = curl(
        &url,
        Some(&pki.path("ca.pem")),
        &["-H", "Authorization: Bearer tls-key"],
    );
    assert_eq!(code, 0, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(common::max_abs_diff(&common::floats(&body["outputs"][0]["data"]), &[0.4]) < 1e-6);
    // Keys still apply over TLS, and curl gets the 401 cleanly over HTTP/2
    // (the server reads the body it refuses rather than reset the stream,
    // which curl reports as exit 92), with a body in flight when the answer
    // comes, and with one sent whole.
    let sent = ["-w", "%{http_code} %{http_version}"];
    let large = format!("{{\"pad\": \"{}\"}}", "x".repeat(200 << 10));
    for body in [&large, &linear_request().to_string()] {
        for _ in 0..3 {
            let (code, answer) = curl_body(&url, Some(&pki.path("ca.pem")), body, &sent);
            assert_eq!(code, 0, "curl over h2 failed: {answer}");
            assert!(answer.ends_with("401 2"), "{answer}");
            assert!(answer.contains("Authorization: Bearer"), "{answer}");
        }
    }
    // Without the CA, curl refuses the certificate (exit 60).
    let (code, _) = curl(&url, None, &[]);
    assert_eq!(code, 60);

    let https = client(&pki.path("ca.pem"), None);
    let response = https
        .post(&url)
        .bearer_auth("tls-key")
        .json(&linear_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP on the TLS port: no HTTP answer, and the server keeps serving.
    let plain = common::client()
        .post(format!("http://127.0.0.1:{port}/v2/models/linear/infer"))
        .json(&linear_request())
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
    let response = https
        .get(format!("https://localhost:{port}/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

/// `GET path` from the server at `port` over a fresh connection, as a
/// rustls client trusting `ca` that offers the key exchange `groups` (its
/// defaults: `None`): the group agreed and the whole answer.
async fn handshake(
    port: u16,
    ca: &Path,
    groups: Option<&[rustls::NamedGroup]>,
    path: &str,
) -> (rustls::NamedGroup, String) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let connector = tls_client::connector(roots, groups);
    tls_client::get(&connector, port, path).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_offering_the_post_quantum_hybrid_gets_it_and_classical_ones_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = Pki::new("server");
    let (server, port, _) = serve_linear(pki.tls("server", None), |_| {}).await;
    let ca = pki.path("ca.pem");
    let ok = "HTTP/1.1 200 OK\r\n";
    let (group, answer) = handshake(port, &ca, None, "/v2/health/live").await;
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768, "{answer}");
    assert!(answer.starts_with(ok), "{answer}");
    for classical in [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1] {
        let (group, answer) = handshake(port, &ca, Some(&[classical]), "/v2/health/live").await;
        assert_eq!(group, classical, "{answer}");
        assert!(answer.starts_with(ok), "{answer}");
    }
    // Plain HTTP on the TLS port: refused in the handshake, and counted.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut refused = Vec::new();
    let _ = plain.read_to_end(&mut refused).await;
    assert!(!String::from_utf8_lossy(&refused).contains("HTTP/1.1"));

    // The refusal is counted once its task has seen the error, which the
    // client may beat to the next connection: read until it is there.
    let refusal = r#"edgeserve_tls_handshake_failures_total{reason="refused"} 1"#;
    let mut reads = 0;
    let metrics = loop {
        reads += 1;
        let (_, metrics) = handshake(port, &ca, None, "/metrics").await;
        if metrics.lines().any(|line| line == refusal) || reads == 50 {
            break metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Each read of the metrics was a post-quantum handshake too.
    for (series, count) in [
        (
            r#"edgeserve_tls_handshakes_total{version="TLSv1_3",group="X25519MLKEM768"}"#,
            1 + reads,
        ),
        (
            r#"edgeserve_tls_handshakes_total{version="TLSv1_3",group="X25519"}"#,
            1,
        ),
        (
            r#"edgeserve_tls_handshakes_total{version="TLSv1_3",group="secp256r1"}"#,
            1,
        ),
        (
            r#"edgeserve_tls_handshake_failures_total{reason="refused"}"#,
            1,
        ),
    ] {
        assert!(
            metrics
                .lines()
                .any(|line| line == format!("{series} {count}")),
            "no `{series} {count}` in\n{metrics}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let servers = Pki::new("server");
    let clients = Pki::new("clients");
    let outsiders = Pki::new("outsiders");
    let tls = servers.tls("server", Some(clients.path("ca.pem")));
    let (server, port, _) = serve_linear(tls, |_| {}).await;
    let url = format!("https://127.0.0.1:{port}/v2/models/linear/infer");
    let ca = servers.path("ca.pem");

    let anonymous = client(&ca, None)
        .post(&url)
        .json(&linear_request())
        .send()
        .await;
    refused_by_tls(anonymous, "without a client certificate");
    let (code, _) = curl(&url, Some(&ca), &[]);
    assert_ne!(code, 0, "curl without a client certificate got through");

    outsiders.issue("client");
    let foreign = (outsiders.path("client.pem"), outsiders.path("client.key"));
    let refused = client(&ca, Some((&foreign.0, &foreign.1)))
        .post(&url)
        .json(&linear_request())
        .send()
        .await;
    refused_by_tls(refused, "with a certificate of another CA");

    clients.issue("client");
    let (cert, key) = (clients.path("client.pem"), clients.path("client.key"));
    let response = client(&ca, Some((&cert, &key)))
        .post(&url)
        .json(&linear_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (code, body) = curl(
        &url,
        Some(&ca),
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_serves_the_same_tls_and_client_certificate_rule() {
    let servers = Pki::new("server");
    let clients = Pki::new("clients");
    let tls = servers.tls("server", Some(clients.path("ca.pem")));
    let (server, _, grpc_port) = serve_linear(tls, |settings| settings.grpc_port = Some(0)).await;
    let grpc = format!("localhost:{}", grpc_port.expect("gRPC is on"));
    clients.issue("client");
    let args = [
        servers.path("ca.pem"),
        clients.path("client.pem"),
        clients.path("client.key"),
    ];
    let mut argv = vec![std::ffi::OsStr::new(&grpc)];
    argv.extend(args.iter().map(|p| p.as_os_str()));
    common::run_python("grpc_tls.py", &argv, "tritonclient.grpc over TLS: OK").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_the_certificate_without_a_restart() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let repo = model_repository(&["linear"]);
    let cache = common::shared_cache();
    let tls = first.tls("server", None);
    let process = edgeserve_e2e::ServerProcess::on_cpu(
        &repo,
        &cache,
        &[
            "--tls-cert".as_ref(),
            tls.cert.as_os_str(),
            "--tls-key".as_ref(),
            tls.key.as_os_str(),
        ],
    );
    let url = process.base.replace("http://", "https://") + "/v2/models/linear/infer";
    let (code, body) = curl(&url, Some(&first.path("ca.pem")), &[]);
    assert_eq!(code, 0, "{body}");

    // The second CA's certificate replaces the first in the same files.
    second.issue("next");
    std::fs::copy(second.path("next.pem"), &tls.cert).unwrap();
    std::fs::copy(second.path("next.key"), &tls.key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The reload is logged once done; then only the second CA verifies.
    let reloaded = |l: &str| l.contains("TLS certificates reloaded");
    let log = process.log_once(edgeserve_e2e::PROCESS_GUARD, reloaded);
    assert!(log.iter().any(|l| reloaded(l)), "no reload logged");
    let (code, body) = curl(&url, Some(&second.path("ca.pem")), &[]);
    assert_eq!(code, 0, "{body}");
    let (code, _) = curl(&url, Some(&first.path("ca.pem")), &[]);
    assert_eq!(code, 60, "the old certificate is still served");
}

#[tokio::test(flavor = "multi_thread")]
async fn offload_to_an_https_upstream_verifies_it_against_upstream_ca() {
    let pki = Pki::new("upstream");
    let (back, port, _) = serve_linear(pki.tls("upstream", None), |_| {}).await;
    let upstream = format!("https://127.0.0.1:{port}");
    let empty = model_repository(&[]);
    let cache = common::shared_cache();
    // Edges (the real binary) without the model, forwarding to the upstream.
    let edge = |ca: Option<&Path>| {
        let mut args = vec![
            "--model-repository".as_ref(),
            empty.as_os_str(),
            "--cache-dir".as_ref(),
            cache.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
            "--upstream".as_ref(),
            std::ffi::OsStr::new(&upstream),
        ];
        if let Some(ca) = ca {
            args.extend(["--upstream-ca".as_ref(), ca.as_os_str()]);
        }
        edgeserve_e2e::ServerProcess::spawn(args)
    };
    let send = |edge: &edgeserve_e2e::ServerProcess| {
        common::client()
            .post(format!("{}/v2/models/linear/infer", edge.base))
            .json(&linear_request())
            .send()
    };
    let served_by = |response: &reqwest::Response| {
        response.headers()[edgeserve::offload::SERVED_BY]
            .to_str()
            .unwrap()
            .to_owned()
    };

    let trusting = edge(Some(&pki.path("ca.pem")));
    let response = send(&trusting).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), served_by(&response)),
        (200, "upstream".to_owned())
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(common::max_abs_diff(&common::floats(&body["outputs"][0]["data"]), &[0.4]) < 1e-6);
    // The edge's handshake with the upstream took the post-quantum hybrid,
    // as this read of the upstream's metrics does: none was classical.
    let (_, metrics) = handshake(port, &pki.path("ca.pem"), None, "/metrics").await;
    let hybrid = r#"edgeserve_tls_handshakes_total{version="TLSv1_3",group="X25519MLKEM768"} "#;
    let counted = |prefix: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix)?.parse::<u64>().ok())
    };
    assert!(counted(hybrid) >= Some(2), "{metrics}");
    assert_eq!(
        counted(r#"edgeserve_tls_handshakes_total{version="TLSv1_3",group="X25519"} "#),
        None,
        "{metrics}"
    );

    // With only the built-in roots, the generated CA is unknown: a 502
    // naming the upstream and the certificate problem.
    let default_roots = edge(None);
    let response = send(&default_roots).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), served_by(&response)),
        (502, "upstream-unavailable".to_owned())
    );
    let body: serde_json::Value = response.json().await.unwrap();
    let error = common::error_text(&body);
    assert!(error.contains(&upstream), "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
    back.stop().await;
}
