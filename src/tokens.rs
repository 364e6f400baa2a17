//! Access tokens (JWT: EdDSA by default, ES256 or HS256), their signing keys on disk with
//! rotation and JWKS, a cache of verified tokens for the hot path, and the opaque refresh
//! tokens (random, stored only as a hash, sealed for the reuse grace window).

use crate::clock::SharedClock;
use crate::config::{TokenAlgorithm, TokensConfig};
use crate::identity::Identity;
use crate::keyring::{KeyPurpose, Keyring};
use crate::secret::Secret;
use crate::store::Store;
use crate::store::User;
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

/// One signing key as kept on disk (and, sealed, in a shared store).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    alg: TokenAlgorithm,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// PKCS#8 (EdDSA, ES256) or the raw secret (HS256), base64url. In a file in `keys_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private: Option<String>,
    /// `private` sealed with the key outside the store (AES-256-GCM, the kid as associated
    /// data), base64url: in a shared store, whose dump must not give the keys away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

impl KeyFile {
    /// The same key with its private part sealed for a shared store.
    fn sealed_with(mut self, wrap: &aead::LessSafeKey) -> Result<KeyFile, TokenError> {
        let Some(private) = self.private.take() else {
            return Ok(self);
        };
        let mut nonce = [0u8; 12];
        lc_rand::fill(&mut nonce).map_err(key_err)?;
        let mut buf = private.into_bytes();
        wrap.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(self.kid.as_bytes()),
            &mut buf,
        )
        .map_err(key_err)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        self.sealed = Some(B64.encode(out));
        Ok(self)
    }

    /// The private part, unsealed if need be.
    fn private(&self, wrap: Option<&aead::LessSafeKey>) -> Result<String, TokenError> {
        if let Some(p) = &self.private {
            return Ok(p.clone());
        }
        let (Some(sealed), Some(wrap)) = (&self.sealed, wrap) else {
            return Err(TokenError::Key(format!(
                "signing key {} has no private part",
                self.kid
            )));
        };
        let raw = B64.decode(sealed).map_err(key_err)?;
        let (nonce, body) = raw
            .split_at_checked(12)
            .ok_or_else(|| TokenError::Key("sealed signing key too short".into()))?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(key_err)?;
        let mut buf = body.to_vec();
        let plain = wrap
            .open_in_place(nonce, aead::Aad::from(self.kid.as_bytes()), &mut buf)
            .map_err(|_| {
                TokenError::Key(format!(
                    "signing key {} does not open with tokens.secret_key: is every instance given the same key?",
                    self.kid
                ))
            })?;
        String::from_utf8(plain.to_vec()).map_err(key_err)
    }
}

/// Seals the private part of a key file's record (JSON, as [`key_records_in_dir`] gives
/// them) for a shared store; a record that is sealed already is left alone.
pub fn seal_key_record(record: &[u8], keyring: &Keyring) -> Result<Vec<u8>, TokenError> {
    let file: KeyFile = serde_json::from_slice(record).map_err(key_err)?;
    let wrap = wrap_key(keyring)?;
    serde_json::to_vec(&file.sealed_with(&wrap)?).map_err(key_err)
}

fn wrap_key(keyring: &Keyring) -> Result<aead::LessSafeKey, TokenError> {
    let k = keyring.key(KeyPurpose::SigningKeyWrap);
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &k.0).map_err(key_err)?;
    Ok(aead::LessSafeKey::new(unbound))
}

struct LoadedKey {
    kid: String,
    created_at: OffsetDateTime,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Option<serde_json::Value>,
}

struct KeySet {
    /// Newest first.
    keys: Vec<LoadedKey>,
    by_kid: HashMap<String, usize>,
    /// The one that signs: the newest, or with a shared store the newest that every
    /// instance has had time to load (see [`ACTIVATION_DELAY`]).
    signing: usize,
}

/// With several instances, a new key is published (verifies) at once but signs only after
/// this long, so that every instance has reloaded it (every 30 s) before it meets a token
/// signed with it.
pub const ACTIVATION_DELAY: Duration = Duration::from_secs(75);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

fn jwt_alg(a: TokenAlgorithm) -> Algorithm {
    match a {
        TokenAlgorithm::EdDSA => Algorithm::EdDSA,
        TokenAlgorithm::ES256 => Algorithm::ES256,
        TokenAlgorithm::HS256 => Algorithm::HS256,
    }
}

