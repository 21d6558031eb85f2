//! Which bundle URLs a load request may make the server fetch.
//!
//! A load request names a URL and the server fetches it: at the edge that is
//! a server-side request forgery hole unless the deployer says which hosts
//! are fine. So requested fetches go only to hosts (or URL prefixes) on an
//! allowlist, none when the list is empty, and never to link-local or cloud
//! metadata addresses unless one is named on the list by its address. Every
//! redirect is checked against the same rules, and so is every address a
//! host name resolves to, so neither a redirect nor DNS can lead elsewhere.
//! Bundles named at startup are the deployer's own configuration and do not
//! pass through here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

/// A host bundles may come from: `*` (any, still no link-local/metadata
/// address), or a name or address with an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRule {
    /// Any host.
    Any,
    /// One host (normalised: lowercase name, canonical address).
    Host {
        /// The host as the URL parser writes it (IPv6 in brackets).
        host: String,
        /// The only port allowed; any when `None`.
        port: Option<u16>,
    },
}

/// A malformed allowlist entry.
#[derive(Debug, thiserror::Error)]
#[error("invalid bundle allowlist entry '{entry}': {message}")]
pub struct BadRule {
    entry: String,
    message: String,
}

impl FromStr for HostRule {
    type Err = BadRule;

    fn from_str(entry: &str) -> Result<HostRule, BadRule> {
        let bad = |message: &str| BadRule {
            entry: entry.to_owned(),
            message: message.into(),
        };
        if entry == "*" {
            return Ok(HostRule::Any);
        }
        if let Ok(v6) = entry.parse::<Ipv6Addr>() {
            return Ok(HostRule::Host {
                host: format!("[{v6}]"),
                port: None,
            });
        }
        // `[v6]:port`, `name:port`, or no port.
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (!host.contains(':') || host.ends_with(']')) =>
            {
                let port = port.parse().map_err(|_| bad("the port is not a number"))?;
                (host, Some(port))
            }
            _ => (entry, None),
        };
        let host = Host::parse(host).map_err(|e| {
            bad(&format!(
                "not a host name or address ({e}); expected HOST or HOST:PORT"
            ))
        })?;
        Ok(HostRule::Host {
            host: host.to_string(),
            port,
        })
    }
}

/// A URL prefix bundles may come from, e.g. `https://models.example.com/edge/`:
/// same scheme, host and port, and a path under the prefix's path.
#[derive(Clone, Debug)]
pub struct UrlPrefix(Url);

impl FromStr for UrlPrefix {
    type Err = BadRule;

    fn from_str(entry: &str) -> Result<UrlPrefix, BadRule> {
        let bad = |message: String| BadRule {
            entry: entry.to_owned(),
            message,
        };
        let url = Url::parse(entry).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad("expected an http:// or https:// URL with a host".into()));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("a prefix has no query, fragment or user".into()));
        }
        Ok(UrlPrefix(url))
    }
}

