//! The one notion of "the client's IP address": the socket peer, unless the peer is a
//! configured trusted proxy, in which case `X-Forwarded-For` (or `Forwarded`) is believed.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request arriving from `peer`.
    ///
    /// Walks the forwarding chain from the nearest hop outwards and stops at the first address
    /// that is not a trusted proxy: addresses further left were written by the client itself.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut current = peer;
        let hops = forwarded_for(headers);
        for hop in hops.iter().rev() {
            current = *hop;
            if !self.contains(*hop) {
                return *hop;
            }
        }
        current
    }
}

/// IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) are treated as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The forwarding chain, nearest hop last; `X-Forwarded-For` wins over `Forwarded`.
/// Unparseable entries end the chain there (everything left of them is untrusted anyway).
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let entries: Vec<String> = if !xff.is_empty() {
        xff.into_iter().map(str::to_string).collect()
    } else {
        headers
            .get_all(http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|elem| {
                elem.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for")
                        .then(|| v.trim_matches('"').to_string())
                })
            })
            .collect()
    };
    let mut out = Vec::with_capacity(entries.len());
    // Keep only the valid suffix: parse from the right, stop at the first bad entry.
    for e in entries.iter().rev() {
        match parse_addr(e) {
            Some(ip) => out.push(canonical(ip)),
            None => break,
        }
    }
    out.reverse();
    out
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]`, `[::1]:5678`, `::1`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, _port) = s.rsplit_once(':')?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            trusted().client_ip("8.8.8.8".parse().unwrap(), &h),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn trusted_peer_walks_the_chain() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 2.2.2.2, 10.1.1.1")]);
        assert_eq!(
            trusted().client_ip("127.0.0.1".parse().unwrap(), &h),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let none = HeaderMap::new();
        assert_eq!(
            trusted().client_ip("10.0.0.5".parse().unwrap(), &none),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_header_is_read() {
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.9",
        )]);
        assert_eq!(
            trusted().client_ip("127.0.0.1".parse().unwrap(), &h),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn garbage_stops_the_walk() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, junk, 3.3.3.3")]);
        assert_eq!(
            trusted().client_ip("127.0.0.1".parse().unwrap(), &h),
            "3.3.3.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn mapped_v4_is_canonical() {
        let h = HeaderMap::new();
        assert_eq!(
            trusted().client_ip("::ffff:127.0.0.1".parse().unwrap(), &h),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
