//! The signing keys: made, kept on disk or sealed in a shared store, loaded, rotated, and
//! published as a JWK set.

use super::*;

/// One signing key as kept on disk (and, sealed, in a shared store).
#[derive(Serialize, Deserialize)]
pub(super) struct KeyFile {
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
    pub(super) fn sealed_with(mut self, wrap: &aead::LessSafeKey) -> Result<KeyFile, TokenError> {
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
    pub(super) fn private(&self, wrap: Option<&aead::LessSafeKey>) -> Result<String, TokenError> {
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

pub(super) fn wrap_key(keyring: &Keyring) -> Result<aead::LessSafeKey, TokenError> {
    let k = keyring.key(KeyPurpose::SigningKeyWrap);
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &k.0).map_err(key_err)?;
    Ok(aead::LessSafeKey::new(unbound))
}

pub(super) struct LoadedKey {
    pub(super) kid: String,
    pub(super) created_at: OffsetDateTime,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    pub(super) jwk: Option<serde_json::Value>,
}

pub(super) struct KeySet {
    /// Newest first.
    pub(super) keys: Vec<LoadedKey>,
    pub(super) by_kid: HashMap<String, usize>,
    /// The one that signs: the newest, or with a shared store the newest that every
    /// instance has had time to load (see [`ACTIVATION_DELAY`]).
    pub(super) signing: usize,
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

pub(super) fn jwt_alg(a: TokenAlgorithm) -> Algorithm {
    match a {
        TokenAlgorithm::EdDSA => Algorithm::EdDSA,
        TokenAlgorithm::ES256 => Algorithm::ES256,
        TokenAlgorithm::HS256 => Algorithm::HS256,
    }
}

pub(super) fn key_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Key(e.to_string())
}

pub(super) fn load_key(
    file: KeyFile,
    wrap: Option<&aead::LessSafeKey>,
) -> Result<LoadedKey, TokenError> {
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
pub(super) fn new_key(alg: TokenAlgorithm, now: OffsetDateTime) -> Result<KeyFile, TokenError> {
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
pub(super) fn select_keys(
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
pub(super) fn read_keys(
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

impl Tokens {
    /// Whether a token named an unknown key id since the last call (then reload the keys).
    pub fn take_reload_wanted(&self) -> bool {
        self.reload_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn retire_after(&self) -> Duration {
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

    pub(super) fn reload_from_dir(&self) -> Result<(), TokenError> {
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

    pub(super) fn install(&self, keys: Vec<LoadedKey>) {
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
            self.key_epoch
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.cache.clear();
        }
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
}
