//! Access tokens (JWT: EdDSA by default, ES256 or HS256), their signing keys on disk with
//! rotation and JWKS, a cache of verified tokens for the hot path, and the opaque refresh
//! tokens (random, stored only as a hash, sealed for the reuse grace window).

use crate::clock::SharedClock;
use crate::config::{TokenAlgorithm, TokensConfig};
use crate::identity::Identity;
use crate::keyring::{KeyPurpose, Keyring};
use crate::secret::Secret;
use crate::store::Store;
use crate::store::{AuthFactor, User};
use aws_lc_rs::{aead, digest, hmac, rand as lc_rand, signature};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;

mod keys;
mod refresh;

use keys::*;
pub use keys::{
    ACTIVATION_DELAY, generate_key, generate_key_in_store, key_records_in_dir, seal_key_record,
};
pub use refresh::Issued;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Missing, malformed, forged, wrong key/algorithm/issuer/audience, or not yet valid.
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("signing key: {0}")]
    Key(String),
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sid: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
    /// How the session was proved (RFC 8176); absent in tokens of sessions made before
    /// this was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Roles of the account that count only after a second factor (`mfa.required_roles`),
    /// in a one-factor token: not in `roles`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld_roles: Vec<String>,
}

/// The key of the verify cache: the whole token, compared byte for byte on a hit (the
/// cache's own keyed hash only picks the slot). Hashing a token with SHA-256 on every
/// request cost more than the rest of the check, and grew with every claim; equality
/// needs no assumption about a digest. Its `Debug` hides it.
#[derive(PartialEq, Eq, Hash)]
struct CachedToken(Box<str>);

impl std::borrow::Borrow<str> for CachedToken {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedToken(..)")
    }
}

/// A verified access token, as the hot path remembers it.
#[derive(Debug)]
pub struct Verified {
    pub identity: Identity,
    /// `identity.user_id` parsed, for comparisons without formatting.
    pub user_uuid: uuid::Uuid,
    /// The identity's header values (see [`crate::identity::IdentityValues`]).
    pub values: crate::identity::IdentityValues,
    pub nbf: i64,
    pub exp: i64,
}

/// Where the signing keys live: files (one instance) or the shared store (several).
#[derive(Debug)]
enum KeySource {
    Dir(PathBuf),
    Store(Store),
}

/// The token service.
pub struct Tokens {
    alg: TokenAlgorithm,
    source: KeySource,
    /// Set when a token named a key id this instance does not know (shared store only).
    reload_wanted: std::sync::atomic::AtomicBool,
    keys: RwLock<Arc<KeySet>>,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    leeway: i64,
    cache: quick_cache::sync::Cache<CachedToken, Arc<Verified>>,
    /// Moves each time a key goes (see `keys::install`): a verdict reached with the old keys
    /// is not left in the cache the removal cleared.
    key_epoch: std::sync::atomic::AtomicU64,
    seal: aead::LessSafeKey,
    /// Keys a refresh token's MAC: only a token made here verifies (see [`Tokens::issued`]).
    refresh_mac: hmac::Key,
    /// Seals the signing keys kept in a shared store.
    wrap: aead::LessSafeKey,
    /// The key outside the store, for keys this instance makes in a shared store.
    keyring: Arc<Keyring>,
    clock: SharedClock,
    /// Roles that count only in a two-factor session (`mfa.required_roles`).
    second_factor_roles: Vec<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("alg", &self.alg)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads (or, on first start, makes) the signing keys in `keys_dir`; the keyring's keys
    /// protect the refresh tokens (their MAC, and the copy sealed for the reuse grace
    /// window).
    pub fn new(
        cfg: &TokensConfig,
        issuer: String,
        keyring: Arc<Keyring>,
        clock: SharedClock,
    ) -> Result<Self, TokenError> {
        let t = Self::build(
            cfg,
            issuer,
            keyring,
            clock,
            KeySource::Dir(cfg.keys_dir.clone()),
        )?;
        t.reload_from_dir()?;
        Ok(t)
    }

    /// As [`Tokens::new`], with the keys in a store shared by several instances (sealed with
    /// the keyring): every instance signs and verifies with the same set and sees a rotation.
    pub async fn with_store(
        cfg: &TokensConfig,
        issuer: String,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        store: Store,
    ) -> Result<Self, TokenError> {
        let t = Self::build(cfg, issuer, keyring, clock, KeySource::Store(store))?;
        t.reload_keys().await?;
        Ok(t)
    }

