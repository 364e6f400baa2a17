//! Where the gateway may send a browser back to after sign-in: its own host and the
//! configured ones, never anywhere else (no open redirect).

use crate::http::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use url::Url;

#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    own_host: String,
    /// The gateway's own origin: on its own host, only its scheme and port (another port of
    /// the same name is another service, and `http` a downgrade).
    own_origin: url::Origin,
    /// "example.com" exactly, or ".example.com" for it and every subdomain.
    allowed: Vec<String>,
}

impl RedirectPolicy {
    pub fn new(public_url: &Url, allowed: &[String]) -> Self {
        RedirectPolicy {
            own_host: public_url.host_str().unwrap_or("").to_ascii_lowercase(),
            own_origin: public_url.origin(),
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Absolute http(s) URLs to an allowed host, or a path on our own host ("/x", not "//x").
    /// Only printable ASCII without spaces or backslashes: browsers drop tabs and newlines and
    /// read `\` as `/`, so `/\t/evil.test` would otherwise leave as `//evil.test`.
    pub fn allowed(&self, target: &str) -> bool {
        if !target.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
            return false;
        }
        if target.starts_with('/') {
            return !target.starts_with("//");
        }
        let Ok(url) = Url::parse(target) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        (host == self.own_host && url.origin() == self.own_origin)
            || self.allowed.iter().any(|a| match a.strip_prefix('.') {
                Some(domain) => host == domain || host.ends_with(a.as_str()),
                None => host == *a,
            })
    }
}

/// The hosted login page and the return URLs it accepts: what both doors (proxy and
/// forward-auth) send an unauthenticated browser to.
#[derive(Debug, Clone)]
pub struct LoginPage {
    policy: RedirectPolicy,
    /// `{public_url}{prefix}/login`.
    login: Url,
    /// `{public_url}{prefix}/ui/step-up`.
    step_up: Url,
    public_host: String,
    public_scheme: String,
}

impl LoginPage {
    pub fn new(public_url: &Url, prefix: &str, allowed: &[String]) -> Self {
        let mut login = public_url.clone();
        login.set_path(&format!("{prefix}/login"));
        login.set_query(None);
        let mut step_up = login.clone();
        step_up.set_path(&format!("{prefix}/ui/step-up"));
        LoginPage {
            step_up,
            policy: RedirectPolicy::new(public_url, allowed),
            login,
            public_host: public_url.host_str().unwrap_or("").to_ascii_lowercase(),
            public_scheme: public_url.scheme().to_string(),
        }
    }

    pub fn policy(&self) -> &RedirectPolicy {
        &self.policy
    }

    /// The return URL for a request to `host` (port included) and `path_and_query`: a path
    /// when the host is our own, an absolute URL otherwise; `None` when the policy refuses it.
    pub fn back_url(&self, scheme: Option<&str>, host: Option<&str>, pq: &str) -> Option<String> {
        let own = host
            .is_none_or(|h| crate::hosts::strip_port(h).eq_ignore_ascii_case(&self.public_host));
        let back = match host {
            Some(h) if !own => format!("{}://{h}{pq}", scheme.unwrap_or(&self.public_scheme)),
            _ => pq.to_string(),
        };
        self.policy.allowed(&back).then_some(back)
    }

    /// The login page's URL, carrying the return URL in `rd`.
    pub fn url(&self, back: Option<&str>) -> Url {
        let mut u = self.login.clone();
        if let Some(b) = back {
            u.query_pairs_mut().append_pair("rd", b);
        }
        u
    }

    /// The step-up page's URL (a second factor for a signed-in session), with `rd`.
    pub fn step_up_url(&self, back: Option<&str>) -> Url {
        let mut u = self.step_up.clone();
        if let Some(b) = back {
            u.query_pairs_mut().append_pair("rd", b);
        }
        u
    }

    /// A 302 to the login page.
    pub fn redirect(&self, back: Option<&str>) -> Response<Body> {
        found(self.url(back))
    }

    /// A 302 to the step-up page.
    pub fn redirect_step_up(&self, back: Option<&str>) -> Response<Body> {
        found(self.step_up_url(back))
    }
}

fn found(to: Url) -> Response<Body> {
    let mut r = Response::new(crate::http::body::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(to.as_str()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A top-level browser navigation (not an API call, not a sub-resource): the requests that
/// are better answered with the login page than with a 401.
pub fn is_navigation(method: &http::Method, headers: &http::HeaderMap) -> bool {
    if !matches!(*method, http::Method::GET | http::Method::HEAD) {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode == "navigate";
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_and_configured_hosts() {
        let p = RedirectPolicy::new(
            &Url::parse("https://gw.example.com").unwrap(),
            &["app.test".into(), ".corp.test".into()],
        );
        for ok in [
            "/dashboard",
            "https://gw.example.com/x",
            "https://GW.example.com:443/x",
            "https://app.test/a?b=1",
            "http://a.corp.test/",
            "https://corp.test",
        ] {
            assert!(p.allowed(ok), "{ok}");
        }
        for bad in [
            "//evil.test/x",
            "/\\evil.test",
            "https://evil.test",
            "https://app.test.evil.test",
            "javascript:alert(1)",
            "https://evilcorp.test",
            "https://user@app.test/",
            "ftp://app.test/",
            "/\t/evil.test",
            "/\n/evil.test",
            "/\r\n/evil.test",
            "/ /evil.test",
            "/\t\\evil.test",
            "/a\\b",
            "/caf\u{e9}",
            "https://app.test\t.evil.test/",
            // The gateway's own host on another port or scheme: another service, a downgrade.
            "http://gw.example.com/x",
            "https://gw.example.com:8443/x",
            "http://gw.example.com:1/x",
        ] {
            assert!(!p.allowed(bad), "{bad}");
        }
    }

    #[test]
    fn back_urls_and_login_url() {
        let p = LoginPage::new(
            &Url::parse("https://gw.test:8443").unwrap(),
            "/auth",
            &["app.test".into()],
        );
        assert_eq!(
            p.back_url(None, Some("GW.test:8443"), "/x?y=1").as_deref(),
            Some("/x?y=1")
        );
        assert_eq!(
            p.back_url(Some("https"), Some("app.test"), "/a").as_deref(),
            Some("https://app.test/a")
        );
        assert_eq!(p.back_url(Some("https"), Some("evil.test"), "/a"), None);
        assert_eq!(
            p.url(Some("/x?y=1")).as_str(),
            "https://gw.test:8443/auth/login?rd=%2Fx%3Fy%3D1"
        );
    }
}
