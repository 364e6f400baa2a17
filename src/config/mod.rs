//! Configuration: the TOML file, environment overrides and secret files, parsed into typed,
//! validated values. A bad value fails at start with the offending key named.

pub mod duration;
mod source;

pub use source::{MapSource, ProcessEnv, Source};

use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// A configuration problem, naming the key (`section.key`) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file is not valid TOML: {0}")]
    Syntax(String),
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key this error is about, when it is about one.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
    #[serde(default)]
    pub passwords: PasswordsConfig,
    #[serde(default)]
    pub otp: OtpConfig,
    #[serde(default)]
    pub mail: MailConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which engine keeps the data.
    pub backend: StoreBackend,
    /// The sled directory.
    pub path: PathBuf,
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
    /// PostgreSQL: `postgres://user:password@host:port/database?sslmode=require` (or `url_file`).
    pub url: Option<String>,
    /// PostgreSQL: CA certificates (PEM) to trust for the database's TLS besides the
    /// webpki roots (a private CA, or a cloud provider's).
    pub tls_ca: Option<PathBuf>,
    /// PostgreSQL: connections per instance.
    pub pool_size: usize,
    /// PostgreSQL: connecting (and waiting for a pooled connection) gives up after this.
    #[serde(with = "duration::serde_str")]
    pub connect_timeout: Duration,
    /// PostgreSQL: a statement running longer is cancelled.
    #[serde(with = "duration::serde_str")]
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sled,
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            path: PathBuf::from("data/authgate.db"),
            cache_mb: 64,
            url: None,
            tls_ca: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// The PostgreSQL connection settings (`None` for sled).
    pub fn postgres(&self) -> Option<crate::store::PgOptions> {
        (self.backend == StoreBackend::Postgres).then(|| crate::store::PgOptions {
            url: self.url.clone().unwrap_or_default(),
            tls_ca: self.tls_ca.clone(),
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Accounts may be created without a password and sign in by emailed code only.
    pub allow_passwordless: bool,
    /// Roles every new account gets.
    pub default_roles: Vec<String>,
    /// Size cap of the free-form `profile` object, as JSON.
    pub profile_max_bytes: usize,
    /// Lifetime of the token handed out by `/password/reset/verify`.
    #[serde(with = "duration::serde_str")]
    pub reset_token_ttl: Duration,
    /// Size cap of a request body to the account endpoints (413 past it).
    pub max_body_bytes: usize,
    /// Time allowed to receive a request body (408 after).
    #[serde(with = "duration::serde_str")]
    pub body_timeout: Duration,
    /// How recent the sign-in must be for an account without a password to change its email
    /// address (accounts with one type it instead).
    #[serde(with = "duration::serde_str")]
    pub recent_sign_in: Duration,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            allow_passwordless: true,
            default_roles: vec!["customer".into()],
            profile_max_bytes: 4096,
            reset_token_ttl: Duration::from_secs(15 * 60),
            max_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            recent_sign_in: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// argon2id passes (OWASP: 2).
    pub iterations: u32,
    /// argon2id lanes (OWASP: 1).
    pub parallelism: u32,
    /// Hashes computed at once; 0 means one per CPU core.
    pub workers: usize,
    /// Hash requests waiting or running before new ones get 503 SERVICE_BUSY; 0 means 8 per
    /// worker, so a queued request waits at most ~8 hash times (~0.2-0.3 s), never a client
    /// timeout.
    pub max_queue: usize,
    /// Longest a hash request waits for a free hashing thread before 503 SERVICE_BUSY.
    #[serde(with = "duration::serde_str")]
    pub max_wait: Duration,
    /// CPU priority of the hashing threads (Linux), so a login storm cannot slow proxied
    /// traffic.
    pub priority: HashPriority,
    pub min_length: usize,
    pub max_length: usize,
    /// Minimum zxcvbn score (0-4) a new password needs; 2 refuses common and guessable ones.
    pub min_strength: u8,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        PasswordsConfig {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            workers: 0,
            max_queue: 0,
            max_wait: Duration::from_millis(500),
            priority: HashPriority::Idle,
            min_length: 8,
            max_length: 128,
            min_strength: 2,
        }
    }
}

/// How the hashing threads share contended cores with the serving threads (Linux; elsewhere
/// they run at the process's priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashPriority {
    /// SCHED_IDLE: hash only on cores that nothing else wants, and give them up at once when a
    /// serving thread wakes.
    Idle,
    /// nice 19: a small share of contended cores.
    Low,
    /// The process's own priority.
    Normal,
    /// nice 10, for the one thread that takes over jobs the SCHED_IDLE threads have left
    /// waiting (not a setting: `idle` brings it).
    #[serde(skip)]
    Fallback,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpConfig {
    /// Digits per code.
    pub length: usize,
    #[serde(with = "duration::serde_str")]
    pub ttl: Duration,
    /// Wrong tries per code; at the limit the code is dead (ATTEMPTS_EXCEEDED).
    pub max_attempts: u32,
    /// Time between two codes sent to one address for one purpose (429 OTP_STILL_VALID).
    #[serde(with = "duration::serde_str")]
    pub resend_cooldown: Duration,
    /// Failed codes and passwords, across codes, before the account is locked (USER_BLOCKED).
    pub lockout_threshold: u32,
    #[serde(with = "duration::serde_str")]
    pub lockout_duration: Duration,
}

impl Default for OtpConfig {
    fn default() -> Self {
        OtpConfig {
            length: 6,
            ttl: Duration::from_secs(600),
            max_attempts: 5,
            resend_cooldown: Duration::from_secs(60),
            lockout_threshold: 10,
            lockout_duration: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Upgrade when the server offers STARTTLS.
    #[default]
    Opportunistic,
    /// Refuse to send unless the connection is upgraded.
    Required,
    /// Plain text (tests, local relays only).
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub from: String,
    /// `smtp://host:port` (STARTTLS per `starttls`) or `smtps://host:port` (implicit TLS);
    /// credentials may be in the URL. When unset, mail goes to `outbox_dir`.
    pub smtp_url: Option<Url>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub starttls: StartTls,
    /// Extra CA certificate (PEM) trusted for the SMTP server, besides the webpki roots.
    pub smtp_ca: Option<PathBuf>,
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Each mail is written here as an .eml file when no smtp_url is set.
    pub outbox_dir: PathBuf,
    /// Mails waiting to be sent; when full, new ones are dropped and counted.
    pub queue_size: usize,
    /// Delivery attempts per mail.
    pub attempts: u32,
    /// Also print each code in the log (development only; on by default when running
    /// without a configuration file).
    pub log_codes: bool,
    /// The name used in subjects and bodies.
    pub product_name: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            from: "authgate <no-reply@localhost>".into(),
            smtp_url: None,
            smtp_username: None,
            smtp_password: None,
            starttls: StartTls::Opportunistic,
            smtp_ca: None,
            timeout: Duration::from_secs(10),
            outbox_dir: PathBuf::from("data/outbox"),
            queue_size: 1000,
            attempts: 3,
            log_codes: false,
            product_name: "authgate".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, Default)]
pub enum TokenAlgorithm {
    #[default]
    EdDSA,
    ES256,
    HS256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Signing algorithm of access tokens; verification accepts this one only.
    pub algorithm: TokenAlgorithm,
    /// Signing keys, made on first start (files readable by their owner only).
    pub keys_dir: PathBuf,
    #[serde(with = "duration::serde_str")]
    pub access_ttl: Duration,
    /// Idle lifetime: a refresh token unused this long is dead.
    #[serde(with = "duration::serde_str")]
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session (a signed-in device), however active.
    #[serde(with = "duration::serde_str")]
    pub session_ttl: Duration,
    /// Sessions (signed-in devices) one account may have at once; a sign-in past it ends the
    /// oldest.
    pub max_sessions_per_account: usize,
    /// A rotated refresh token presented again within this window gets the same new pair
    /// (parallel refreshes); after it, reuse revokes the whole session.
    #[serde(with = "duration::serde_str")]
    pub refresh_reuse_grace: Duration,
    /// `iss` of access tokens; server.public_url when empty.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "duration::serde_str")]
    pub leeway: Duration,
    /// Verified access tokens remembered, so the common request costs a hash lookup.
    pub cache_entries: usize,
    /// The key outside the store (base64 of at least 32 random bytes; usually given as
    /// `secret_key_file`) from which the keys that protect codes and tokens in the store are
    /// derived. Unset: `keys_dir/secrets.key`, made on first start (one instance only: a
    /// PostgreSQL deployment must give every instance the same key).
    pub secret_key: Option<crate::secret::Secret>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            algorithm: TokenAlgorithm::EdDSA,
            keys_dir: PathBuf::from("data/keys"),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            session_ttl: Duration::from_secs(90 * 86_400),
            max_sessions_per_account: 50,
            refresh_reuse_grace: Duration::from_secs(5),
            issuer: String::new(),
            audience: "authgate".into(),
            leeway: Duration::from_secs(30),
            cache_entries: 100_000,
            secret_key: None,
        }
    }
}