fn key_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Key(e.to_string())
}

fn load_key(file: KeyFile, wrap: Option<&aead::LessSafeKey>) -> Result<LoadedKey, TokenError> {
    let private = B64.decode(file.private(wrap)?).map_err(key_err)?;
    let (encoding, decoding, jwk) = match file.alg {
        TokenAlgorithm::EdDSA => {
            let pair = signature::Ed25519KeyPair::from_pkcs8(&private).map_err(key_err)?;
            let x = B64.encode(signature::KeyPair::public_key(&pair).as_ref());
            let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": file.kid, "alg": "EdDSA", "use": "sig"});
            (
                EncodingKey::from_ed_der(&private),
                DecodingKey::from_ed_components(&x).map_err(key_err)?,
                Some(jwk),
            )
        }
        TokenAlgorithm::ES256 => {
            let pair = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &private,
            )
            .map_err(key_err)?;
            let point = signature::KeyPair::public_key(&pair).as_ref().to_vec();
            // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
            let (x, y) = match point.as_slice() {
                [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
                _ => {
                    return Err(TokenError::Key(
                        "unexpected P-256 public key encoding".into(),
                    ));
                }
            };
            let (x, y) = (B64.encode(x), B64.encode(y));
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": file.kid, "alg": "ES256", "use": "sig"});
            (
                EncodingKey::from_ec_der(&private),
                DecodingKey::from_ec_components(&x, &y).map_err(key_err)?,
                Some(jwk),
            )
        }
        TokenAlgorithm::HS256 => (
            EncodingKey::from_secret(&private),
            DecodingKey::from_secret(&private),
            None,
        ),
    };
    Ok(LoadedKey {
        kid: file.kid,
        created_at: file.created_at,
        encoding,
        decoding,
        jwk,
    })
}

/// A new signing key of `alg`.
fn new_key(alg: TokenAlgorithm, now: OffsetDateTime) -> Result<KeyFile, TokenError> {
    let rng = lc_rand::SystemRandom::new();
    let private = match alg {
        TokenAlgorithm::EdDSA => signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(key_err)?
            .as_ref()
            .to_vec(),
        TokenAlgorithm::ES256 => signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map_err(key_err)?
        .as_ref()
        .to_vec(),
        TokenAlgorithm::HS256 => {
            let mut s = vec![0u8; 32];
            lc_rand::fill(&mut s).map_err(key_err)?;
            s
        }
    };
    let mut id = [0u8; 9];
    lc_rand::fill(&mut id).map_err(key_err)?;
    Ok(KeyFile {
        kid: B64.encode(id),
        alg,
        created_at: now,
        private: Some(B64.encode(&private)),
        sealed: None,
    })
}

/// Makes a new signing key file in `dir` (0600) and returns its kid.
pub fn generate_key(
    dir: &Path,
    alg: TokenAlgorithm,
    now: OffsetDateTime,
) -> Result<String, TokenError> {
    let file = new_key(alg, now)?;
    std::fs::create_dir_all(dir).map_err(|e| TokenError::Key(format!("{}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let json = serde_json::to_vec_pretty(&file).map_err(key_err)?;
    crate::tls::write_private(&dir.join(format!("{}.json", file.kid)), &json).map_err(key_err)?;
    Ok(file.kid)
}

/// The signing key files in `dir` as (kid, record) pairs, for copying them into a store.
pub fn key_records_in_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, TokenError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))?;
        let file: KeyFile = serde_json::from_slice(&bytes)
            .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))?;
        out.push((
            file.kid.clone(),
            serde_json::to_vec(&file).map_err(key_err)?,
        ));
    }
    Ok(out)
}

/// Makes a new signing key in a shared store (every instance picks it up at its next key
/// reload) and returns its kid.
pub async fn generate_key_in_store(
    store: &Store,
    alg: TokenAlgorithm,
    now: OffsetDateTime,
    keyring: &Keyring,
) -> Result<String, TokenError> {
    let file = new_key(alg, now)?.sealed_with(&wrap_key(keyring)?)?;
    let bytes = serde_json::to_vec(&file).map_err(key_err)?;
    store
        .put_signing_key(&file.kid, &bytes)
        .await
        .map_err(key_err)?;
    Ok(file.kid)
}

