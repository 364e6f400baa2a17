//! Reading the caller's credentials (a Bearer header or the access cookie), the token
//! cookies themselves, and the CSRF rule for cookie-authenticated state changes.

use crate::sessions::TokenPair;
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, Method, header};

/// `__Host-`: Secure, no Domain, Path=/ — the browser guarantees this cookie came from us.
pub const ACCESS_COOKIE: &str = "__Host-authgate-access";
/// The access cookie shared with a domain (`server.cookie_domain`): `__Host-` forbids Domain.
pub const SHARED_ACCESS_COOKIE: &str = "__Secure-authgate-access";
/// `__Secure-` rather than `__Host-`: it is scoped to the auth prefix, which `__Host-` forbids.
/// The refresh endpoint reads it, and so does the login page, which refreshes an expired
/// browser session transparently; proxied applications never receive it.
pub const REFRESH_COOKIE: &str = "__Secure-authgate-refresh";
/// Which session this browser's refresh cookie belongs to (its id, which the applications
/// see in `X-Auth-Session-Id` anyway). `__Host-`: only the gateway can set it. A sibling
/// subdomain can plant a `__Secure-` refresh cookie on the auth prefix (with a longer path,
/// sent first) to sign the victim's browser in to the attacker's account; a refresh cookie
/// is believed only when it belongs to the session this cookie names.
pub const SESSION_COOKIE: &str = "__Host-authgate-session";
/// The hosted pages' double-submit CSRF cookie: `__Host-` so no subdomain can plant one.
pub const CSRF_COOKIE: &str = "__Host-authgate-csrf";

/// "This browser has signed in to this account before": its own budget while strangers
/// are locked out (see `accounts::bindings`). Long-lived; `__Host-` so no subdomain plants one.
pub const DEVICE_COOKIE: &str = "__Host-authgate-device";
/// "This browser chose the password at registration": verifying the address keeps it.
pub const SIGNUP_COOKIE: &str = "__Host-authgate-signup";

/// Every cookie the gateway sets: removed from requests before they go upstream (they are
/// the gateway's secrets, not the application's), and from upstream responses (an
/// application must not be able to set, replace or clear them).
pub const OWN_COOKIES: [&str; 7] = [
    ACCESS_COOKIE,
    SHARED_ACCESS_COOKIE,
    REFRESH_COOKIE,
    SESSION_COOKIE,
    CSRF_COOKIE,
    DEVICE_COOKIE,
    SIGNUP_COOKIE,
];

/// How long a device cookie lasts (browsers keep none longer than 400 days).
const DEVICE_COOKIE_AGE: i64 = 400 * 86_400;

/// How long the sign-up cookie lasts: long enough to find the code in one's mail tomorrow.
const SIGNUP_COOKIE_AGE: i64 = 7 * 86_400;

/// Sets the device cookie.
pub fn set_device_cookie(headers: &mut HeaderMap, token: &crate::secret::Secret) {
    set_cookie(
        headers,
        build(
            DEVICE_COOKIE,
            token.expose().to_string(),
            "/".into(),
            DEVICE_COOKIE_AGE,
        ),
    );
}

/// Sets the sign-up cookie.
pub fn set_signup_cookie(headers: &mut HeaderMap, token: &crate::secret::Secret) {
    set_cookie(
        headers,
        build(
            SIGNUP_COOKIE,
            token.expose().to_string(),
            "/".into(),
            SIGNUP_COOKIE_AGE,
        ),
    );
}

/// Clears the sign-up cookie (its address is verified).
pub fn clear_signup_cookie(headers: &mut HeaderMap) {
    set_cookie(headers, build(SIGNUP_COOKIE, String::new(), "/".into(), 0));
}

/// The Bearer token of the Authorization header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A cookie's value, from any of the request's Cookie headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<crate::secret::Secret> {
    cookies(headers, name)
        .next()
        .map(crate::secret::Secret::new)
}

/// Every value of a cookie, in the order the browser sent them (the longest path first).
fn cookies<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = String> + 'h {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(move |c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// The browser's own refresh cookie: of those that belong to the session its session cookie
/// names (see [`SESSION_COOKIE`]), the first this gateway issued (a sibling can plant one
/// that names the session, since applications see its id, but cannot make its MAC); none
/// without a session cookie.
pub fn refresh_cookie(
    headers: &HeaderMap,
    tokens: &crate::tokens::Tokens,
) -> Option<crate::secret::Secret> {
    let session = cookie(headers, SESSION_COOKIE)?;
    cookies(headers, REFRESH_COOKIE)
        .filter(|t| crate::tokens::Tokens::refresh_session(t) == Some(session.expose()))
        .find(|t| tokens.issued(t) != crate::tokens::Issued::No)
        .map(crate::secret::Secret::new)
}