impl UrlPrefix {
    fn matches(&self, url: &Url) -> bool {
        let (prefix, path) = (self.0.path(), url.path());
        self.0.scheme() == url.scheme()
            && self.0.host() == url.host()
            && self.0.port_or_known_default() == url.port_or_known_default()
            // `/models` allows `/models/x` but not `/models-private/x`.
            && (path == prefix
                || path.starts_with(prefix)
                    && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
    }
}

/// Where load requests may fetch bundles from.
#[derive(Clone, Debug, Default)]
pub struct FetchAllowList {
    /// Allowed hosts (`--bundle-allow-host`).
    pub hosts: Vec<HostRule>,
    /// Allowed URL prefixes (`--bundle-allow-url-prefix`).
    pub url_prefixes: Vec<UrlPrefix>,
}

/// Why a requested fetch was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Refusal {
    /// No allowlist: load requests may not name bundles at all.
    #[error(
        "bundle URLs in load requests are not allowed: the server has no --bundle-allow-host or --bundle-allow-url-prefix"
    )]
    NoAllowList,
    /// The URL is on no list.
    #[error(
        "{url} is not allowed: its host is not in --bundle-allow-host and it is under no --bundle-allow-url-prefix"
    )]
    NotListed {
        /// The URL (the redirect's target, for a redirect).
        url: String,
    },
    /// The URL or a redirect names a link-local or metadata address.
    #[error(
        "{url} is not allowed: {addr} is a link-local or cloud metadata address (name it in --bundle-allow-host to allow it)"
    )]
    Forbidden {
        /// The URL.
        url: String,
        /// The address.
        addr: IpAddr,
    },
    /// The host name resolves only to link-local or metadata addresses.
    #[error("{host} is not allowed: it resolves only to link-local or cloud metadata addresses")]
    ResolvesForbidden {
        /// The host name.
        host: String,
    },
    /// The URL cannot be parsed.
    #[error("{url} is not allowed: {message}")]
    Unparsable {
        /// The URL.
        url: String,
        /// The parser's complaint.
        message: String,
    },
}

impl FetchAllowList {
    /// Checks `url`, the one requested or a redirect's target.
    pub fn check(&self, url: &Url) -> Result<(), Refusal> {
        if self.hosts.is_empty() && self.url_prefixes.is_empty() {
            return Err(Refusal::NoAllowList);
        }
        let port = url.port_or_known_default();
        let listed = self.url_prefixes.iter().any(|p| p.matches(url))
            || self.hosts.iter().any(|rule| match rule {
                HostRule::Any => true,
                HostRule::Host { host, port: only } => {
                    url.host_str() == Some(host.as_str()) && only.is_none_or(|p| Some(p) == port)
                }
            });
        if !listed {
            return Err(Refusal::NotListed {
                url: url.to_string(),
            });
        }
        let addr = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if forbidden(addr) && !self.named_addresses().contains(&addr) {
            return Err(Refusal::Forbidden {
                url: url.to_string(),
                addr,
            });
        }
        Ok(())
    }

    /// Checks a URL as the load request gave it.
    pub fn check_str(&self, url: &str) -> Result<(), Refusal> {
        let parsed = Url::parse(url).map_err(|e| Refusal::Unparsable {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        self.check(&parsed)
    }

    /// Addresses named on the list, which are allowed even when link-local.
    fn named_addresses(&self) -> Vec<IpAddr> {
        let rules = self.hosts.iter().filter_map(|rule| match rule {
            HostRule::Host { host, .. } => Some(host.as_str()),
            HostRule::Any => None,
        });
        let prefixes = self.url_prefixes.iter().filter_map(|p| p.0.host_str());
        rules
            .chain(prefixes)
            .filter_map(|host| host.trim_matches(['[', ']']).parse().ok())
            .collect()
    }

    /// A redirect policy that follows only to URLs this list allows.
    pub fn redirects(&self) -> reqwest::redirect::Policy {
        let list = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match list.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(refusal),
            }
        })
    }

    /// A resolver that drops link-local and metadata addresses (unless
    /// named on the list) from what host names resolve to.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            allowed: self.named_addresses(),
        })
    }
}

/// As many as reqwest's own default policy follows.
const MAX_REDIRECTS: usize = 10;

/// Whether `addr` is link-local or a cloud metadata service's address:
/// 169.254.0.0/16 (AWS, GCP, Azure, OpenStack metadata), fe80::/10, AWS's
/// IPv6 metadata fd00:ec2::254, Alibaba's 100.100.100.200, and the same
/// IPv4 addresses mapped into IPv6.
pub fn forbidden(addr: IpAddr) -> bool {
    const ALIBABA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    const AWS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match addr {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == ALIBABA,
        IpAddr::V6(v6) => {
            v6.is_unicast_link_local()
                || v6 == AWS_V6
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| forbidden(IpAddr::V4(v4)))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves with the system resolver (as reqwest does by default), then
/// keeps only addresses that are not [`forbidden`] unless named.
pub struct GuardedResolver {
    allowed: Vec<IpAddr>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = keep_allowed(found, &allowed);
            if kept.is_empty() {
                return Err(Box::new(Refusal::ResolvesForbidden { host }) as BoxError);
            }
            Ok::<Addrs, BoxError>(Box::new(kept.into_iter()))
        })
    }
}

