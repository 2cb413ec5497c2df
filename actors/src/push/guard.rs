//! The SSRF guard: Web Push endpoints come from users, so a node must never
//! be made to send requests to its own network (loopback, private ranges,
//! link-local and cloud metadata, unique-local, CGNAT, multicast).
//!
//! Checked twice: when a subscription is registered (scheme, host names,
//! IP literals: a clear 400), and on every connection, by the resolver the
//! HTTP client uses ([`GuardedResolver`]), which drops every non-public
//! address a name resolves to, so a name that points inside (or is
//! re-pointed there later, DNS rebinding) is never connected to. The client
//! follows no redirect and uses no proxy. Hosts in `allow_insecure` skip
//! both checks (development and tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Host names that are never public, whatever they resolve to.
fn is_internal_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host == "metadata"
        || host == "metadata.google.internal"
        || host.ends_with(".localhost")
        || host.ends_with(".internal")
        || host.ends_with(".local")
        || host.ends_with(".localdomain")
        || !host.contains('.')
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network"
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254)              // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 88 && c == 99)    // 6to4 relay
        || (a == 192 && b == 168)              // private
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded_v4(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2])); // 6to4
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]     // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00         // unique local
        || (s[0] & 0xffc0) == 0xfe80         // link-local
        || (s[0] & 0xffc0) == 0xfec0         // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00         // multicast
        || (s[0] == 0x2001 && s[1] == 0)     // Teredo
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The hosts exempt from the guard.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Arc<Vec<String>>);

impl AllowList {
    /// From `push.allow_insecure`.
    pub fn new(hosts: &[String]) -> Self {
        Self(Arc::new(
            hosts
                .iter()
                .map(|h| {
                    h.trim_matches(|c| c == '[' || c == ']')
                        .to_ascii_lowercase()
                })
                .collect(),
        ))
    }

    /// Whether `host` (as written in a URL) is exempt.
    pub fn allows(&self, host: &str) -> bool {
        let host = host
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        self.0.contains(&host)
    }
}

/// Checks an endpoint URL before anything is stored or sent: `https`, a
/// host, no credentials, and no internal name or non-public IP literal.
pub fn check_endpoint(endpoint: &str, allow: &AllowList) -> Result<Url, Refused> {
    let url = Url::parse(endpoint).map_err(|e| Refused(format!("not a URL: {e}")))?;
    let host = url
        .host()
        .ok_or_else(|| Refused("the URL has no host".into()))?;
    let host_str = url.host_str().unwrap_or_default();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused("the URL must not carry credentials".into()));
    }
    let allowed = allow.allows(host_str);
    match url.scheme() {
        "https" => {}
        "http" if allowed => {}
        "http" => return Err(Refused("must be https".into())),
        other => return Err(Refused(format!("scheme {other} is not https"))),
    }
    if allowed {
        return Ok(url);
    }
    match host {
        Host::Ipv4(ip) if !is_public_v4(ip) => {
            Err(Refused(format!("{ip} is not a public address")))
        }
        Host::Ipv6(ip) if !is_public_v6(ip) => {
            Err(Refused(format!("{ip} is not a public address")))
        }
        Host::Domain(name) if is_internal_name(name) => {
            Err(Refused(format!("{name} is an internal host name")))
        }
        _ => Ok(url),
    }
}

/// The resolver of the push client: resolves with the system resolver,
/// then keeps only public addresses (all of them for allowed hosts). A name
/// with none left fails with [`Refused`] and nothing is connected to.
/// (Internal names are refused earlier, by [`check_endpoint`]; this checks
/// what a name really resolves to, at connection time.)
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: AllowList,
}

impl GuardedResolver {
    /// A resolver exempting `allow`.
    pub fn new(allow: AllowList) -> Self {
        Self { allow }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.allow.allows(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allowed || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(Refused(format!("{host} resolves to no public address")))
                        as Box<dyn std::error::Error + Send + Sync>,
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a request failed because the guard refused its address.
pub fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<Refused>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().expect(ip);
            assert!(!is_public(ip), "{ip} passed as public");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4001::1",
        ] {
            let ip: IpAddr = ip.parse().expect(ip);
            assert!(is_public(ip), "{ip} refused");
        }
    }

    #[tokio::test]
    async fn the_resolver_never_connects_to_inside_addresses() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                // Read the request head first: an answer before the request
                // is an unexpected message to the client.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let client = |allow: &[&str]| {
            let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
            reqwest::Client::builder()
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver::new(AllowList::new(&allow))))
                .build()
                .expect("client")
        };
        // `localhost` resolves to loopback only: nothing is left to dial.
        let url = format!("http://localhost:{port}/");
        let err = client(&[]).get(&url).send().await.expect_err("refused");
        assert!(is_refusal(&err), "{err:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
        // The allow-list lets it through (the control: the listener works).
        let ok = client(&["localhost"])
            .get(&url)
            .send()
            .await
            .expect("allowed");
        assert_eq!(ok.status().as_u16(), 204);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn endpoints_are_checked_before_storing() {
        let none = AllowList::default();
        for bad in [
            "http://push.example.com/x",
            "ftp://push.example.com/x",
            "https://169.254.169.254/latest",
            "https://localhost:6379/",
            "https://[::1]:2375/x",
            "https://10.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://metadata.google.internal/",
            "https://user:pw@push.example.com/",
            "https://intranet/",
            "not a url",
        ] {
            assert!(check_endpoint(bad, &none).is_err(), "{bad} accepted");
        }
        assert!(check_endpoint("https://push.example.com/send/abc", &none).is_ok());
        let local = AllowList::new(&["127.0.0.1".into()]);
        assert!(check_endpoint("http://127.0.0.1:9999/x", &local).is_ok());
        assert!(check_endpoint("http://127.0.0.2:9999/x", &local).is_err());
    }
}
