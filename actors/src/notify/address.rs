//! Where webhook and Slack requests may go: http(s) URLs only, and — unless
//! `notifications.allow_private_addresses` — never to loopback, private, link-local or other
//! internal addresses, checked on the URL and again on every DNS answer, so that a channel cannot
//! be used to probe the internal network (including by a name that resolves inward).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

/// Longest URL a channel may hold.
const MAX_URL_LEN: usize = 2048;

/// A connection refused because the address is internal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefusedAddress(pub String);

/// True for addresses that are not on the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64 well-known prefix
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved
}

/// Parses and checks a webhook or Slack URL; the error is a message for the user.
pub fn check_url(raw: &str, allow_internal: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be http or https, not {}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".to_owned());
    }
    let Some(host) = url.host_str() else {
        return Err("has no host".to_owned());
    };
    if allow_internal {
        return Ok(url);
    }
    let refused = |what: &str| {
        Err(format!(
            "points at {what}, which is refused unless notifications.allow_private_addresses \
             (VARDO_ALLOW_PRIVATE_WEBHOOKS) is set"
        ))
    };
    match literal_ip(&url) {
        Some(ip) if is_internal(ip) => refused("a private or loopback address"),
        Some(_) => Ok(url),
        None if is_local_name(host) => refused("a local host name"),
        None => Ok(url),
    }
}

/// Names that resolve to this machine or the local network by convention.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.ends_with(".local")
        || name.ends_with(".internal")
        || !name.contains('.')
}

/// The DNS resolver of the notification HTTP client: refuses answers with internal addresses,
/// so that the name checked is the address connected to.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_internal: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_internal;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow || !is_internal(a.ip()))
                .collect();
            if usable.is_empty() {
                let why: Box<dyn std::error::Error + Send + Sync> = if found.is_empty() {
                    format!("{host} has no address").into()
                } else {
                    Box::new(RefusedAddress(format!(
                        "{host} resolves only to private or loopback addresses, which are refused \
                         unless notifications.allow_private_addresses is set"
                    )))
                };
                return Err(why);
            }
            let addrs: reqwest::dns::Addrs = Box::new(usable.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver as reqwest takes it.
pub fn resolver(allow_internal: bool) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { allow_internal })
}

/// The URL's host when it is an IP literal (reqwest does not resolve those).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
        assert!(!is_internal(IpAddr::V6(std::net::Ipv6Addr::new(
            0x2a00, 0x1450, 0, 0, 0, 0, 0, 1
        ))));
    }

    #[test]
    fn urls_must_be_public_http_unless_allowed() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://localhost/",
            "http://metadata.google.internal/",
            "http://169.254.169.254/latest",
            "http://intranet/",
            "https://user:pw@example.com/",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} accepted");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(
            check_url("ftp://127.0.0.1/", true).is_err(),
            "scheme still checked"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_inward() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let guard = GuardedResolver {
            allow_internal: false,
        };
        let err = match guard.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        assert!(err.downcast_ref::<RefusedAddress>().is_some(), "{err}");
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let addrs: Vec<_> = GuardedResolver {
            allow_internal: true,
        }
        .resolve(name)
        .await
        .expect("allowed")
        .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
