//! Header rewriting for the upstream request and the client response: hop-by-hop headers
//! out, spoofable headers out, identity and X-Forwarded-* in.

use crate::config::IdentityHeaders;

use crate::identity::IdentityValues;
use crate::override_names::OVERRIDE_HEADERS;
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// obsolete ones proxies still meet. A static, not a const: a const array would be built
/// and dropped again at every use.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    // h2c's upgrade settings: meaningless without the upgrade, which is never tunnelled.
    HeaderName::from_static("http2-settings"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The identity header names, parsed once, and the other names no client may send upstream.
#[derive(Debug, Clone)]
pub struct IdentityNames {
    user_id: HeaderName,
    email: HeaderName,
    name: HeaderName,
    roles: HeaderName,
    session_id: HeaderName,
    access_token: Option<HeaderName>,
    amr: Option<HeaderName>,
    /// Removed, never added: the override headers not kept by configuration.
    strip_only: Vec<HeaderName>,
}

impl IdentityNames {
    pub fn new(cfg: &IdentityHeaders, keep_overrides: &[HeaderName]) -> Self {
        let names = cfg.resolve();
        IdentityNames {
            user_id: names.user_id,
            email: names.email,
            name: names.name,
            roles: names.roles,
            session_id: names.session_id,
            access_token: names.access_token,
            amr: names.amr,
            strip_only: OVERRIDE_HEADERS
                .iter()
                .filter(|n| !keep_overrides.contains(n))
                .cloned()
                .collect(),
        }
    }

    /// Whether the access token itself is forwarded (so the proxy only copies it when asked).
    pub fn forwards_token(&self) -> bool {
        self.access_token.is_some()
    }

    /// Removes every identity header, whatever the client put there.
    pub fn strip(&self, h: &mut HeaderMap) {
        // Nearly every request carries none: one pass over its names costs less than six
        // lookups that miss (this runs on every proxied request).
        if !h
            .keys()
            .any(|k| k.as_str().contains('_') || self.all().any(|n| n == k))
        {
            return;
        }
        for n in self.all() {
            h.remove(n);
        }
        // CGI-style servers (Rack/Puma, some WSGI and PHP setups) read `X_Auth_User_Id` as
        // `X-Auth-User-Id`: such look-alikes of our names go too. Rare, so only looked for
        // when some header name has an underscore.
        if h.keys().any(|k| k.as_str().contains('_')) {
            let lookalikes: Vec<HeaderName> = h
                .keys()
                .filter(|k| k.as_str().contains('_'))
                .filter(|k| {
                    let dashed = k.as_str().replace('_', "-");
                    // Kept override headers included: what the rules judged is the header
                    // itself, never a look-alike the application would read the same.
                    self.all()
                        .chain(OVERRIDE_HEADERS.iter())
                        .any(|n| n.as_str() == dashed)
                })
                .cloned()
                .collect();
            for k in lookalikes {
                h.remove(k);
            }
        }
    }

    /// The identity header names (the access token's too, when forwarded).
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.user_id,
            &self.email,
            &self.name,
            &self.roles,
            &self.session_id,
        ]
        .into_iter()
        .chain(self.access_token.as_ref())
        .chain(self.amr.as_ref())
    }

    /// The override headers that are kept for the upstream (see `proxy.keep_override_headers`).
    pub fn kept_overrides(&self) -> impl Iterator<Item = &'static HeaderName> + '_ {
        OVERRIDE_HEADERS
            .iter()
            .filter(|n| !self.strip_only.contains(n))
    }

    fn all(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.user_id,
            &self.email,
            &self.name,
            &self.roles,
            &self.session_id,
        ]
        .into_iter()
        .chain(self.access_token.as_ref())
        .chain(self.amr.as_ref())
        .chain(self.strip_only.iter())
    }

    /// Adds the identity of the signed-in caller (values made once per token).
    pub fn insert(&self, h: &mut HeaderMap, id: &IdentityValues, access_token: Option<&str>) {
        for (n, v) in [
            (&self.user_id, &id.user_id),
            (&self.email, &id.email),
            (&self.name, &id.name),
            (&self.roles, &id.roles),
            (&self.session_id, &id.session_id),
        ] {
            if let Some(v) = v {
                h.insert(n.clone(), v.clone());
            }
        }
        if let (Some(n), Some(v)) = (&self.amr, &id.amr) {
            h.insert(n.clone(), v.clone());
        }
        if let (Some(n), Some(t)) = (&self.access_token, access_token) {
            if let Ok(v) = HeaderValue::from_str(t) {
                h.insert(n.clone(), v);
            }
        }
    }
}

/// Removes the gateway's own cookies (the tokens) from the Cookie header: they are secrets for
/// the gateway, not the application. Other cookies pass untouched.
pub fn strip_own_cookies(h: &mut HeaderMap, names: &[&str]) {
    let touched = h.get_all(header::COOKIE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| names.iter().any(|n| s.contains(n)))
    });
    if !touched {
        return;
    }
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        // Named as the gateway's cookie parser names it (spaces around the name trimmed),
        // so that a cookie the gateway reads is one it removes.
        .filter(|c| {
            let name = c.split('=').next().map(str::trim);
            !names.iter().any(|n| name == Some(*n))
        })
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
}

/// Removes an upstream's `Set-Cookie` lines for the gateway's own cookie names (compared
/// without regard to case, as browsers compare the `__Host-` and `__Secure-` prefixes).
pub fn drop_own_set_cookies(h: &mut HeaderMap, names: &[&str]) {
    let ours = |v: &HeaderValue| {
        let name = v
            .as_bytes()
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    };
    if !h.get_all(header::SET_COOKIE).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !ours(v))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// True when the request asks for a WebSocket upgrade, the one upgrade the gateway tunnels:
/// `Upgrade: websocket` alone (any case) with `Connection: upgrade`. Any other protocol
/// (h2c above all: the client would then speak HTTP/2 to the upstream, past every rule) is
/// not an upgrade here, and its headers are removed as hop-by-hop.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    let mut values = h.get_all(header::UPGRADE).iter();
    let websocket = match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket")),
        _ => false,
    };
    websocket && connection_has(h, "upgrade")
}

/// Whether an upstream's 101 switches to WebSocket (and to nothing else).
pub fn is_websocket_switch(h: &HeaderMap) -> bool {
    is_upgrade(h)
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` are put back afterwards.
pub fn remove_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds which of the nine are there: most requests carry none
    // (h2 cannot), and most upstream responses only `Connection: keep-alive`, so the lookups
    // that would miss are never made.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            if let Some(p) = present.get_mut(i) {
                *p = true;
                any = true;
            }
        }
    }
    if !any {
        return;
    }
    let upgrade = if keep_upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // `Connection` is in the list, so the headers it names are never missed. Its usual
    // tokens (close, keep-alive, upgrade) name nothing to remove beyond the list itself.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|n| t.eq_ignore_ascii_case(n.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for (n, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            h.remove(n);
        }
    }
    if let Some(u) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
    }
}

/// What the gateway knows of the request, for the X-Forwarded-* family.
#[derive(Debug)]
pub struct Forwarding<'a> {
    pub peer_ip: std::net::IpAddr,
    /// `peer_ip` as a header value ([`ip_value`]).
    pub peer_value: &'a HeaderValue,
    pub client_ip: std::net::IpAddr,
    pub peer_trusted: bool,
    pub scheme: &'static str,
    /// Visible ASCII only (as `RequestCtx::host` keeps it).
    pub host: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
}

/// Sets X-Forwarded-For/-Proto/-Host, X-Real-IP and X-Request-Id. What an untrusted client
/// sent under these names (and `Forwarded`) is replaced, never passed on.
pub fn set_forwarding(h: &mut HeaderMap, f: &Forwarding<'_>) {
    let xff = match (f.peer_trusted, joined(h, &X_FORWARDED_FOR)) {
        (true, Some(prev)) => HeaderValue::from_str(&format!("{prev}, {}", f.peer_ip)).ok(),
        _ => Some(f.peer_value.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !(f.peer_trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        h.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(f.scheme),
        );
    }
    if !(f.peer_trusted && h.contains_key(&X_FORWARDED_HOST)) {
        match f.host.cloned() {
            Some(v) => {
                h.insert(X_FORWARDED_HOST.clone(), v);
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !f.peer_trusted {
        h.remove(header::FORWARDED);
    }
    let real = if f.client_ip == f.peer_ip {
        f.peer_value.clone()
    } else {
        ip_value(f.client_ip)
    };
    h.insert(X_REAL_IP.clone(), real);
    h.insert(X_REQUEST_ID.clone(), f.request_id.clone());
}

/// An IP address as a header value (digits, dots, colons and hex: always a valid one).
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Several header lines of one name, as one comma-separated value.
fn joined(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // The usual upstream response: only `Connection` itself goes, and what it names.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "Keep-Alive, close, X-A".parse().unwrap(),
        );
        h.insert("x-a", "1".parse().unwrap());
        h.insert("x-b", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-b"));
    }

    #[test]
    fn own_cookies_are_removed() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; __Host-authgate-access=tok".parse().unwrap(),
        );
        h.append(
            header::COOKIE,
            "__Secure-authgate-refresh=r; b=2".parse().unwrap(),
        );
        strip_own_cookies(
            &mut h,
            &["__Host-authgate-access", "__Secure-authgate-refresh"],
        );
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(
            header::COOKIE,
            "__Host-authgate-access=tok".parse().unwrap(),
        );
        strip_own_cookies(&mut only, &["__Host-authgate-access"]);
        assert!(!only.contains_key(header::COOKIE));
        // A space before the `=` names the same cookie to the parser, and so here.
        let mut spaced = HeaderMap::new();
        spaced.insert(
            header::COOKIE,
            "a=1; __Host-authgate-access =tok".parse().unwrap(),
        );
        strip_own_cookies(&mut spaced, &["__Host-authgate-access"]);
        assert_eq!(spaced[header::COOKIE], "a=1");
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn untrusted_forwarding_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, "6.6.6.6".parse().unwrap());
        h.insert(&X_FORWARDED_PROTO, "gopher".parse().unwrap());
        h.insert(header::FORWARDED, "for=6.6.6.6".parse().unwrap());
        let id = HeaderValue::from_static("rid");
        let f = Forwarding {
            peer_ip: "8.8.8.8".parse().unwrap(),
            peer_value: &HeaderValue::from_static("8.8.8.8"),
            client_ip: "8.8.8.8".parse().unwrap(),
            peer_trusted: false,
            scheme: "https",
            host: Some(&HeaderValue::from_static("app.example")),
            request_id: &id,
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h[&X_FORWARDED_FOR], "8.8.8.8");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
        assert!(!h.contains_key(header::FORWARDED));
        assert_eq!(h[&X_REQUEST_ID], "rid");
    }

    #[test]
    fn trusted_forwarding_is_extended() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.insert(&X_FORWARDED_PROTO, "https".parse().unwrap());
        let id = HeaderValue::from_static("rid");
        let f = Forwarding {
            peer_ip: "10.0.0.1".parse().unwrap(),
            peer_value: &HeaderValue::from_static("10.0.0.1"),
            client_ip: "1.1.1.1".parse().unwrap(),
            peer_trusted: true,
            scheme: "http",
            host: Some(&HeaderValue::from_static("app.example")),
            request_id: &id,
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_REAL_IP], "1.1.1.1");
    }
}