    fn build(
        cfg: &TokensConfig,
        issuer: String,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        source: KeySource,
    ) -> Result<Self, TokenError> {
        let seal_key = keyring.key(KeyPurpose::RefreshSeal);
        let mut validation = Validation::new(jwt_alg(cfg.algorithm));
        validation.algorithms = vec![jwt_alg(cfg.algorithm)];
        // exp and nbf are checked against the injected clock, below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &seal_key.0).map_err(key_err)?;
        Ok(Tokens {
            alg: cfg.algorithm,
            source,
            reload_wanted: std::sync::atomic::AtomicBool::new(false),
            keys: RwLock::new(Arc::new(KeySet {
                keys: Vec::new(),
                by_kid: HashMap::new(),
                signing: 0,
            })),
            validation,
            issuer,
            audience: cfg.audience.clone(),
            access_ttl: cfg.access_ttl,
            refresh_ttl: cfg.refresh_ttl,
            leeway: i64::try_from(cfg.leeway.as_secs()).unwrap_or(30),
            cache: quick_cache::sync::Cache::new(cfg.cache_entries.max(16)),
            key_epoch: std::sync::atomic::AtomicU64::new(0),
            seal: aead::LessSafeKey::new(unbound),
            refresh_mac: hmac::Key::new(hmac::HMAC_SHA256, &keyring.key(KeyPurpose::RefreshMac).0),
            wrap: wrap_key(&keyring)?,
            keyring,
            clock,
            second_factor_roles: Vec::new(),
        })
    }

    /// Roles that a one-factor session holds only in name (`mfa.required_roles`): rules do not
    /// count them, and the upstream is not told of them, until a second factor is shown.
    pub fn with_second_factor_roles(mut self, roles: Vec<String>) -> Self {
        self.second_factor_roles = roles;
        self
    }