/// The keys of `alg` to load, newest first, and the kids of those that can no longer have a
/// live token (their successor has signed for longer than the access lifetime).
fn select_keys(
    mut files: Vec<KeyFile>,
    alg: TokenAlgorithm,
    now: OffsetDateTime,
    retire_after: Duration,
) -> (Vec<KeyFile>, Vec<String>) {
    files.retain(|f| f.alg == alg);
    files.sort_by_key(|f| std::cmp::Reverse(f.created_at));
    let mut keep = Vec::new();
    let mut retired = Vec::new();
    let mut successor: Option<OffsetDateTime> = None;
    for file in files {
        if successor.is_some_and(|next| next + retire_after < now) {
            retired.push(file.kid);
            continue;
        }
        successor = Some(file.created_at);
        keep.push(file);
    }
    (keep, retired)
}

/// Reads the keys of `alg` in `dir`, newest first, removing retired ones.
fn read_keys(
    dir: &Path,
    alg: TokenAlgorithm,
    now: OffsetDateTime,
    retire_after: Duration,
) -> Result<Vec<LoadedKey>, TokenError> {
    let mut files: Vec<KeyFile> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read(&path)
                .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))?;
            let file: KeyFile = serde_json::from_slice(&text)
                .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))?;
            files.push(file);
        }
    }
    let (keep, retired) = select_keys(files, alg, now, retire_after);
    for kid in retired {
        let _ = std::fs::remove_file(dir.join(format!("{kid}.json")));
    }
    keep.into_iter().map(|f| load_key(f, None)).collect()
}