/// Where the token cookies go: the auth prefix (refresh) and, optionally, a shared domain
/// (access).
#[derive(Debug, Clone)]
pub struct Cookies {
    prefix: String,
    own_host: String,
    domain: Option<String>,
}

impl Cookies {
    pub fn new(prefix: &str, public_url: &url::Url, domain: Option<&str>) -> Self {
        Cookies {
            prefix: prefix.to_string(),
            own_host: public_url.host_str().unwrap_or("").to_ascii_lowercase(),
            domain: domain.map(|d| d.trim_start_matches('.').to_ascii_lowercase()),
        }
    }

    /// Whether a browser at `host` sends the access cookie (our host, or within the domain).
    pub fn reach(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == self.own_host
            || self
                .domain
                .as_deref()
                .is_some_and(|d| crate::hosts::within(&host, d))
    }

    pub fn set_tokens(&self, headers: &mut HeaderMap, pair: &TokenPair) {
        let access_age = i64::try_from(pair.expires_in).unwrap_or(900);
        let refresh_age = i64::try_from(pair.refresh_expires_in).unwrap_or(0);
        let access = pair.access_token.expose().to_string();
        match &self.domain {
            None => set_cookie(
                headers,
                build(ACCESS_COOKIE, access, "/".into(), access_age),
            ),
            Some(d) => {
                let mut c = build(SHARED_ACCESS_COOKIE, access, "/".into(), access_age);
                c.set_domain(d.clone());
                set_cookie(headers, c);
            }
        }
        set_cookie(
            headers,
            build(
                REFRESH_COOKIE,
                pair.refresh_token.expose().to_string(),
                refresh_path(&self.prefix),
                refresh_age,
            ),
        );
        set_cookie(
            headers,
            build(
                SESSION_COOKIE,
                pair.session_id.clone(),
                "/".into(),
                refresh_age,
            ),
        );
        clear_legacy_refresh_cookie(headers, &self.prefix);
    }

    pub fn clear_tokens(&self, headers: &mut HeaderMap) {
        set_cookie(headers, build(ACCESS_COOKIE, String::new(), "/".into(), 0));
        if let Some(d) = &self.domain {
            let mut c = build(SHARED_ACCESS_COOKIE, String::new(), "/".into(), 0);
            c.set_domain(d.clone());
            set_cookie(headers, c);
        }
        set_cookie(
            headers,
            build(REFRESH_COOKIE, String::new(), refresh_path(&self.prefix), 0),
        );
        set_cookie(headers, build(SESSION_COOKIE, String::new(), "/".into(), 0));
        clear_legacy_refresh_cookie(headers, &self.prefix);
    }
}

fn set_cookie(headers: &mut HeaderMap, c: Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        headers.append(header::SET_COOKIE, v);
    }
}

fn build<'a>(name: &'a str, value: String, path: String, max_age: i64) -> Cookie<'a> {
    Cookie::build((name, value))
        .path(path)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// The refresh cookie's path: only the gateway's own endpoints ever receive it.
pub fn refresh_path(auth_prefix: &str) -> String {
    auth_prefix.to_string()
}

