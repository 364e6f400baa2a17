//! Second factors as values: TOTP authenticators (RFC 6238, through `totp-rs`) and recovery
//! codes. The store keeps neither in a usable form: a TOTP secret is sealed with a key
//! outside the store (AES-256-GCM, bound to the account id), and a recovery code is kept as
//! an HMAC keyed the same way, so a copy of the store yields no code. The flows that use
//! them (enrolment, sign-in, step-up) are in `accounts::mfa`.

use crate::keyring::{KeyPurpose, Keyring};
use crate::secret::{Secret, ct_eq};
use crate::store::{TotpFactor, UserId};
use aws_lc_rs::{aead, hmac};
use time::OffsetDateTime;

/// TOTP as every authenticator app reads it: SHA-1, 6 digits, 30-second steps.
const DIGITS: u8 = 6;
const STEP: u64 = 30;
/// Steps accepted either side of now (RFC 6238, 5.2: clocks drift).
const SKEW: u8 = 1;
/// 160 bits, RFC 4226's recommendation for HMAC-SHA1.
const SECRET_BYTES: usize = 20;

/// Recovery codes made at once.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code, without the dash: 10 of 32 symbols, 50 bits each.
const RECOVERY_LEN: usize = 10;
/// Crockford's base32 alphabet (no I, L, O, U: nothing to misread), lower case.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error("sealing: {0}")]
    Seal(String),
    #[error("totp: {0}")]
    Totp(String),
}

/// A new authenticator's secret, as shown to its owner once.
#[derive(Debug)]
pub struct Enrolment {
    /// What the store keeps.
    pub factor: TotpFactor,
    /// RFC 4648 base32, without padding, for typing into an app.
    pub secret: Secret,
    /// The `otpauth://totp/...` URI (and QR code) the apps scan.
    pub uri: Secret,
}

/// The keys of the second factors and the TOTP label.
pub struct SecondFactorKeys {
    seal: aead::LessSafeKey,
    recovery: hmac::Key,
    issuer: String,
}

impl std::fmt::Debug for SecondFactorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactorKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl SecondFactorKeys {
    /// `issuer` names the account in the apps (`mfa.issuer`).
    pub fn new(keyring: &Keyring, issuer: &str) -> Result<Self, FactorError> {
        let seal = aead::UnboundKey::new(&aead::AES_256_GCM, &keyring.key(KeyPurpose::TotpSeal).0)
            .map_err(|e| FactorError::Seal(e.to_string()))?;
        Ok(SecondFactorKeys {
            seal: aead::LessSafeKey::new(seal),
            recovery: hmac::Key::new(hmac::HMAC_SHA256, &keyring.key(KeyPurpose::RecoveryMac).0),
            // totp-rs refuses a ':' in the label's parts (it separates them).
            issuer: issuer.replace(':', " "),
        })
    }

    /// A new authenticator for `user` (named `account` in the app), sealed for the store.
    pub fn enrol(
        &self,
        user: &UserId,
        account: &str,
        now: OffsetDateTime,
    ) -> Result<Enrolment, FactorError> {
        let mut raw = [0u8; SECRET_BYTES];
        rand::fill(&mut raw);
        let totp = self.totp(raw.to_vec(), account)?;
        let uri = totp
            .to_url()
            .map_err(|e| FactorError::Totp(e.to_string()))?;
        let secret = totp_rs::Secret::from(raw.to_vec()).to_base32();
        let sealed = self.seal(user, &raw)?;
        zeroize::Zeroize::zeroize(&mut raw);
        Ok(Enrolment {
            factor: TotpFactor {
                sealed,
                created_at: now,
                last_step: 0,
            },
            secret: Secret::new(secret),
            uri: Secret::new(uri),
        })
    }

    fn totp(&self, secret: Vec<u8>, account: &str) -> Result<totp_rs::Totp, FactorError> {
        totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_skew(u16::from(SKEW))
            .with_step_duration(STEP)
            .with_secret(secret)
            .with_issuer(Some(self.issuer.as_str()))
            .with_account_name(account.replace(':', " "))
            .build()
            .map_err(|e| FactorError::Totp(e.to_string()))
    }

    /// The time step `code` is right for, within a step of `now`, and later than the
    /// factor's last accepted one (a code is good once). None for anything else, malformed
    /// input included.
    pub fn check_totp(
        &self,
        user: &UserId,
        factor: &TotpFactor,
        code: &str,
        now_unix: i64,
    ) -> Option<u64> {
        let code = code.trim();
        if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let raw = self.unseal(user, &factor.sealed)?;
        let totp = self.totp(raw, "").ok()?;
        let now = u64::try_from(now_unix).ok()?;
        // The earliest matching step that is still unused: a code from the step before,
        // already used, does not hide the same digits in a later one.
        let origin = now / STEP;
        (origin.saturating_sub(u64::from(SKEW))..=origin + u64::from(SKEW))
            .filter(|step| *step > factor.last_step)
            .find(|step| {
                ct_eq(
                    totp.generate(step * STEP).to_string().as_bytes(),
                    code.as_bytes(),
                )
            })
    }

    /// Whether this key opens `factor`'s secret (it was sealed with the same key).
    pub fn opens(&self, user: &UserId, factor: &TotpFactor) -> bool {
        self.unseal(user, &factor.sealed).is_some()
    }

