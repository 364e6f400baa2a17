//! `[tokens]`: access and refresh tokens, sessions, signing keys.

use super::*;

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
    pub max_sessions_per_account: NonZeroUsize,
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
            max_sessions_per_account: NonZeroUsize::new(50).unwrap_or(NonZeroUsize::MIN),
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

impl TokensConfig {
    pub(super) fn check(&self, backend: StoreBackend) -> Result<(), ConfigError> {
        if self.access_ttl.is_zero() || self.access_ttl > self.refresh_ttl {
            return Err(ConfigError::key(
                "tokens.access_ttl",
                "must be greater than zero and not above refresh_ttl",
            ));
        }
        if self.refresh_ttl > self.session_ttl {
            return Err(ConfigError::key(
                "tokens.refresh_ttl",
                "must not be above session_ttl",
            ));
        }
        match &self.secret_key {
            Some(k) => {
                if let Err(e) = crate::keyring::decode(k.expose()) {
                    return Err(ConfigError::key("tokens.secret_key", e.to_string()));
                }
            }
            None if backend == StoreBackend::Postgres => {
                return Err(ConfigError::key(
                    "tokens.secret_key",
                    "instances sharing a PostgreSQL store need the same secret key: set \
                     tokens.secret_key_file to a file holding it on every instance (`authgate \
                     keys secret` makes one; keep it out of the database and its backups)",
                ));
            }
            None => {}
        }
        if self.audience.is_empty() {
            return Err(ConfigError::key("tokens.audience", "must not be empty"));
        }
        Ok(())
    }
}