/// Removes the refresh cookie of builds before the hosted pages, scoped to the refresh
/// endpoint: a browser would send it first, and refreshing with that rotated-away token
/// would revoke the session.
fn clear_legacy_refresh_cookie(headers: &mut HeaderMap, auth_prefix: &str) {
    set_cookie(
        headers,
        build(
            REFRESH_COOKIE,
            String::new(),
            format!("{auth_prefix}/token/refresh"),
            0,
        ),
    );
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A state-changing request authenticated by cookie must come from our own origin:
/// `Sec-Fetch-Site: same-origin` (or `none`, a typed URL), or an `Origin` equal to ours.
/// Requests with neither header are refused: browsers send one of them on every such request.
pub fn csrf_ok(method: &Method, headers: &HeaderMap, our_origin: &str) -> bool {
    if is_safe(method) {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => origin
            .trim_end_matches('/')
            .eq_ignore_ascii_case(our_origin),
        None => false,
    }
}

/// `scheme://host[:port]` of a URL, as browsers write it in `Origin`.
pub fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map from name-value pairs (repeated names kept), for tests.
    pub fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(&h(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(
            bearer(&h(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(bearer(&h(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&h(&[("authorization", "Bearer ")])), None);
        let m = h(&[("cookie", "a=1; __Host-authgate-access=tok; b=2")]);
        assert_eq!(
            cookie(&m, ACCESS_COOKIE)
                .as_ref()
                .map(crate::secret::Secret::expose),
            Some("tok")
        );
    }

    #[test]
    fn a_refresh_cookie_counts_only_for_its_session_and_only_if_issued() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::clock::ManualClock::starting_now();
        let tokens = crate::tokens::tests::tokens(Default::default(), dir.path(), &clock);
        let mine = tokens.new_refresh("s1").unwrap().expose().to_string();
        let planted = tokens.new_refresh("s2").unwrap().expose().to_string();
        let both = format!("{REFRESH_COOKIE}={planted}; {REFRESH_COOKIE}={mine}");
        let with_session = format!("{both}; {SESSION_COOKIE}=s1");
        let got = refresh_cookie(&h(&[("cookie", &with_session)]), &tokens).unwrap();
        assert_eq!(got.expose(), mine);
        // No session cookie (a browser that never signed in here), or another session's.
        assert!(refresh_cookie(&h(&[("cookie", &both)]), &tokens).is_none());
        let other = format!("{REFRESH_COOKIE}={planted}; {SESSION_COOKIE}=s1");
        assert!(refresh_cookie(&h(&[("cookie", &other)]), &tokens).is_none());
        // One that names the session but that the gateway never issued (its id is no
        // secret), sent first: passed over for the real one.
        let forged = format!("rt2.s1.{}.{}", "A".repeat(43), "B".repeat(22));
        let cookie =
            format!("{REFRESH_COOKIE}={forged}; {REFRESH_COOKIE}={mine}; {SESSION_COOKIE}=s1");
        let got = refresh_cookie(&h(&[("cookie", &cookie)]), &tokens).unwrap();
        assert_eq!(got.expose(), mine);
    }

    #[test]
    fn csrf_rule() {
        let o = "https://gw.example";
        assert!(csrf_ok(&Method::GET, &h(&[]), o));
        assert!(!csrf_ok(&Method::POST, &h(&[]), o));
        assert!(csrf_ok(
            &Method::POST,
            &h(&[("sec-fetch-site", "same-origin")]),
            o
        ));
        assert!(!csrf_ok(
            &Method::POST,
            &h(&[("sec-fetch-site", "cross-site")]),
            o
        ));
        assert!(csrf_ok(
            &Method::POST,
            &h(&[("origin", "https://gw.example")]),
            o
        ));
        assert!(!csrf_ok(
            &Method::POST,
            &h(&[("origin", "https://evil.example")]),
            o
        ));
    }

    #[test]
    fn cookies_have_the_right_attributes() {
        let pair = TokenPair {
            access_token: crate::secret::Secret::new("a"),
            refresh_token: crate::secret::Secret::new("r"),
            expires_in: 900,
            refresh_expires_in: 3600,
            session_id: "s".into(),
        };
        let mut m = HeaderMap::new();
        let url = url::Url::parse("https://gw.example").unwrap();
        Cookies::new("/auth", &url, None).set_tokens(&mut m, &pair);
        let all: Vec<&str> = m
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            all[0].starts_with("__Host-authgate-access=a")
                && all[0].contains("Path=/;")
                && all[0].contains("HttpOnly")
                && all[0].contains("Secure")
                && all[0].contains("SameSite=Lax"),
            "{}",
            all[0]
        );
        assert!(
            all[1].starts_with("__Secure-authgate-refresh=r") && all[1].contains("Path=/auth;"),
            "{}",
            all[1]
        );
        assert!(!all[0].contains("Domain"), "host-only by default");

        // With a cookie domain, the access cookie is shared under the __Secure- name.
        let shared = Cookies::new("/auth", &url, Some(".example"));
        let mut m = HeaderMap::new();
        shared.set_tokens(&mut m, &pair);
        let first = m.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        assert!(
            first.starts_with("__Secure-authgate-access=a") && first.contains("Domain=example"),
            "{first}"
        );
        assert!(shared.reach("app.example") && shared.reach("gw.example"));
        assert!(!shared.reach("example.evil") && !shared.reach("badexample"));
        assert!(Cookies::new("/auth", &url, None).reach("GW.example"));
        assert!(!Cookies::new("/auth", &url, None).reach("app.example"));
    }
}