    fn keyset(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// Signs an access token for `user` in session `sid`, proved by `factors`.
    pub fn issue_access(
        &self,
        user: &User,
        sid: &str,
        factors: &[AuthFactor],
    ) -> Result<String, TokenError> {
        let keys = self.keyset();
        let key = keys
            .keys
            .get(keys.signing)
            .ok_or_else(|| TokenError::Key("no signing key".into()))?;
        let now = self.clock.unix_now();
        // A role that counts only after a second factor is not among a one-factor token's
        // roles at all (an application that reads the token itself must not see it), only
        // named apart, so that the gate can say a second factor would help.
        let (roles, withheld_roles): (Vec<String>, Vec<String>) = if AuthFactor::two_factor(factors)
        {
            (user.roles.clone(), Vec::new())
        } else {
            user.roles
                .iter()
                .cloned()
                .partition(|r| !self.second_factor_roles.contains(r))
        };
        let claims = Claims {
            sub: user.id.to_string(),
            sid: sid.to_string(),
            email: user.email.clone(),
            username: user.username.clone(),
            roles,
            withheld_roles,
            iat: now,
            nbf: now,
            exp: now + i64::try_from(self.access_ttl.as_secs()).unwrap_or(900),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            amr: AuthFactor::amr_of(factors),
        };
        let mut header = Header::new(jwt_alg(self.alg));
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(key_err)
    }

    /// Verifies an access token: signature with a known kid, the configured algorithm only,
    /// issuer, audience, and exp/nbf against the clock. Verified tokens are cached by the whole token.
    pub fn verify_access(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        let now = self.clock.unix_now();
        if let Some(v) = self.cache.get(token) {
            return self.check_times(v, now);
        }
        let epoch = self.key_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let keys = self.keyset();
        let kid = header.kid.as_deref().ok_or(TokenError::Invalid)?;
        let Some(idx) = keys.by_kid.get(kid) else {
            // Another instance may have made a key this one has not loaded yet (two first
            // starts at once): ask for an early reload. A forged kid costs one read at most
            // per follow tick.
            if matches!(self.source, KeySource::Store(_)) {
                self.reload_wanted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return Err(TokenError::Invalid);
        };
        let k = keys.keys.get(*idx).ok_or(TokenError::Invalid)?;
        let data = jsonwebtoken::decode::<Claims>(token, &k.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let c = data.claims;
        let user_uuid = uuid::Uuid::parse_str(&c.sub).map_err(|_| TokenError::Invalid)?;
        let user_id = user_uuid.to_string();
        let identity = Identity::new(
            user_id,
            c.email,
            c.username,
            c.roles,
            c.sid,
            c.amr,
            &self.second_factor_roles,
        )
        .withholding(c.withheld_roles);
        let verified = Arc::new(Verified {
            user_uuid,
            values: crate::identity::IdentityValues::new(&identity),
            identity,
            nbf: c.nbf,
            exp: c.exp,
        });
        self.cache
            .insert(CachedToken(token.into()), verified.clone());
        // A key removed meanwhile: its clearing of the cache may have come before this
        // insert, so the verdict goes again (the removal moves the epoch before it clears).
        if self.key_epoch.load(std::sync::atomic::Ordering::SeqCst) != epoch {
            self.cache.remove(token);
            return Err(TokenError::Invalid);
        }
        self.check_times(verified, now)
    }

    fn check_times(&self, v: Arc<Verified>, now: i64) -> Result<Arc<Verified>, TokenError> {
        if v.exp + self.leeway <= now {
            return Err(TokenError::Expired);
        }
        if v.nbf - self.leeway > now {
            return Err(TokenError::Invalid);
        }
        Ok(v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn user() -> User {
        User {
            username: Some("alice".into()),
            ..User::new(
                "a@x.test".into(),
                true,
                vec!["customer".into()],
                OffsetDateTime::UNIX_EPOCH,
            )
        }
    }

    pub(crate) fn tokens(alg: TokenAlgorithm, dir: &Path, clock: &ManualClock) -> Tokens {
        let cfg = TokensConfig {
            algorithm: alg,
            keys_dir: dir.to_path_buf(),
            ..Default::default()
        };
        Tokens::new(
            &cfg,
            "https://gw.test".into(),
            Arc::new(Keyring::new(&crate::secret::KeyBytes(vec![9; 32]))),
            Arc::new(clock.clone()),
        )
        .unwrap()
    }

    #[test]
    fn every_algorithm_round_trips_and_expires() {
        for alg in [
            TokenAlgorithm::EdDSA,
            TokenAlgorithm::ES256,
            TokenAlgorithm::HS256,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::starting_now();
            let t = tokens(alg, dir.path(), &clock);
            let u = user();
            let jwt = t.issue_access(&u, "sid1", &[]).unwrap();
            let v = t.verify_access(&jwt).unwrap();
            assert_eq!(v.identity.user_id, u.id.to_string());
            assert_eq!(v.identity.session_id, "sid1");
            assert_eq!(v.identity.roles, vec!["customer".to_string()]);
            clock.advance(Duration::from_secs(15 * 60 + 31));
            assert!(
                matches!(t.verify_access(&jwt), Err(TokenError::Expired)),
                "{alg:?}: cached entry expires too"
            );
            assert_eq!(
                t.jwks()["keys"].as_array().unwrap().len(),
                usize::from(alg != TokenAlgorithm::HS256)
            );
        }
    }

    #[test]
    fn a_cached_token_answers_only_for_itself_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let t = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        let jwt = t.issue_access(&user(), "sid1", &[]).unwrap();
        t.verify_access(&jwt).unwrap();
        assert!(t.verify_access(&jwt).is_ok(), "cached");
        for v in [
            format!("{jwt}x"),
            jwt[..jwt.len() - 1].to_string(),
            format!(" {jwt}"),
            jwt.to_uppercase(),
        ] {
            assert!(t.verify_access(&v).is_err(), "{v}");
        }
        // Every character changed once: header, payload and signature. Only the last one
        // may pass, where it touches nothing but the signature's unused bits (then it is
        // the same signature and verifies on its own, with a cache that never saw it).
        for i in 0..jwt.len() {
            let mut b = jwt.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let v = String::from_utf8(b).unwrap();
            if t.verify_access(&v).is_ok() {
                assert_eq!(i, jwt.len() - 1, "character {i} changed and accepted: {v}");
                let fresh = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
                assert!(fresh.verify_access(&v).is_ok());
            }
        }
    }

    #[tokio::test]
    async fn key_files_are_private_and_rotation_keeps_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let t = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        let old = t.issue_access(&user(), "s", &[]).unwrap();
        let old_kid = t.current_kid().unwrap();
        #[cfg(unix)]
        for e in std::fs::read_dir(dir.path()).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                e.unwrap().metadata().unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        clock.advance(Duration::from_secs(1));
        generate_key(dir.path(), TokenAlgorithm::EdDSA, clock.now()).unwrap();
        t.reload_keys().await.unwrap();
        assert_ne!(t.current_kid().unwrap(), old_kid, "the new key signs");
        assert!(
            t.verify_access(&old).is_ok(),
            "the old key still verifies (and is cached)"
        );
        // A fresh Tokens (no cache) still verifies the old token.
        let fresh = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        assert!(fresh.verify_access(&old).is_ok());
        assert_eq!(fresh.jwks()["keys"].as_array().unwrap().len(), 2);
        // Once the new key has signed for longer than a token lives, the old key goes.
        clock.advance(Duration::from_secs(20 * 60));
        fresh.reload_keys().await.unwrap();
        assert_eq!(fresh.key_ids().len(), 1);
    }

    #[tokio::test]
    async fn a_removed_key_verifies_nothing_even_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let t = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        let old = t.issue_access(&user(), "s", &[]).unwrap();
        let old_kid = t.current_kid().unwrap();
        assert!(t.verify_access(&old).is_ok(), "verified, and cached");
        clock.advance(Duration::from_secs(1));
        generate_key(dir.path(), TokenAlgorithm::EdDSA, clock.now()).unwrap();
        t.reload_keys().await.unwrap();
        // An operator removes the old key (it leaked, say).
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let path = e.unwrap().path();
            if std::fs::read_to_string(&path).unwrap().contains(&old_kid) {
                std::fs::remove_file(path).unwrap();
            }
        }
        t.reload_keys().await.unwrap();
        assert!(!t.key_ids().iter().any(|(kid, _)| *kid == old_kid));
        assert!(
            t.verify_access(&old).is_err(),
            "the cached verdict went with the key"
        );
        let new = t.issue_access(&user(), "s", &[]).unwrap();
        assert!(t.verify_access(&new).is_ok());
    }

    #[test]
    fn forged_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let t = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        let jwt = t.issue_access(&user(), "s", &[]).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        // alg none, no signature
        let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            t.verify_access(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );
        // stripped signature
        assert!(
            t.verify_access(&format!("{}.{}.", parts[0], parts[1]))
                .is_err()
        );
        // tampered claims
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["admin"]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(claims.to_string()),
            parts[2]
        );
        assert!(t.verify_access(&forged).is_err());
        // other issuer / audience, signed with the right key
        let other = Tokens::new(
            &TokensConfig {
                keys_dir: dir.path().to_path_buf(),
                audience: "other".into(),
                ..Default::default()
            },
            "https://gw.test".into(),
            Arc::new(Keyring::new(&crate::secret::KeyBytes(vec![9; 32]))),
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert!(
            t.verify_access(&other.issue_access(&user(), "s", &[]).unwrap())
                .is_err()
        );
    }

