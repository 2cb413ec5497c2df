//! The client's address behind trusted reverse proxies (issue #28).
//!
//! Behind a TLS reverse proxy every connection comes from the proxy, so
//! the per-address throttles (logins, registrations) would put every user
//! in one bucket. A proxy says whom it is forwarding for in `Forwarded`
//! (RFC 7239) or `X-Forwarded-For`, but any client can send those headers
//! too: they are believed only on a connection from a configured trusted
//! proxy ([`TrustedProxies`], `[gateway] trusted_proxies`).
//!
//! Each proxy appends the address it received the request from, so the
//! chain is read from the right (the nearest hop first): trusted proxies
//! are skipped, and the first hop that is not one is the client. Anything
//! to its left was written by the client and is never looked at. When that
//! hop names no address (`unknown`, an obfuscated `_name`, garbage), the
//! client cannot be told and the socket's address counts, as without a
//! proxy: skipping it would let a client name its own address to the left.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::http::HeaderMap;

/// An entry of `trusted_proxies` that is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted_proxies: {entry:?} is not an address or CIDR ({reason})")]
pub struct InvalidProxy {
    /// The entry as configured.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The reverse proxies whose forwarding headers are believed, as CIDRs.
/// Empty (the default): the headers are ignored and the socket's address
/// is the client's. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    /// Parses the configured entries: `10.0.0.0/8`, `::1/128`, or a bare
    /// address (one host). Refuses the first entry that is none of those,
    /// so a typo fails the start instead of silently trusting no one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidProxy> {
        entries
            .iter()
            .map(|e| {
                Cidr::parse(e.as_ref()).map_err(|reason| InvalidProxy {
                    entry: e.as_ref().to_owned(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|cidrs| Self(cidrs.into()))
    }

    /// How many CIDRs are trusted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is inside one of the trusted CIDRs (an IPv4-mapped
    /// IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client's address for a request that arrived from `peer` with
    /// `headers`: from `Forwarded`, else `X-Forwarded-For`, when `peer` is
    /// a trusted proxy; else `peer` itself (see the module documentation).
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut chain = forwarded_chain(headers);
        if chain.is_empty() {
            chain = x_forwarded_for_chain(headers);
        }
        let mut leftmost_trusted = None;
        for hop in chain.iter().rev() {
            match *hop {
                Hop::Addr(ip) if self.contains(ip) => leftmost_trusted = Some(ip),
                Hop::Addr(ip) => return ip,
                Hop::Unknown => return peer,
            }
        }
        // Every hop is a trusted proxy (or there is none): the farthest
        // one is as near the client as can be told.
        leftmost_trusted.unwrap_or(peer)
    }
}

/// An IP network: an address and a prefix length, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDR/LEN` or a bare `ADDR` (`/32` or `/128`). Host bits are
    /// dropped (`10.1.2.3/8` is `10.0.0.0/8`); an IPv4-mapped IPv6 network
    /// of at least `/96` is stored as its IPv4 network.
    fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| "not an IP address")?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or("the prefix length must be 0 to 32 for IPv4, 0 to 128 for IPv6")?,
        };
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_u32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_u128(prefix))),
        };
        Ok(Self { net, prefix })
    }

    /// Whether `ip` (canonical: no IPv4-mapped IPv6) is in the network.
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_u32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_u128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of 32 set.
fn mask_u32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The top `prefix` bits of 128 set.
fn mask_u128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// One hop of a forwarding chain: whom a proxy received the request from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// An address.
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, no `for=`, or unparsable.
    Unknown,
}

/// The `for=` hops of every `Forwarded` field, left to right. A field that
/// does not parse is one [`Hop::Unknown`]: only the client could have
/// written it to the left of a proxy's, and a proxy's own is a garbled hop.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Hop> {
    let mut chain = Vec::new();
    for field in headers.get_all(axum::http::header::FORWARDED) {
        match field.to_str().ok().and_then(forwarded_field) {
            Some(hops) => chain.extend(hops),
            None => chain.push(Hop::Unknown),
        }
    }
    chain
}

/// The hops of one `Forwarded` field: `for=192.0.2.60;proto=https,
/// for="[2001:db8::1]:4711"`. None when the field is malformed.
fn forwarded_field(field: &str) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for element in split_unquoted(field, ',')? {
        if element.trim().is_empty() {
            continue;
        }
        let mut hop = Hop::Unknown;
        for pair in split_unquoted(element, ';')? {
            let (name, value) = pair.split_once('=')?;
            if name.trim().eq_ignore_ascii_case("for") {
                hop = node(&unquote(value.trim())?);
            }
        }
        hops.push(hop);
    }
    Some(hops)
}

