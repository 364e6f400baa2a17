//! `[server]`: listeners, TLS, the public URL and auth prefix, connection limits.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `false` serves plain HTTP, for deployments behind another TLS terminator.
    pub tls: bool,
    /// When neither `tls_cert` nor `tls_key` is set, a self-signed development certificate is
    /// made under `certs/` on first start and reused after.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub public_url: Url,
    pub auth_prefix: AuthPrefix,
    pub metrics_listen: Option<SocketAddr>,
    /// Also answer /metrics on the main listener, to loopback and trusted proxies (off: a
    /// TLS-terminating front that forwards every path would hand them to anyone, and nothing
    /// tells its requests from a local scrape). On when running without a configuration
    /// file.
    pub metrics_on_main_listener: bool,
    /// A second, plain-HTTP listener that redirects every request to `public_url`.
    pub redirect_http_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    /// Hosts the browser may be sent back to after sign-in besides public_url's:
    /// "app.example.com" exactly, ".example.com" for it and every subdomain.
    pub allowed_redirect_hosts: Vec<String>,
    /// Share the access cookie with this domain and its subdomains (single sign-on across
    /// apps on several hosts). Unset: the cookie is for public_url's host alone.
    pub cookie_domain: Option<String>,
    /// Serve the bundled demo application at `/` when no route is configured (on when running
    /// without a configuration file).
    pub demo_upstream: bool,
    #[serde(with = "duration::serde_str")]
    pub handshake_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub header_read_timeout: Duration,
    pub max_connections: NonZeroUsize,
    /// Open connections one client address may hold (an IPv6 /64 counts as one address);
    /// `server.trusted_proxies` are not counted. Past it, new connections are closed at once.
    pub max_connections_per_ip: NonZeroUsize,
    /// A connection with no request in flight for this long is closed (HTTP/2; an HTTP/1.1
    /// connection waits at most `header_read_timeout` for its next request).
    #[serde(with = "duration::serde_str")]
    pub idle_timeout: Duration,
    /// A response under way that moves nothing for this long (a client that reads nothing,
    /// an HTTP/2 window never opened, an upstream that sends nothing) is cut, with its
    /// connection.
    #[serde(with = "duration::serde_str")]
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: NonZeroUsize,
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 without TLS ("prior knowledge") on a plain listener, beside HTTP/1.1: the
    /// connection's first bytes are read to tell them apart. Off, a plain listener speaks
    /// HTTP/1.1 only. TLS listeners choose by ALPN either way.
    pub h2c: bool,
    #[serde(with = "duration::serde_str")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: true,
            tls_cert: None,
            tls_key: None,
            public_url: Url::parse("https://localhost:8443").unwrap_or_else(|_| unreachable_url()),
            auth_prefix: AuthPrefix::default(),
            metrics_listen: None,
            metrics_on_main_listener: false,
            redirect_http_listen: None,
            trusted_proxies: Vec::new(),
            allowed_redirect_hosts: Vec::new(),
            cookie_domain: None,
            demo_upstream: false,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            max_connections_per_ip: NonZeroUsize::new(512).unwrap_or(NonZeroUsize::MIN),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_headers: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            h2_max_concurrent_streams: 128,
            h2c: false,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

// A literal URL that always parses; kept out of line so the default reads plainly.
#[allow(clippy::panic)]
fn unreachable_url() -> Url {
    panic!("built-in default URL does not parse")
}

pub const DEV_CERT: &str = "certs/dev-cert.pem";
pub const DEV_KEY: &str = "certs/dev-key.pem";

impl ServerConfig {
    /// The certificate and key paths, and whether a dev certificate may be generated there.
    pub fn tls_files(&self) -> (PathBuf, PathBuf, bool) {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            _ => (PathBuf::from(DEV_CERT), PathBuf::from(DEV_KEY), true),
        }
    }
}

impl ServerConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        // Host names only: they also go into the pages' Content-Security-Policy.
        let not_a_host = |h: &str| {
            let name = h.strip_prefix('.').unwrap_or(h);
            name.is_empty()
                || name.starts_with('.')
                || name.ends_with('.')
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if let Some(domain) = &self.cookie_domain {
            let public = self
                .public_url
                .host_str()
                .unwrap_or("")
                .to_ascii_lowercase();
            let domain = domain.trim_start_matches('.').to_ascii_lowercase();
            if not_a_host(&domain) || !crate::hosts::within(&public, &domain) {
                return Err(ConfigError::key(
                    "server.cookie_domain",
                    "must be a domain name that public_url's host is in (\"example.com\" for \"auth.example.com\")",
                ));
            }
        }
        if let Some(bad) = self.allowed_redirect_hosts.iter().find(|h| not_a_host(h)) {
            return Err(ConfigError::key(
                "server.allowed_redirect_hosts",
                format!(
                    "{bad:?} is not a host name (\"app.example.com\", or \".example.com\" for a domain and its subdomains)"
                ),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let key = if self.tls_cert.is_some() {
                "server.tls_key"
            } else {
                "server.tls_cert"
            };
            return Err(ConfigError::key(
                key,
                "tls_cert and tls_key must be set together",
            ));
        }
        if !matches!(self.public_url.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        positive(&[
            ("server.handshake_timeout", self.handshake_timeout),
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.send_timeout", self.send_timeout),
        ])?;
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::key(
                "server.max_header_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}

/// `server.auth_prefix`, where the gateway answers its own endpoints: a normalized path that
/// starts with '/', does not end with one, and is not '/' alone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AuthPrefix(String);

impl TryFrom<String> for AuthPrefix {
    type Error = &'static str;

    fn try_from(p: String) -> Result<Self, Self::Error> {
        let shaped = p.starts_with('/') && p.len() >= 2 && !p.ends_with('/');
        if !shaped || crate::urlpath::normalize(&p).as_deref() != Ok(p.as_str()) {
            return Err(
                "must start with '/', not end with '/', not be '/' alone, and be a normalized path",
            );
        }
        Ok(AuthPrefix(p))
    }
}

impl Default for AuthPrefix {
    fn default() -> Self {
        AuthPrefix("/auth".into())
    }
}

impl std::ops::Deref for AuthPrefix {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AuthPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for AuthPrefix {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
