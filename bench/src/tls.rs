//! What the post-quantum hybrid key exchange costs a TLS handshake: an
//! in-process edgeserve serving HTTPS (aws-lc-rs, as shipped), and a rustls
//! client on the same provider that connects, completes the handshake and
//! sends `GET /v2/health/live` over a fresh connection each time, offering
//! X25519MLKEM768 in one turn and X25519 alone in the next (the baseline:
//! what a classical client gets). Both ends run on this machine, so a
//! handshake's time holds the client's key work and the server's alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use rustls::NamedGroup;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::Samples;

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
    let clients = GROUPS.map(|group| client(&ca, group));
    for (client, group) in clients.iter().zip(GROUPS) {
        let (got, status) = handshake(client, port).await?;
        ensure!(got == group, "offered {group:?} alone, got {got:?}");
        ensure!(status == "HTTP/1.1 200 OK", "{status}");
        for _ in 0..per_round / 4 {
            handshake(client, port).await?;
        }
    }
    let mut all: [Vec<Duration>; 2] = Default::default();
    let mut medians: [Vec<Duration>; 2] = Default::default();
    for round in 0..rounds as usize {
        for i in [0, 1].map(|i| (i + round) % 2) {
            let mut times = Vec::with_capacity(per_round);
            for _ in 0..per_round {
                let started = Instant::now();
                handshake(&clients[i], port).await?;
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

/// A client trusting `ca` that offers `group` alone.
fn client(ca: &CertificateDer<'static>, group: NamedGroup) -> tokio_rustls::TlsConnector {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups.retain(|g| g.name() == group);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("the generated CA is valid");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One connection: the handshake, `GET /v2/health/live`, the answer read to
/// its end. Returns the group agreed and the status line.
async fn handshake(
    client: &tokio_rustls::TlsConnector,
    port: u16,
) -> anyhow::Result<(NamedGroup, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut tls = client.connect(name, tcp).await?;
    let group = (tls.get_ref().1.negotiated_key_exchange_group())
        .context("no key exchange agreed")?
        .name();
    tls.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    Ok((group, status))
}
