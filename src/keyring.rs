//! The key that lives outside the store. Everything replayable that the store keeps is
//! protected by a key derived from it: the one-time codes' HMAC (a code's hash and its key
//! together would give the code away in a million guesses), the refresh token kept sealed for
//! the reuse grace window, the MAC that tells an issued refresh token from a guess, the
//! device and sign-up bindings, and, in a shared PostgreSQL store, the token signing keys
//! themselves. A dump of the database or a backup of the store alone then yields no usable
//! code or token.
//!
//! The key is `tokens.secret_key` (or `tokens.secret_key_file`, the same file on every
//! instance of a PostgreSQL deployment), or for a single instance `keys_dir/secrets.key`,
//! made (0600) on first start.

use crate::secret::{KeyBytes, Secret};
use aws_lc_rs::hkdf;
use base64::Engine;
use std::path::{Path, PathBuf};

/// What a derived key is for; each gets its own, so no value made for one purpose is ever
/// accepted for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// HMAC of one-time codes.
    OtpHmac,
    /// AES-256-GCM of the refresh token kept for the reuse grace window.
    RefreshSeal,
    /// The MAC inside a refresh token.
    RefreshMac,
    /// The MAC of a device token (lockouts spare devices that signed in before).
    DeviceMac,
    /// The MAC of a sign-up token (the device that chose a password at registration).
    SignupMac,
    /// AES-256-GCM of the signing keys kept in a shared store.
    SigningKeyWrap,
    /// The decoy account ids of addresses that have no account.
    Decoy,
    /// AES-256-GCM of the TOTP secrets.
    TotpSeal,
    /// The keyed hash of recovery codes.
    RecoveryMac,
}

impl KeyPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::OtpHmac => b"authgate otp hmac v1",
            KeyPurpose::RefreshSeal => b"authgate refresh seal v1",
            KeyPurpose::RefreshMac => b"authgate refresh mac v1",
            KeyPurpose::DeviceMac => b"authgate device mac v1",
            KeyPurpose::SignupMac => b"authgate signup mac v1",
            KeyPurpose::SigningKeyWrap => b"authgate signing key wrap v1",
            KeyPurpose::Decoy => b"authgate decoy id v1",
            KeyPurpose::TotpSeal => b"authgate totp seal v1",
            KeyPurpose::RecoveryMac => b"authgate recovery code mac v1",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secret key must be at least 32 random bytes, base64-encoded (`authgate keys secret` makes one)"
    )]
    Format,
}

/// The key, kept only as HKDF's pseudo-random key.
pub struct Keyring {
    prk: hkdf::Prk,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring([redacted])")
    }
}

/// The file a single instance keeps its key in.
pub fn default_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("secrets.key")
}

/// A new key, base64, for a file or a secret manager.
pub fn generate() -> String {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Decodes a key as written in configuration or in its file.
pub fn decode(text: &str) -> Result<KeyBytes, KeyringError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim()))
        .map_err(|_| KeyringError::Format)?;
    if raw.len() < 32 {
        return Err(KeyringError::Format);
    }
    Ok(KeyBytes(raw))
}

impl Keyring {
    pub fn new(key: &KeyBytes) -> Self {
        Keyring {
            prk: hkdf::Salt::new(hkdf::HKDF_SHA256, b"authgate keyring").extract(&key.0),
        }
    }

    /// The configured key (`tokens.secret_key`), or the single instance's file in
    /// `keys_dir` (made on first start when `may_create`).
    pub fn load(
        configured: Option<&Secret>,
        keys_dir: &Path,
        may_create: bool,
    ) -> Result<Self, KeyringError> {
        if let Some(key) = configured {
            return Ok(Keyring::new(&decode(key.expose())?));
        }
        let path = default_path(keys_dir);
        let io = |source| KeyringError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Keyring::new(&decode(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
                std::fs::create_dir_all(keys_dir).map_err(io)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ =
                        std::fs::set_permissions(keys_dir, std::fs::Permissions::from_mode(0o700));
                }
                let text = generate();
                crate::tls::write_private(&path, format!("{text}\n").as_bytes()).map_err(|e| {
                    KeyringError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                tracing::info!(path = %path.display(), "made the secret key that protects codes and tokens in the store; back it up apart from the store");
                Ok(Keyring::new(&decode(&text)?))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The 32-byte key for `purpose`.
    pub fn key(&self, purpose: KeyPurpose) -> KeyBytes {
        let mut out = vec![0u8; 32];
        let filled = self
            .prk
            .expand(&[purpose.label()], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out));
        // Expanding 32 bytes from SHA-256's PRK cannot fail (the limit is 255 × 32).
        debug_assert!(filled.is_ok());
        KeyBytes(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_has_its_own_key_and_the_key_decides() {
        let a = Keyring::new(&KeyBytes(vec![1; 32]));
        let b = Keyring::new(&KeyBytes(vec![2; 32]));
        let all = [
            KeyPurpose::OtpHmac,
            KeyPurpose::RefreshSeal,
            KeyPurpose::RefreshMac,
            KeyPurpose::DeviceMac,
            KeyPurpose::SignupMac,
            KeyPurpose::SigningKeyWrap,
            KeyPurpose::Decoy,
        ];
        for (i, p) in all.iter().enumerate() {
            assert_eq!(a.key(*p).0, a.key(*p).0, "stable");
            assert_ne!(a.key(*p).0, b.key(*p).0, "another key, another derivation");
            for q in &all[i + 1..] {
                assert_ne!(a.key(*p).0, a.key(*q).0, "{p:?} vs {q:?}");
            }
        }
        assert!(!format!("{a:?}").contains('1'));
        // The configured key wins over the file.
        let configured = Secret::new(generate());
        let dir = tempfile::tempdir().unwrap();
        let k = Keyring::load(Some(&configured), dir.path(), false).unwrap();
        let same = Keyring::new(&decode(configured.expose()).unwrap());
        assert_eq!(
            k.key(KeyPurpose::OtpHmac).0,
            same.key(KeyPurpose::OtpHmac).0
        );
    }

    #[test]
    fn keys_decode_from_base64_of_at_least_32_bytes() {
        assert!(decode(&generate()).is_ok());
        assert!(decode("c2hvcnQ=").is_err());
        assert!(decode("not base64 at all!").is_err());
    }

    #[test]
    fn a_single_instance_makes_its_key_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        assert!(
            Keyring::load(None, &keys, false).is_err(),
            "not made unless allowed"
        );
        let first = Keyring::load(None, &keys, true).unwrap();
        let again = Keyring::load(None, &keys, false).unwrap();
        assert_eq!(
            first.key(KeyPurpose::OtpHmac).0,
            again.key(KeyPurpose::OtpHmac).0
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(default_path(&keys))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
