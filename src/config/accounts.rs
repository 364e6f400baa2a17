//! `[accounts]`, `[passwords]`, `[otp]` and `[security]`: how accounts are made, proved and
//! protected.

use super::*;

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
    /// A hashing thread gives its argon2 memory (`memory_kib`) back after this long without
    /// a hash, and takes it again with the next one.
    #[serde(with = "duration::serde_str")]
    pub release_memory_after: Duration,
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
            release_memory_after: Duration::from_secs(30),
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

/// `[mfa]`: second factors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// The name authenticator apps show beside the account (the TOTP issuer).
    pub issuer: String,
    /// Roles that count only in a two-factor session: an account holding one must enrol a
    /// second factor and show it before the role lets it anywhere.
    pub required_roles: Vec<String>,
    /// Lifetime of the `mfa_token` a first factor earns.
    #[serde(with = "duration::serde_str")]
    pub token_ttl: Duration,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            issuer: "authgate".into(),
            required_roles: Vec::new(),
            token_ttl: Duration::from_secs(300),
        }
    }
}

impl MfaConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.issuer.trim().is_empty() || self.issuer.len() > 64 {
            return Err(ConfigError::key("mfa.issuer", "must be 1 to 64 characters"));
        }
        if self.token_ttl < Duration::from_secs(30) || self.token_ttl > Duration::from_secs(1800) {
            return Err(ConfigError::key(
                "mfa.token_ttl",
                "must be between 30s and 30m",
            ));
        }
        Ok(())
    }
}

/// `[webauthn]`: passkeys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The relying party id: `server.public_url`'s host when absent. Passkeys are bound to it
    /// (a domain, never an IP address).
    pub rp_id: Option<String>,
    /// The name authenticators show.
    pub rp_name: String,
    /// Origins whose pages may use the passkeys (`https://host[:port]`): `public_url`'s when
    /// empty.
    pub origins: Vec<Url>,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        WebauthnConfig {
            rp_id: None,
            rp_name: "authgate".into(),
            origins: Vec::new(),
        }
    }
}

impl WebauthnConfig {
    /// The relying party id and origins in effect for `public_url`.
    pub fn resolve(&self, public_url: &Url) -> (String, Vec<Url>) {
        let rp_id = self
            .rp_id
            .clone()
            .unwrap_or_else(|| public_url.host_str().unwrap_or("").to_string());
        let origins = if self.origins.is_empty() {
            vec![public_url.clone()]
        } else {
            self.origins.clone()
        };
        (rp_id, origins)
    }

    pub(super) fn check(&self, public_url: &Url) -> Result<(), ConfigError> {
        if self.rp_name.trim().is_empty() {
            return Err(ConfigError::key("webauthn.rp_name", "must not be empty"));
        }
        for (i, o) in self.origins.iter().enumerate() {
            // Browsers use WebAuthn on https, and on http only for localhost.
            let local = o.host_str() == Some("localhost");
            let ok = o.scheme() == "https" || (o.scheme() == "http" && local);
            if !ok || o.host().is_none() || o.path() != "/" || o.query().is_some() {
                return Err(ConfigError::key(
                    format!("webauthn.origins[{i}]"),
                    "must be an https:// origin (scheme, host and port; http:// only for localhost)",
                ));
            }
        }
        // An explicit RP id or origins must work; the defaults are checked at start (an IP
        // address as the public host turns passkeys off, with a warning).
        if self.rp_id.is_some() || !self.origins.is_empty() {
            let (rp_id, origins) = self.resolve(public_url);
            crate::passkeys::webauthn(&rp_id, &self.rp_name, &origins).map_err(|_| {
                ConfigError::key(
                    "webauthn.rp_id",
                    "must be a domain (not an IP address): the host of server.public_url (or of each of webauthn.origins) or a parent domain of it",
                )
            })?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Answer USER_DOES_NOT_EXIST / ALREADY_VERIFIED explicitly instead of the same answer
    /// for every address.
    pub reveal_account_existence: bool,
}

impl OtpConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.length < 4 || self.length > 10 {
            return Err(ConfigError::key("otp.length", "must be between 4 and 10"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::key("otp.max_attempts", "must be at least 1"));
        }
        positive(&[("otp.ttl", self.ttl)])
    }
}

impl PasswordsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None).is_err() {
            return Err(ConfigError::key(
                "passwords.memory_kib",
                "argon2 refuses these parameters (memory_kib >= 8 * parallelism, iterations >= 1)",
            ));
        }
        if self.min_length < 8 {
            return Err(ConfigError::key(
                "passwords.min_length",
                "must be at least 8",
            ));
        }
        if self.max_length < self.min_length || self.max_length > 1024 {
            return Err(ConfigError::key(
                "passwords.max_length",
                "must be between min_length and 1024",
            ));
        }
        if self.min_strength > 4 {
            return Err(ConfigError::key("passwords.min_strength", "must be 0 to 4"));
        }
        if self.max_wait.is_zero() || self.max_wait > Duration::from_secs(30) {
            return Err(ConfigError::key(
                "passwords.max_wait",
                "must be more than 0 and at most 30s",
            ));
        }
        Ok(())
    }
}

impl AccountsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::key(
                "accounts.max_body_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}