/// Whether a refresh token was issued here (see [`Tokens::issued`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    Yes,
    /// An old-format token: issued here, or made up; only its hash on the session can tell.
    Unknown,
    No,
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
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Verified>>,
    seal: aead::LessSafeKey,
    /// Keys a refresh token's MAC: only a token made here verifies (see [`Tokens::issued`]).
    refresh_mac: hmac::Key,
    /// Seals the signing keys kept in a shared store.
    wrap: aead::LessSafeKey,
    /// The key outside the store, for keys this instance makes in a shared store.
    keyring: Arc<Keyring>,
    clock: SharedClock,
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
            seal: aead::LessSafeKey::new(unbound),
            refresh_mac: hmac::Key::new(hmac::HMAC_SHA256, &keyring.key(KeyPurpose::RefreshMac).0),
            wrap: wrap_key(&keyring)?,
            keyring,
            clock,
        })
    }

    /// Whether a token named an unknown key id since the last call (then reload the keys).
    pub fn take_reload_wanted(&self) -> bool {
        self.reload_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    fn retire_after(&self) -> Duration {
        let base =
            self.access_ttl + Duration::from_secs(u64::try_from(self.leeway).unwrap_or(30) + 60);
        match self.source {
            KeySource::Dir(_) => base,
            // The old key keeps signing until the new one is active and every instance has
            // reloaded it (30 s): its last tokens live that much longer.
            KeySource::Store(_) => base + ACTIVATION_DELAY + Duration::from_secs(60),
        }
    }

    /// Re-reads the keys (after `authgate keys rotate`); makes a key if none fits.
    pub async fn reload_keys(&self) -> Result<(), TokenError> {
        let store = match &self.source {
            KeySource::Dir(_) => return self.reload_from_dir(),
            KeySource::Store(store) => store,
        };
        let now = self.clock.now();
        let read = || async {
            let mut files = Vec::new();
            for bytes in store.signing_keys().await.map_err(key_err)? {
                let file = serde_json::from_slice::<KeyFile>(&bytes).map_err(key_err)?;
                // Kept in the clear by builds before the key outside the store: sealed now,
                // so that the database no longer holds a key that signs.
                let file = if file.private.is_some() {
                    let sealed = file.sealed_with(&self.wrap)?;
                    let record = serde_json::to_vec(&sealed).map_err(key_err)?;
                    store
                        .put_signing_key(&sealed.kid, &record)
                        .await
                        .map_err(key_err)?;
                    sealed
                } else {
                    file
                };
                files.push(file);
            }
            Ok::<_, TokenError>(select_keys(files, self.alg, now, self.retire_after()))
        };
        let (mut keep, retired) = read().await?;
        for kid in retired {
            store.delete_signing_key(&kid).await.map_err(key_err)?;
        }
        if keep.is_empty() {
            // Two instances starting at once may both make one: both keys verify, the newer
            // signs.
            generate_key_in_store(store, self.alg, now, &self.keyring).await?;
            keep = read().await?.0;
        }
        let keys = keep
            .into_iter()
            .map(|f| load_key(f, Some(&self.wrap)))
            .collect::<Result<Vec<_>, _>>()?;
        self.install(keys);
        Ok(())
    }

    fn reload_from_dir(&self) -> Result<(), TokenError> {
        let KeySource::Dir(dir) = &self.source else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut keys = read_keys(dir, self.alg, now, self.retire_after())?;
        if keys.is_empty() {
            generate_key(dir, self.alg, now)?;
            keys = read_keys(dir, self.alg, now, self.retire_after())?;
        }
        self.install(keys);
        Ok(())
    }

    fn install(&self, keys: Vec<LoadedKey>) {
        let signing = match self.source {
            KeySource::Dir(_) => 0,
            KeySource::Store(_) => {
                let ready = self.clock.now() - ACTIVATION_DELAY;
                // None has aged yet (a fresh store, or two rotations in a row): the oldest,
                // which every instance has had longest.
                keys.iter()
                    .position(|k| k.created_at <= ready)
                    .unwrap_or(keys.len().saturating_sub(1))
            }
        };
        let by_kid = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.kid.clone(), i))
            .collect();
        let set = Arc::new(KeySet {
            keys,
            by_kid,
            signing,
        });
        // A key that is gone verifies nothing from now on, cached verdicts included (the
        // cache is keyed by token, and a kid seldom goes: it is refilled at once).
        let gone = self
            .keyset()
            .by_kid
            .keys()
            .any(|kid| !set.by_kid.contains_key(kid));
        if let Ok(mut w) = self.keys.write() {
            *w = set;
        }
        if gone {
            self.cache.clear();
        }
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

    /// Signs an access token for `user` in session `sid`.
    pub fn issue_access(&self, user: &User, sid: &str) -> Result<String, TokenError> {
        let keys = self.keyset();
        let key = keys
            .keys
            .get(keys.signing)
            .ok_or_else(|| TokenError::Key("no signing key".into()))?;
        let now = self.clock.unix_now();
        let claims = Claims {
            sub: user.id.to_string(),
            sid: sid.to_string(),
            email: user.email.clone(),
            username: user.username.clone(),
            roles: user.roles.clone(),
            iat: now,
            nbf: now,
            exp: now + i64::try_from(self.access_ttl.as_secs()).unwrap_or(900),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut header = Header::new(jwt_alg(self.alg));
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(key_err)
    }

    /// Verifies an access token: signature with a known kid, the configured algorithm only,
    /// issuer, audience, and exp/nbf against the clock. Verified tokens are cached by hash.
    pub fn verify_access(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        let digest = digest::digest(&digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let now = self.clock.unix_now();
        if let Some(v) = self.cache.get(&key) {
            return self.check_times(v, now);
        }
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
        let identity = Identity {
            user_id,
            email: c.email,
            username: c.username,
            roles: c.roles,
            session_id: c.sid,
        };
        let verified = Arc::new(Verified {
            user_uuid,
            values: crate::identity::IdentityValues::new(&identity),
            identity,
            nbf: c.nbf,
            exp: c.exp,
        });
        self.cache.insert(key, verified.clone());
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

    /// The public keys, as a JWK set (empty for HS256, whose key is not public).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keyset()
            .keys
            .iter()
            .filter_map(|k| k.jwk.clone())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The kid that signs now.
    pub fn current_kid(&self) -> Option<String> {
        let set = self.keyset();
        set.keys.get(set.signing).map(|k| k.kid.clone())
    }

    /// Keys that verify, newest first, with their creation time.
    pub fn key_ids(&self) -> Vec<(String, OffsetDateTime)> {
        self.keyset()
            .keys
            .iter()
            .map(|k| (k.kid.clone(), k.created_at))
            .collect()
    }

    // Refresh tokens: "rt2.<session id>.<256 random bits>.<MAC>", stored as SHA-256. The
    // MAC (HMAC-SHA-256 over the session id and the random part, with a key from outside the
    // store, 128 bits kept) tells a token this gateway issued from a guess: only an issued
    // token that has been rotated away counts as a reuse. Builds before it issued
    // "rt1.<session id>.<256 random bits>", still accepted while their session lives.

    pub fn new_refresh(&self, sid: &str) -> Result<Secret, TokenError> {
        let mut secret = [0u8; 32];
        lc_rand::fill(&mut secret).map_err(key_err)?;
        let random = B64.encode(secret);
        let mac = self.refresh_tag(sid, &random);
        Ok(Secret::new(format!("rt2.{sid}.{random}.{mac}")))
    }

    fn refresh_tag(&self, sid: &str, random: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.refresh_mac);
        ctx.update(sid.as_bytes());
        ctx.update(b".");
        ctx.update(random.as_bytes());
        let tag = ctx.sign();
        B64.encode(tag.as_ref().get(..16).unwrap_or_default())
    }

    /// The session a refresh token names, if it is well formed.
    pub fn refresh_session(token: &str) -> Option<&str> {
        let mut parts = token.split('.');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("rt1"), Some(sid), Some(secret), None, None)
                if !sid.is_empty() && secret.len() == 43 =>
            {
                Some(sid)
            }
            (Some("rt2"), Some(sid), Some(secret), Some(mac), None)
                if !sid.is_empty() && secret.len() == 43 && mac.len() == 22 =>
            {
                Some(sid)
            }
            _ => None,
        }
    }

    /// Whether this gateway issued `token`: `Yes` for a current-format token whose MAC
    /// verifies, `Unknown` for an old-format one (no MAC to tell), `No` for anything else.
    pub fn issued(&self, token: &str) -> Issued {
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("rt2"), Some(sid), Some(random), Some(mac))
                if Tokens::refresh_session(token).is_some() =>
            {
                if crate::secret::ct_eq(self.refresh_tag(sid, random).as_bytes(), mac.as_bytes()) {
                    Issued::Yes
                } else {
                    Issued::No
                }
            }
            (Some("rt1"), ..) if Tokens::refresh_session(token).is_some() => Issued::Unknown,
            _ => Issued::No,
        }
    }

    pub fn hash_refresh(token: &str) -> Vec<u8> {
        digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Encrypts a refresh token for the grace-window record (AES-256-GCM, random nonce).
    pub fn seal(&self, token: &Secret) -> Result<Vec<u8>, TokenError> {
        let mut nonce = [0u8; 12];
        lc_rand::fill(&mut nonce).map_err(key_err)?;
        let mut buf = token.expose().as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut buf,
            )
            .map_err(key_err)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn unseal(&self, sealed: &[u8]) -> Option<Secret> {
        let (nonce, body) = sealed.split_at_checked(12)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, aead::Aad::empty(), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Secret::new)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn user() -> User {
        let t = OffsetDateTime::UNIX_EPOCH;
        User {
            v: 1,
            id: uuid::Uuid::new_v4(),
            email: "a@x.test".into(),
            email_verified: true,
            username: Some("alice".into()),
            full_name: None,
            phone: None,
            password: None,
            roles: vec!["customer".into()],
            profile: Default::default(),
            created_at: t,
            updated_at: t,
            blocked: false,
            locked_until: None,
            failed_attempts: 0,
            code_failed_attempts: 0,
            code_locked_until: None,
            security_version: 0,
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
            let jwt = t.issue_access(&u, "sid1").unwrap();
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

    #[tokio::test]
    async fn key_files_are_private_and_rotation_keeps_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let t = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        let old = t.issue_access(&user(), "s").unwrap();
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
        let old = t.issue_access(&user(), "s").unwrap();
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
        let new = t.issue_access(&user(), "s").unwrap();
        assert!(t.verify_access(&new).is_ok());
    }

    #[test]
    fn forged_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let t = tokens(TokenAlgorithm::EdDSA, dir.path(), &clock);
        let jwt = t.issue_access(&user(), "s").unwrap();
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
            t.verify_access(&other.issue_access(&user(), "s").unwrap())
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