impl TokensConfig {
    pub fn issuer(&self, server: &ServerConfig) -> String {
        if self.issuer.is_empty() {
            server.public_url.as_str().trim_end_matches('/').to_string()
        } else {
            self.issuer.clone()
        }
    }
}

/// "10/1m": at most 10 at once, one more every 6 s (a GCRA bucket: burst 10, refilled over 1m).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (n, per) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected COUNT/PERIOD such as \"10/1m\""))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a count"))?;
        let per = duration::parse(per)?;
        if count == 0 || per.is_zero() {
            return Err(format!("{s:?}: count and period must be greater than zero"));
        }
        Ok(Rate { count, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn rates(list: &[&str]) -> Vec<Rate> {
    list.iter().filter_map(|r| r.parse().ok()).collect()
}

/// Per-class quotas. Each list holds buckets that all apply (a burst and a sustained rate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub login_per_ip: Vec<Rate>,
    pub login_per_account: Vec<Rate>,
    pub code_verify_per_ip: Vec<Rate>,
    pub code_verify_per_account: Vec<Rate>,
    pub code_send_per_ip: Vec<Rate>,
    pub code_send_per_recipient: Vec<Rate>,
    pub refresh_per_ip: Vec<Rate>,
    /// Proxied requests per client IP (none by default).
    pub proxy_per_ip: Vec<Rate>,
    /// Keys one limiter holds at most; beyond, new keys are refused until a purge makes room.
    pub max_keys: usize,
    /// Instances sharing one store behind a load balancer: each enforces 1/instances of every
    /// quota in its own memory (no database round trip per request), so the whole deployment
    /// allows about the configured rate.
    pub instances: u32,
    /// How long the account endpoints hold a 429 or 503 before answering it (never longer
    /// than its Retry-After): a client retrying at once is slowed to one try per delay per
    /// connection, and a flood costs a timer instead of CPU. Applies with `enabled = false`
    /// too (a full hashing queue, a code resent too soon).
    #[serde(with = "duration::serde_str")]
    pub refusal_delay: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            login_per_ip: rates(&["20/1m", "200/1h"]),
            login_per_account: rates(&["10/1m", "50/1h"]),
            code_verify_per_ip: rates(&["30/1m", "300/1h"]),
            code_verify_per_account: rates(&["10/1m", "60/1h"]),
            code_send_per_ip: rates(&["10/1m", "100/1h"]),
            code_send_per_recipient: rates(&["5/10m", "20/1d"]),
            refresh_per_ip: rates(&["120/1m"]),
            proxy_per_ip: Vec::new(),
            max_keys: 100_000,
            instances: 1,
            refusal_delay: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Answer USER_DOES_NOT_EXIST / ALREADY_VERIFIED explicitly instead of the same answer
    /// for every address.
    pub reveal_account_existence: bool,
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(with = "duration::serde_str")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream to answer with response headers.
    #[serde(with = "duration::serde_str")]
    pub response_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream by each serving thread.
    pub pool_max_idle_per_host: usize,
    /// Extra CA certificates (PEM) trusted for `https://` upstreams, besides the webpki roots.
    pub upstream_ca: Option<PathBuf>,
    /// Method- and URL-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
    /// `X-Method-Override`, `X-Original-URL`, `X-Rewrite-URL`) passed to upstreams. Removed by
    /// default: an application that obeys one acts on another method or path than the one a
    /// route rule was matched on.
    pub keep_override_headers: Vec<String>,
    /// Connections to one upstream open at once, across serving threads; past it a request
    /// waits `connect_timeout` for one, then gets 503 SERVICE_BUSY.
    pub max_connections_per_upstream: usize,
    /// Proxied requests one client address may have under way at once (503 past it).
    pub max_requests_per_ip: usize,
    /// A WebSocket tunnel across which nothing has gone either way for this long is closed.
    #[serde(with = "duration::serde_str")]
    pub tunnel_idle_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            upstream_ca: None,
            keep_override_headers: Vec::new(),
            max_connections_per_upstream: 1024,
            max_requests_per_ip: 256,
            tunnel_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Which family of identity header names to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeaderPreset {
    /// X-Auth-User-Id, X-Auth-User-Email, X-Auth-User-Name, X-Auth-User-Roles, X-Auth-Session-Id.
    #[default]
    Authgate,
    /// Authelia's: Remote-User (the username, else the email), Remote-Email, Remote-Groups,
    /// plus Remote-User-Id and Remote-Session-Id.
    Authelia,
}

/// Names of the identity headers added for the upstream (and stripped from every request).
/// A preset gives every name; a key set here overrides its name.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub preset: HeaderPreset,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Option<String>,
    pub session_id: Option<String>,
    /// When set, the access token itself is forwarded under this name.
    pub access_token: Option<String>,
}

/// The resolved names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaderNames {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub roles: String,
    pub session_id: String,
    pub access_token: Option<String>,
}

