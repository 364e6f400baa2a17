//! Where the gateway may send a browser back to after sign-in: its own host and the
//! configured ones, never anywhere else (no open redirect).

use url::Url;

#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    own_host: String,
    /// "example.com" exactly, or ".example.com" for it and every subdomain.
    allowed: Vec<String>,
}

impl RedirectPolicy {
    pub fn new(public_url: &Url, allowed: &[String]) -> Self {
        RedirectPolicy {
            own_host: public_url.host_str().unwrap_or("").to_ascii_lowercase(),
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Absolute http(s) URLs to an allowed host, or a path on our own host ("/x", not "//x").
    pub fn allowed(&self, target: &str) -> bool {
        if target.starts_with('/') {
            return !target.starts_with("//") && !target.starts_with("/\\");
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
        host == self.own_host
            || self.allowed.iter().any(|a| match a.strip_prefix('.') {
                Some(domain) => host == domain || host.ends_with(a.as_str()),
                None => host == *a,
            })
    }
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
        ] {
            assert!(!p.allowed(bad), "{bad}");
        }
    }
}