/// The hops of every `X-Forwarded-For` field, left to right (repeated
/// fields are one list, in the order received).
fn x_forwarded_for_chain(headers: &HeaderMap) -> Vec<Hop> {
    let mut chain = Vec::new();
    for field in headers.get_all("x-forwarded-for") {
        let Ok(field) = field.to_str() else {
            chain.push(Hop::Unknown);
            continue;
        };
        chain.extend(
            field
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(node),
        );
    }
    chain
}

/// `text` split at `sep` outside double quotes (a backslash escapes the
/// next character inside them). None when a quote is left open.
fn split_unquoted(text: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// A parameter value: a token as is, a quoted string without its quotes
/// and escapes. None for a stray quote.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A node name (RFC 7239 section 6): `192.0.2.43`, `192.0.2.43:47011`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`; a bare IPv6 address is taken
/// too (X-Forwarded-For writes them so). `unknown`, `_obfuscated` names
/// and anything else are [`Hop::Unknown`].
fn node(text: &str) -> Hop {
    let addr = if let Some(rest) = text.strip_prefix('[') {
        rest.split_once(']').and_then(|(ip, port)| {
            let ip = ip.parse::<Ipv6Addr>().ok()?;
            (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
                .then_some(IpAddr::V6(ip))
        })
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        Some(ip)
    } else {
        text.split_once(':').and_then(|(ip, port)| {
            let ip = ip.parse::<Ipv4Addr>().ok()?;
            is_port(port).then_some(IpAddr::V4(ip))
        })
    };
    addr.map_or(Hop::Unknown, |ip| Hop::Addr(ip.to_canonical()))
}

/// A port: a number, or an obfuscated `_name`.
fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
        || text.strip_prefix('_').is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).expect("test CIDRs")
    }

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    const PROXY: &str = "10.0.0.5";

    fn resolve(entries: &[&str], fields: &[(&'static str, &str)]) -> IpAddr {
        trusted(entries).client_addr(ip(PROXY), &headers(fields))
    }

    #[test]
    fn cidrs_parse_and_match() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1", "::1/128", "2001:db8::/32"]);
        for inside in [
            "10.0.0.1",
            "10.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8:ff::7",
        ] {
            assert!(t.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.1", "127.0.0.2", "::2", "2001:db9::1", "0.0.0.0"] {
            assert!(!t.contains(ip(outside)), "{outside}");
        }
        // An IPv4 peer on a dual-stack socket.
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(trusted(&["::ffff:10.0.0.0/104"]).contains(ip("10.9.9.9")));
        // Host bits are dropped; /0 is everything of its family.
        assert!(trusted(&["10.1.2.3/8"]).contains(ip("10.200.0.1")));
        assert!(trusted(&["0.0.0.0/0"]).contains(ip("203.0.113.9")));
        assert!(!trusted(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
        assert!(trusted(&["::/0"]).contains(ip("2001:db8::1")));
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn bad_cidrs_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "",
        ] {
            let err = TrustedProxies::parse(&[bad]).expect_err(bad);
            assert_eq!(err.entry, bad);
            assert!(err.to_string().contains("trusted_proxies"), "{err}");
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.2"),
        ]);
        assert_eq!(
            t.client_addr(ip("198.51.100.7"), &spoofed),
            ip("198.51.100.7")
        );
        assert_eq!(
            TrustedProxies::default().client_addr(ip("10.0.0.5"), &spoofed),
            ip("10.0.0.5")
        );
        // The socket's address is reported canonically.
        assert_eq!(
            t.client_addr(ip("::ffff:198.51.100.7"), &spoofed),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right() {
        let proxies = ["10.0.0.0/8"];
        let xff = |v| resolve(&proxies, &[("x-forwarded-for", v)]);
        assert_eq!(xff("203.0.113.1"), ip("203.0.113.1"));
        // The client's own claim to the left is not believed.
        assert_eq!(xff("1.2.3.4, 203.0.113.1"), ip("203.0.113.1"));
        // Trusted hops nearer than the client are skipped.
        assert_eq!(
            xff("1.2.3.4, 203.0.113.1, 10.0.0.9, 10.0.0.8"),
            ip("203.0.113.1")
        );
        // All trusted: the leftmost.
        assert_eq!(xff("10.0.0.7, 10.0.0.8"), ip("10.0.0.7"));
        // Ports, brackets, spaces, empty entries.
        assert_eq!(xff("203.0.113.1:5555"), ip("203.0.113.1"));
        assert_eq!(xff(" 2001:db8::1 ,"), ip("2001:db8::1"));
        assert_eq!(xff("[2001:db8::2]:443"), ip("2001:db8::2"));
        assert_eq!(xff("::ffff:203.0.113.3"), ip("203.0.113.3"));
    }

    #[test]
    fn repeated_fields_are_one_list() {
        let got = resolve(
            &["10.0.0.0/8"],
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "203.0.113.1, 10.0.0.9"),
            ],
        );
        assert_eq!(got, ip("203.0.113.1"));
        let got = resolve(
            &["10.0.0.0/8"],
            &[
                ("forwarded", "for=1.2.3.4"),
                ("forwarded", "for=203.0.113.1, for=10.0.0.9"),
            ],
        );
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn forwarded_is_read_per_rfc_7239() {
        let proxies = ["10.0.0.0/8", "2001:db8:ffff::/48"];
        let fwd = |v| resolve(&proxies, &[("forwarded", v)]);
        assert_eq!(fwd("for=203.0.113.1"), ip("203.0.113.1"));
        assert_eq!(fwd("For=\"203.0.113.1:4711\""), ip("203.0.113.1"));
        assert_eq!(fwd("for=\"[2001:db8::1]:4711\""), ip("2001:db8::1"));
        assert_eq!(fwd("for=\"[2001:db8::1]\";proto=https"), ip("2001:db8::1"));
        assert_eq!(
            fwd("proto=https;for=198.51.100.1;by=10.0.0.5, for=\"[2001:db8:ffff::3]\""),
            ip("198.51.100.1")
        );
        assert_eq!(
            fwd("for=1.2.3.4;host=\"a,b;c\", for=203.0.113.9"),
            ip("203.0.113.9")
        );
        // Forwarded wins over X-Forwarded-For.
        let got = resolve(
            &proxies,
            &[
                ("x-forwarded-for", "198.51.100.2"),
                ("forwarded", "for=198.51.100.3"),
            ],
        );
        assert_eq!(got, ip("198.51.100.3"));
    }

    #[test]
    fn an_anonymous_or_garbled_nearest_hop_counts_as_the_socket() {
        let proxies = ["10.0.0.0/8"];
        let peer = ip(PROXY);
        for (name, value) in [
            ("forwarded", "for=unknown"),
            ("forwarded", "for=_hidden"),
            ("forwarded", "for=\"_hidden:_port\""),
            // A name the client put to the left of an anonymous hop.
            ("forwarded", "for=203.0.113.1, for=unknown"),
            ("forwarded", "proto=https"),
            ("forwarded", "for=\"203.0.113.1"),
            ("forwarded", "for=\"[2001:db8::1\""),
            ("forwarded", "for=[2001:db8::1]:99999"),
            ("forwarded", "garbage"),
            ("x-forwarded-for", "unknown"),
            ("x-forwarded-for", "203.0.113.1, not-an-address"),
            ("x-forwarded-for", "203.0.113.1:port"),
            ("x-forwarded-for", "300.1.1.1"),
        ] {
            assert_eq!(resolve(&proxies, &[(name, value)]), peer, "{name}: {value}");
        }
        // No header, an empty one, or one that is not text.
        assert_eq!(resolve(&proxies, &[]), peer);
        assert_eq!(resolve(&proxies, &[("x-forwarded-for", "")]), peer);
        let mut map = HeaderMap::new();
        map.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.1\xff").expect("opaque bytes"),
        );
        assert_eq!(trusted(&proxies).client_addr(peer, &map), peer);
        // A client's garbage to the left of a proxy's hop changes nothing.
        let got = resolve(
            &proxies,
            &[
                ("forwarded", "for=\"unterminated"),
                ("forwarded", "for=203.0.113.1"),
            ],
        );
        assert_eq!(got, ip("203.0.113.1"));
        assert_eq!(
            resolve(&proxies, &[("x-forwarded-for", "junk, 203.0.113.1")]),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn ipv6_proxies_and_clients() {
        let t = trusted(&["::1"]);
        let h = headers(&[("x-forwarded-for", "2001:db8::42, ::1")]);
        assert_eq!(t.client_addr(ip("::1"), &h), ip("2001:db8::42"));
        let h = headers(&[("forwarded", "for=\"[2001:db8::43]:1\"")]);
        assert_eq!(t.client_addr(ip("::1"), &h), ip("2001:db8::43"));
        assert_eq!(t.client_addr(ip("::2"), &h), ip("::2"));
    }
}