    #[test]
    fn refresh_tokens_and_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(
            TokenAlgorithm::EdDSA,
            dir.path(),
            &ManualClock::starting_now(),
        );
        let r = t.new_refresh("abc").unwrap();
        assert_eq!(Tokens::refresh_session(r.expose()), Some("abc"));
        assert_eq!(Tokens::refresh_session("rt1.abc.short"), None);
        assert_eq!(t.issued(r.expose()), Issued::Yes);
        // A guess that names the session: well formed, but not ours.
        let guess = format!("rt2.abc.{}.{}", "A".repeat(43), "B".repeat(22));
        assert_eq!(Tokens::refresh_session(&guess), Some("abc"));
        assert_eq!(t.issued(&guess), Issued::No);
        // Another session's MAC does not carry over.
        let parts: Vec<&str> = r.expose().split('.').collect();
        assert_eq!(
            t.issued(&format!("rt2.abd.{}.{}", parts[2], parts[3])),
            Issued::No
        );
        let old = format!("rt1.abc.{}", "A".repeat(43));
        assert_eq!(t.issued(&old), Issued::Unknown);
        let sealed = t.seal(&r).unwrap();
        assert_eq!(t.unseal(&sealed).unwrap().expose(), r.expose());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(t.unseal(&bad).is_none());
    }
}