fn keep_allowed(found: Vec<SocketAddr>, allowed: &[IpAddr]) -> Vec<SocketAddr> {
    found
        .into_iter()
        .filter(|a| !forbidden(a.ip()) || allowed.contains(&a.ip()))
        .collect()
}

/// The [`Refusal`] somewhere in `error`'s chain of sources (a redirect
/// policy's or the resolver's, wrapped by reqwest and hyper).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(hosts: &[&str], prefixes: &[&str]) -> FetchAllowList {
        FetchAllowList {
            hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
            url_prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn allowed(list: &FetchAllowList, url: &str) -> bool {
        list.check_str(url).is_ok()
    }

    #[test]
    fn hosts_and_prefixes_allow_only_what_they_name() {
        let l = list(
            &[
                "models.example.com",
                "127.0.0.1:9000",
                "[::1]:9001",
                "fd00::7",
            ],
            &["https://cdn.example.org/edge/"],
        );
        for url in [
            "https://models.example.com/a.tar",
            "http://MODELS.example.com:8080/a.tar",
            "http://127.0.0.1:9000/a",
            "http://[::1]:9001/a",
            "http://[fd00::7]:81/a",
            "https://cdn.example.org/edge/m.tar.gz",
        ] {
            assert!(allowed(&l, url), "{url}");
        }
        for url in [
            "https://models.example.com.evil.net/a.tar",
            "http://127.0.0.1:9001/a",
            "http://[::1]:9000/a",
            "https://cdn.example.org/other/m.tar.gz",
            "https://cdn.example.org/edge/../other/m.tar.gz",
            "http://cdn.example.org/edge/m.tar.gz",
            "https://evil.example/a",
        ] {
            assert!(!allowed(&l, url), "{url}");
        }
        let strict = list(&[], &["https://h/models"]);
        assert!(allowed(&strict, "https://h/models/a.tar"));
        assert!(!allowed(&strict, "https://h/models-private/a.tar"));
        assert!(matches!(
            FetchAllowList::default().check_str("https://h/a"),
            Err(Refusal::NoAllowList)
        ));
    }

    #[test]
    fn link_local_and_metadata_addresses_need_naming() {
        let any = list(&["*"], &[]);
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/",
            "http://[fe80::1]/a",
            "http://[::ffff:169.254.169.254]/a",
            "http://100.100.100.200/a",
            // Other spellings of 169.254.169.254 parse to the same address.
            "http://0xa9fea9fe/a",
            "http://2852039166/a",
        ] {
            let err = any.check_str(url).unwrap_err();
            assert!(matches!(err, Refusal::Forbidden { .. }), "{url}: {err}");
        }
        assert!(allowed(&any, "http://10.1.2.3/a"));
        let named = list(&["169.254.10.5"], &[]);
        assert!(allowed(&named, "http://169.254.10.5/a"));
        let v4 = |a: [u8; 4]| SocketAddr::from((a, 80));
        let found = vec![
            v4([169, 254, 169, 254]),
            v4([10, 0, 0, 1]),
            v4([169, 254, 10, 5]),
        ];
        assert_eq!(keep_allowed(found.clone(), &[]), vec![v4([10, 0, 0, 1])]);
        assert_eq!(
            keep_allowed(found, &["169.254.10.5".parse().unwrap()]),
            vec![v4([10, 0, 0, 1]), v4([169, 254, 10, 5])]
        );
        for bad in ["", "a b", "host:port:x", "http://x/"] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad}");
        }
    }
}
