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
    pub auth_prefix: String,
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
    pub max_connections: usize,
    /// Open connections one client address may hold (an IPv6 /64 counts as one address);
    /// `server.trusted_proxies` are not counted. Past it, new connections are closed at once.
    pub max_connections_per_ip: usize,
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
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
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
            auth_prefix: "/auth".into(),
            metrics_listen: None,
            metrics_on_main_listener: false,
            redirect_http_listen: None,
            trusted_proxies: Vec::new(),
            allowed_redirect_hosts: Vec::new(),
            cookie_domain: None,
            demo_upstream: false,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 512,
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 128,
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