impl IdentityHeaders {
    pub fn resolve(&self) -> IdentityHeaderNames {
        let (user_id, email, name, roles, session_id) = match self.preset {
            HeaderPreset::Authgate => (
                "X-Auth-User-Id",
                "X-Auth-User-Email",
                "X-Auth-User-Name",
                "X-Auth-User-Roles",
                "X-Auth-Session-Id",
            ),
            HeaderPreset::Authelia => (
                "Remote-User-Id",
                "Remote-Email",
                "Remote-User",
                "Remote-Groups",
                "Remote-Session-Id",
            ),
        };
        let pick = |set: &Option<String>, default: &str| {
            set.clone().unwrap_or_else(|| default.to_string())
        };
        IdentityHeaderNames {
            user_id: pick(&self.user_id, user_id),
            email: pick(&self.email, email),
            name: pick(&self.name, name),
            roles: pick(&self.roles, roles),
            session_id: pick(&self.session_id, session_id),
            access_token: self.access_token.clone().filter(|n| !n.is_empty()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `authgate=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Public,
    /// The safe default: a route that forgets `access` is protected.
    #[default]
    Authenticated,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A name for metrics and logs; the path prefix when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Matched case-insensitively without the port; any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    pub upstream: Url,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Methods this route accepts (any when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Remove `path_prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Forward the client's Host header (true) or the upstream's authority (false).
    #[serde(default = "yes")]
    pub preserve_host: bool,
}

fn default_prefix() -> String {
    "/".into()
}

fn yes() -> bool {
    true
}

impl Config {
    /// Loads `path` (or the built-in defaults when `None`), applies `AUTHGATE_<SECTION>__<KEY>`
    /// overrides from `env` and `*_file` secrets, then validates.
    pub fn load(path: Option<&Path>, env: &dyn Source) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        Config::from_toml(&text, env)
    }

    pub fn from_toml(text: &str, env: &dyn Source) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        source::apply_env(&mut table, env)?;
        source::apply_secret_files(&mut table)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                // serde_path_to_error already ends the path with an unknown field's name.
                let key = match (path.as_str(), unknown_field(&message)) {
                    ("." | "", Some(field)) => field.to_string(),
                    _ => path,
                };
                ConfigError::key(key, message)
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if !s.auth_prefix.starts_with('/')
            || s.auth_prefix.len() < 2
            || s.auth_prefix.ends_with('/')
        {
            return Err(ConfigError::key(
                "server.auth_prefix",
                "must start with '/', not end with '/', and not be '/' alone",
            ));
        }
        if self.store.backend == StoreBackend::Postgres {
            match self.store.url.as_deref() {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {}
                _ => {
                    return Err(ConfigError::key(
                        "store.url",
                        "backend = \"postgres\" needs a postgres:// URL (or store.url_file)",
                    ));
                }
            }
            if self.store.pool_size == 0 {
                return Err(ConfigError::key("store.pool_size", "must be at least 1"));
            }
        }
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
        if let Some(domain) = &s.cookie_domain {
            let public = s.public_url.host_str().unwrap_or("").to_ascii_lowercase();
            let domain = domain.trim_start_matches('.').to_ascii_lowercase();
            if not_a_host(&domain) || !crate::hosts::within(&public, &domain) {
                return Err(ConfigError::key(
                    "server.cookie_domain",
                    "must be a domain name that public_url's host is in (\"example.com\" for \"auth.example.com\")",
                ));
            }
        }
        if let Some(bad) = s.allowed_redirect_hosts.iter().find(|h| not_a_host(h)) {
            return Err(ConfigError::key(
                "server.allowed_redirect_hosts",
                format!(
                    "{bad:?} is not a host name (\"app.example.com\", or \".example.com\" for a domain and its subdomains)"
                ),
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            let key = if s.tls_cert.is_some() {
                "server.tls_key"
            } else {
                "server.tls_cert"
            };
            return Err(ConfigError::key(
                key,
                "tls_cert and tls_key must be set together",
            ));
        }
        if !matches!(s.public_url.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        for (name, d) in [
            ("server.handshake_timeout", s.handshake_timeout),
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.send_timeout", s.send_timeout),
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            ("proxy.response_timeout", self.proxy.response_timeout),
            ("proxy.tunnel_idle_timeout", self.proxy.tunnel_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::key(name, "must be greater than zero"));
            }
        }
        if s.max_connections == 0 {
            return Err(ConfigError::key(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if s.max_connections_per_ip == 0 {
            return Err(ConfigError::key(
                "server.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if s.max_header_bytes < 1024 {
            return Err(ConfigError::key(
                "server.max_header_bytes",
                "must be at least 1024",
            ));
        }
        if self.otp.length < 4 || self.otp.length > 10 {
            return Err(ConfigError::key("otp.length", "must be between 4 and 10"));
        }
        if self.otp.max_attempts == 0 {
            return Err(ConfigError::key("otp.max_attempts", "must be at least 1"));
        }
        if self.otp.ttl.is_zero() {
            return Err(ConfigError::key("otp.ttl", "must be greater than zero"));
        }
        let p = &self.passwords;
        if argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None).is_err() {
            return Err(ConfigError::key(
                "passwords.memory_kib",
                "argon2 refuses these parameters (memory_kib >= 8 * parallelism, iterations >= 1)",
            ));
        }
        if p.min_length < 8 {
            return Err(ConfigError::key(
                "passwords.min_length",
                "must be at least 8",
            ));
        }
        if p.max_length < p.min_length || p.max_length > 1024 {
            return Err(ConfigError::key(
                "passwords.max_length",
                "must be between min_length and 1024",
            ));
        }
        if p.min_strength > 4 {
            return Err(ConfigError::key("passwords.min_strength", "must be 0 to 4"));
        }
        if p.max_wait.is_zero() || p.max_wait > Duration::from_secs(30) {
            return Err(ConfigError::key(
                "passwords.max_wait",
                "must be more than 0 and at most 30s",
            ));
        }
        if self.rate_limit.refusal_delay > Duration::from_secs(10) {
            return Err(ConfigError::key(
                "rate_limit.refusal_delay",
                "must be at most 10s (clients time out)",
            ));
        }
        if self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::key(
                "mail.from",
                "not a mailbox such as \"App <no-reply@example.com>\"",
            ));
        }
        if let Some(u) = &self.mail.smtp_url {
            if !matches!(u.scheme(), "smtp" | "smtps") || u.host_str().is_none() {
                return Err(ConfigError::key(
                    "mail.smtp_url",
                    "must be smtp://host[:port] or smtps://host[:port]",
                ));
            }
        }
        if self.mail.queue_size == 0 || self.mail.attempts == 0 {
            let k = if self.mail.queue_size == 0 {
                "mail.queue_size"
            } else {
                "mail.attempts"
            };
            return Err(ConfigError::key(k, "must be at least 1"));
        }
        if self.accounts.max_body_bytes < 1024 {
            return Err(ConfigError::key(
                "accounts.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.tokens.access_ttl.is_zero() || self.tokens.access_ttl > self.tokens.refresh_ttl {
            return Err(ConfigError::key(
                "tokens.access_ttl",
                "must be greater than zero and not above refresh_ttl",
            ));
        }
        if self.tokens.refresh_ttl > self.tokens.session_ttl {
            return Err(ConfigError::key(
                "tokens.refresh_ttl",
                "must not be above session_ttl",
            ));
        }
        match &self.tokens.secret_key {
            Some(k) => {
                if let Err(e) = crate::keyring::decode(k.expose()) {
                    return Err(ConfigError::key("tokens.secret_key", e.to_string()));
                }
            }
            None if self.store.backend == StoreBackend::Postgres => {
                return Err(ConfigError::key(
                    "tokens.secret_key",
                    "instances sharing a PostgreSQL store need the same secret key: set \
                     tokens.secret_key_file to a file holding it on every instance (`authgate \
                     keys secret` makes one; keep it out of the database and its backups)",
                ));
            }
            None => {}
        }
        if self.tokens.max_sessions_per_account == 0 {
            return Err(ConfigError::key(
                "tokens.max_sessions_per_account",
                "must be at least 1",
            ));
        }
        if self.tokens.audience.is_empty() {
            return Err(ConfigError::key("tokens.audience", "must not be empty"));
        }
        if s.max_headers == 0 {
            return Err(ConfigError::key("server.max_headers", "must be at least 1"));
        }
        let names = self.identity_headers.resolve();
        let token = names.access_token.clone().unwrap_or_default();
        for (field, name) in [
            ("user_id", &names.user_id),
            ("email", &names.email),
            ("name", &names.name),
            ("roles", &names.roles),
            ("session_id", &names.session_id),
            ("access_token", &token),
        ] {
            let optional = field == "access_token" && name.is_empty();
            if !optional && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::key(
                    format!("identity_headers.{field}"),
                    "not a valid header name",
                ));
            }
        }
        if self.proxy.max_connections_per_upstream == 0 || self.proxy.max_requests_per_ip == 0 {
            let key = if self.proxy.max_requests_per_ip == 0 {
                "proxy.max_requests_per_ip"
            } else {
                "proxy.max_connections_per_upstream"
            };
            return Err(ConfigError::key(key, "must be at least 1"));
        }
        for name in &self.proxy.keep_override_headers {
            let known = http::HeaderName::from_bytes(name.as_bytes())
                .is_ok_and(|n| crate::override_names::OVERRIDE_HEADERS.contains(&n));
            if !known {
                return Err(ConfigError::key(
                    "proxy.keep_override_headers",
                    format!(
                        "{name:?} is not one of X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override, X-Original-URL, X-Rewrite-URL"
                    ),
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::key(key("path_prefix"), "must start with '/'"));
            }
            if crate::urlpath::normalize(&r.path_prefix).as_deref() != Ok(r.path_prefix.as_str()) {
                return Err(ConfigError::key(
                    key("path_prefix"),
                    "must be a normalized path (no '.', '..', '//' or percent-encoding of unreserved characters)",
                ));
            }
            if !matches!(r.upstream.scheme(), "http" | "https") || r.upstream.host().is_none() {
                return Err(ConfigError::key(
                    key("upstream"),
                    "must be an http:// or https:// URL with a host",
                ));
            }
            if r.upstream.query().is_some() || r.upstream.fragment().is_some() {
                return Err(ConfigError::key(
                    key("upstream"),
                    "must not have a query or fragment",
                ));
            }
            if r.access == Access::Public && !r.roles.is_empty() {
                return Err(ConfigError::key(
                    key("roles"),
                    "roles need access = \"authenticated\"",
                ));
            }
            for m in &r.methods {
                if http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                    return Err(ConfigError::key(
                        key("methods"),
                        format!("{m:?} is not an HTTP method"),
                    ));
                }
            }
            if r.path_prefix.starts_with(&s.auth_prefix)
                && (r.path_prefix.len() == s.auth_prefix.len()
                    || r.path_prefix.as_bytes().get(s.auth_prefix.len()) == Some(&b'/'))
            {
                return Err(ConfigError::key(
                    key("path_prefix"),
                    "is inside server.auth_prefix, which the gateway answers itself",
                ));
            }
        }
        Ok(())
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, &MapSource::default())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(c.server.tls);
        assert_eq!(c.server.auth_prefix, "/auth");
        assert!(c.routes.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("[server]\nlistn = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("server.listn"), "{e}");
        let e = load("[serverr]\n").unwrap_err();
        assert_eq!(e.key_name(), Some("serverr"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = load("[server]\nlisten = \"nope\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("server.listen"), "{e}");
        let e = load("[proxy]\nconnect_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("proxy.connect_timeout"), "{e}");
        let e = load("[[routes]]\nupstream = \"ftp://x\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("routes[0].upstream"), "{e}");
        let e =
            load("[[routes]]\nupstream = \"http://x\"\npath_prefix = \"/a/../b\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("routes[0].path_prefix"), "{e}");
    }

    #[test]
    fn cookie_domain_and_redirect_hosts_are_host_names() {
        let ok = load(
            "[server]\npublic_url = \"https://auth.example.com\"\ncookie_domain = \".example.com\"\n\
             allowed_redirect_hosts = [\".example.com\", \"app.test\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        for (toml, key) in [
            (
                "[server]\npublic_url = \"https://auth.example.com\"\ncookie_domain = \"other.com\"\n",
                "server.cookie_domain",
            ),
            (
                "[server]\npublic_url = \"https://auth.example.com\"\ncookie_domain = \"ample.com\"\n",
                "server.cookie_domain",
            ),
            (
                "[server]\nallowed_redirect_hosts = [\"evil.test; script-src *\"]\n",
                "server.allowed_redirect_hosts",
            ),
            (
                "[server]\nallowed_redirect_hosts = [\"*\"]\n",
                "server.allowed_redirect_hosts",
            ),
        ] {
            let e = load(toml).unwrap_err();
            assert_eq!(e.key_name(), Some(key), "{toml}: {e}");
        }
    }

    #[test]
    fn env_overrides_file() {
        let env = MapSource::from([
            ("AUTHGATE_SERVER__LISTEN", "0.0.0.0:9000"),
            ("AUTHGATE_SERVER__TLS", "false"),
            ("AUTHGATE_PROXY__CONNECT_TIMEOUT", "2s"),
            ("UNRELATED", "x"),
        ]);
        let c = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n", &env).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(!c.server.tls);
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(2));
    }

    #[test]
    fn env_unknown_key_is_named() {
        let env = MapSource::from([("AUTHGATE_SERVER__NOPE", "1")]);
        let e = Config::from_toml("", &env).unwrap_err();
        assert_eq!(e.key_name(), Some("server.nope"), "{e}");
    }

    #[test]
    fn secret_file_key_reads_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("name");
        std::fs::write(&f, "X-From-File\n").unwrap();
        let text = format!(
            "[identity_headers]\nuser_id_file = {:?}\n",
            f.display().to_string()
        );
        let c = load(&text).unwrap();
        assert_eq!(c.identity_headers.resolve().user_id, "X-From-File");
        let both = format!(
            "[identity_headers]\nuser_id = \"a\"\nuser_id_file = {:?}\n",
            f.display().to_string()
        );
        assert_eq!(
            load(&both).unwrap_err().key_name(),
            Some("identity_headers.user_id_file")
        );
    }

    #[test]
    fn routes_parse_with_defaults() {
        let c = load("[[routes]]\nupstream = \"http://127.0.0.1:8080\"\n").unwrap();
        let r = &c.routes[0];
        assert_eq!(r.path_prefix, "/");
        assert_eq!(r.access, Access::Authenticated);
        assert!(r.preserve_host);
    }

    #[test]
    fn route_inside_auth_prefix_is_refused() {
        let e =
            load("[[routes]]\nupstream = \"http://x\"\npath_prefix = \"/auth/x\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("routes[0].path_prefix"));
        assert!(load("[[routes]]\nupstream = \"http://x\"\npath_prefix = \"/authors\"\n").is_ok());
    }
}