    fn seal(&self, user: &UserId, raw: &[u8]) -> Result<Vec<u8>, FactorError> {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let mut buf = raw.to_vec();
        self.seal
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(user.as_bytes()),
                &mut buf,
            )
            .map_err(|e| FactorError::Seal(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn unseal(&self, user: &UserId, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(12)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, aead::Aad::from(user.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }

    /// Ten new recovery codes (shown once) and their hashes (kept).
    pub fn recovery_codes(&self, user: &UserId) -> (Vec<Secret>, Vec<Vec<u8>>) {
        (0..RECOVERY_CODES)
            .map(|_| {
                let chars: String = (0..RECOVERY_LEN)
                    .map(|i| {
                        let c = char::from(
                            *RECOVERY_ALPHABET
                                .get(rand::random_range(0..RECOVERY_ALPHABET.len()))
                                .unwrap_or(&b'0'),
                        );
                        if i == RECOVERY_LEN / 2 {
                            format!("-{c}")
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                let hash = self.recovery_hash(user, &chars);
                (Secret::new(chars), hash)
            })
            .unzip()
    }

    /// The kept form of a recovery code as typed: case, spaces and dashes do not matter, and
    /// the Crockford look-alikes (I, L for 1; O for 0) read as what they look like.
    fn recovery_hash(&self, user: &UserId, typed: &str) -> Vec<u8> {
        let canonical: String = typed
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| match c.to_ascii_lowercase() {
                'i' | 'l' => '1',
                'o' => '0',
                c => c,
            })
            .collect();
        let mut ctx = hmac::Context::with_key(&self.recovery);
        ctx.update(b"authgate-recovery-v1");
        ctx.update(user.as_bytes());
        ctx.update(canonical.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// Which of `kept` the typed code is, if any.
    pub fn find_recovery_code(
        &self,
        user: &UserId,
        kept: &[Vec<u8>],
        typed: &str,
    ) -> Option<usize> {
        if typed.len() > 64 {
            return None;
        }
        let h = self.recovery_hash(user, typed);
        kept.iter().position(|k| ct_eq(k, &h))
    }
}

/// Looks like a recovery code rather than a TOTP code: anything but six digits.
pub fn is_recovery_code(code: &str) -> bool {
    let c = code.trim();
    !(c.len() == usize::from(DIGITS) && c.bytes().all(|b| b.is_ascii_digit()))
}

/// An `otpauth://` URI as a QR code, in SVG: drawn here, so the page loads nothing from
/// elsewhere.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::KeyBytes;

    fn keys() -> SecondFactorKeys {
        SecondFactorKeys::new(&Keyring::new(&KeyBytes(vec![3; 32])), "authgate test").unwrap()
    }

    /// RFC 6238, appendix B: the SHA-1 vectors (8 digits there; the last 6 here, which is
    /// what a 6-digit TOTP of the same secret is).
    #[test]
    fn rfc_6238_vectors() {
        let k = keys();
        let user = uuid::Uuid::new_v4();
        let secret = b"12345678901234567890";
        let factor = TotpFactor {
            sealed: k.seal(&user, secret).unwrap(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            last_step: 0,
        };
        for (t, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            let six = &code[2..];
            let step = k.check_totp(&user, &factor, six, t).expect(code);
            assert_eq!(step, u64::try_from(t).unwrap() / STEP);
            // Once used, the same step is refused.
            let used = TotpFactor {
                last_step: step,
                ..factor.clone()
            };
            assert_eq!(k.check_totp(&user, &used, six, t), None, "replay at {t}");
        }
        assert_eq!(k.check_totp(&user, &factor, "000000", 59), None);
        assert_eq!(k.check_totp(&user, &factor, "28708", 59), None);
        assert_eq!(k.check_totp(&user, &factor, "2870822", 59), None);
        // Sealed for one account, the secret opens for no other.
        assert_eq!(
            k.check_totp(&uuid::Uuid::new_v4(), &factor, "287082", 59),
            None
        );
    }

    #[test]
    fn a_step_either_side_and_no_further() {
        let k = keys();
        let user = uuid::Uuid::new_v4();
        let e = k
            .enrol(&user, "a@x.test", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        let totp = totp_rs::Totp::from_url(e.uri.expose()).unwrap();
        let now = 1_800_000_000_i64;
        let at = |t: i64| totp.generate(u64::try_from(t).unwrap()).to_string();
        assert!(k.check_totp(&user, &e.factor, &at(now - 30), now).is_some());
        assert!(k.check_totp(&user, &e.factor, &at(now + 30), now).is_some());
        assert!(k.check_totp(&user, &e.factor, &at(now - 90), now).is_none());
        assert!(k.check_totp(&user, &e.factor, &at(now + 90), now).is_none());
        assert!(e.uri.expose().starts_with("otpauth://totp/"));
        assert!(
            e.uri
                .expose()
                .contains(&format!("secret={}", e.secret.expose()))
        );
        assert!(qr_svg(e.uri.expose()).unwrap().starts_with("<?xml"));
    }

    #[test]
    fn recovery_codes_are_kept_hashed_and_read_forgivingly() {
        let k = keys();
        let user = uuid::Uuid::new_v4();
        let (codes, kept) = k.recovery_codes(&user);
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(kept.len(), RECOVERY_CODES);
        let first = codes[0].expose();
        assert_eq!(first.len(), RECOVERY_LEN + 1);
        assert!(
            !kept
                .iter()
                .any(|h| h.windows(first.len()).any(|w| w == first.as_bytes()))
        );
        assert_eq!(k.find_recovery_code(&user, &kept, first), Some(0));
        let sloppy = first.to_uppercase().replace('-', " ");
        assert_eq!(k.find_recovery_code(&user, &kept, &sloppy), Some(0));
        assert_eq!(
            k.find_recovery_code(&uuid::Uuid::new_v4(), &kept, first),
            None
        );
        assert_eq!(k.find_recovery_code(&user, &kept, "00000-00000"), None);
        assert!(is_recovery_code(first));
        assert!(!is_recovery_code(" 123456 "));
    }
}
