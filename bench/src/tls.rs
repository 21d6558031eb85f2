//! What the post-quantum hybrid key exchange costs a TLS handshake: an
//! in-process edgeserve serving HTTPS (aws-lc-rs, as shipped), and a rustls
//! client on the same provider that connects, completes the handshake and
//! sends `GET /v2/health/live` over a fresh connection each time, offering
//! X25519MLKEM768 in one turn and X25519 alone in the next (the baseline:
//! what a classical client gets). Both ends run on this machine, so a
//! handshake's time holds the client's key work and the server's alike.

use std::time::{Duration, Instant};

use anyhow::ensure;
use edgeserve_e2e::tls_client;
use rustls::NamedGroup;
use rustls::pki_types::CertificateDer;

use crate::stats::Samples;

/// What each connection asks for.
const PATH: &str = "/v2/health/live";

/// The key exchanges compared, the hybrid first.
pub const GROUPS: [NamedGroup; 2] = [NamedGroup::X25519MLKEM768, NamedGroup::X25519];

/// Handshakes (each with its request) per group, and per-round medians.
pub struct Handshakes {
    /// Every handshake's time, per group in [`GROUPS`] order.
    pub samples: [Samples; 2],
    /// Each round's median per group.
    pub rounds: [Vec<Duration>; 2],
}

/// Runs `rounds` rounds of `per_round` handshakes per group, the groups
/// taking turns (each first in every other round).
pub async fn run(rounds: u32, per_round: usize) -> anyhow::Result<Handshakes> {
    let dir = tempfile::Builder::new()
        .prefix("edgeserve-bench-tls-")
        .tempdir()?;
    let (ca, settings) = certificates(dir.path())?;
    let repo = edgeserve_e2e::model_repository(&[]);
    let mut server = edgeserve_e2e::server_settings(&repo, dir.path());
    server.tls = Some(settings);
    let server = edgeserve::app::start(server).await?;
    let port = server.addr().port();
    let clients = GROUPS.map(|group| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("the generated CA is valid");
        tls_client::connector(roots, Some(&[group]))
    });
    for (client, group) in clients.iter().zip(GROUPS) {
        let (got, answer) = tls_client::get(client, port, PATH).await?;
        ensure!(got == group, "offered {group:?} alone, got {got:?}");
        ensure!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        for _ in 0..per_round / 4 {
            tls_client::get(client, port, PATH).await?;
        }
    }
    let mut all: [Vec<Duration>; 2] = Default::default();
    let mut medians: [Vec<Duration>; 2] = Default::default();
    for round in 0..rounds as usize {
        for i in [0, 1].map(|i| (i + round) % 2) {
            let mut times = Vec::with_capacity(per_round);
            for _ in 0..per_round {
                let started = Instant::now();
                tls_client::get(&clients[i], port, PATH).await?;
                times.push(started.elapsed());
            }
            medians[i].push(Samples::new(times.clone()).median());
            all[i].extend(times);
        }
    }
    server.shutdown().await?;
    Ok(Handshakes {
        samples: all.map(Samples::new),
        rounds: medians,
    })
}

/// A CA and a P-256 certificate for 127.0.0.1 it signs, written to `dir`:
/// the CA's certificate and the server's TLS settings.
fn certificates(
    dir: &std::path::Path,
) -> anyhow::Result<(CertificateDer<'static>, edgeserve::tls::TlsSettings)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])?.signed_by(&key, &ca)?;
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let settings = edgeserve::tls::TlsSettings {
        cert: cert_path,
        key: key_path,
        client_ca: None,
    };
    Ok((ca.der().clone(), settings))
}
