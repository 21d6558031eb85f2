//! A rustls client on aws-lc-rs, as the server's own, for the TLS tests and
//! the handshake bench: it can be limited to some key exchange groups and
//! reports the one each handshake agreed.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{NamedGroup, RootCertStore};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

/// A client trusting `roots` that offers the key exchange `groups`
/// (aws-lc-rs's defaults, the post-quantum hybrid first: `None`).
pub fn connector(roots: RootCertStore, groups: Option<&[NamedGroup]>) -> TlsConnector {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(groups) = groups {
        provider.kx_groups.retain(|g| groups.contains(&g.name()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Over a fresh connection to 127.0.0.1:`port`: the handshake, then `GET
/// path` (the connection closing after it), its answer read to the end.
/// Returns the group the handshake agreed and the whole answer.
pub async fn get(
    connector: &TlsConnector,
    port: u16,
    path: &str,
) -> std::io::Result<(NamedGroup, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address is a server name");
    let mut tls = connector.connect(name, tcp).await?;
    let group = (tls.get_ref().1.negotiated_key_exchange_group())
        .ok_or_else(|| std::io::Error::other("the handshake agreed no key exchange"))?
        .name();
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok((group, answer))
}
