//! The records the store keeps. Each is serialized with a version number, so a record written
//! by a newer authgate is refused rather than misread.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The record format this build writes and reads.
pub const RECORD_VERSION: u32 = 1;

pub type UserId = uuid::Uuid;

/// A stored password hash (PHC string). Not secret in the way a password is, but never
/// printed or sent either.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub v: u32,
    pub id: UserId,
    /// Normalized (trimmed, lower-case).
    pub email: String,
    pub email_verified: bool,
    /// Normalized (lower-case).
    pub username: Option<String>,
    pub full_name: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub password: Option<PasswordHash>,
    pub roles: Vec<String>,
    pub profile: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Blocked by an administrator until unblocked.
    pub blocked: bool,
    /// Temporarily locked after repeated password failures (see `failed_attempts`).
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    /// Failed password attempts by clients without a device token of this account, since
    /// the last success or lockout (`locked_until` is their lock).
    pub failed_attempts: u32,
    /// The same for one-time codes: a mailbox's proof is refused only because of failed
    /// codes, never because of failed passwords.
    #[serde(default)]
    pub code_failed_attempts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub code_locked_until: Option<OffsetDateTime>,
    /// Bumped when the password or the email address changes, the account is blocked or
    /// its roles change: a
    /// sign-in that verified an older version is undone (the reset-while-signing-in race).
    #[serde(default)]
    pub security_version: u64,
    /// Second factors: TOTP, recovery codes (and, later, passkeys).
    #[serde(default, skip_serializing_if = "SecondFactors::is_empty")]
    pub factors: SecondFactors,
}

/// An account's second factors. Nothing here is usable from a copy of the store alone: the
/// TOTP secret is sealed with a key outside it and the recovery codes are kept as keyed
/// hashes (see `crate::second_factor`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SecondFactors {
    /// A confirmed authenticator app: asked for at every sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpFactor>,
    /// An enrolment started and not yet confirmed by a first code: asks for nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_pending: Option<TotpFactor>,
    /// The keyed hash of each unused recovery code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_codes: Vec<Vec<u8>>,
    /// WebAuthn credentials (public keys only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<PasskeyRecord>,
}

/// A registered passkey: its public key, signature counter and backup flags (kept by
/// `webauthn-rs`'s `Passkey`), and what its owner calls it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyRecord {
    /// The credential id, base64url: how the API names it.
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub key: webauthn_rs::prelude::Passkey,
}

impl PartialEq for PasskeyRecord {
    fn eq(&self, other: &Self) -> bool {
        // The key has no equality of its own: compared as it is stored.
        self.id == other.id
            && self.name == other.name
            && self.created_at == other.created_at
            && self.last_used_at == other.last_used_at
            && serde_json::to_value(&self.key).ok() == serde_json::to_value(&other.key).ok()
    }
}

/// A WebAuthn ceremony under way: the options sent, kept server-side until the answer comes
/// back once (single use), for a few minutes. Keyed by its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    pub v: u32,
    pub kind: ChallengeKind,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// `webauthn-rs`'s ceremony state, as it serializes it.
    pub state: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChallengeKind {
    /// Adding a passkey to `user`.
    Register { user: UserId, name: String },
    /// A sign-in (or a step-up) with any discoverable passkey.
    Discoverable,
    /// The second step of `user`'s sign-in.
    SecondFactor { user: UserId },
}

impl SecondFactors {
    pub fn is_empty(&self) -> bool {
        self.totp.is_none()
            && self.totp_pending.is_none()
            && self.recovery_codes.is_empty()
            && self.passkeys.is_empty()
    }

    /// Whether a sign-in must show a second factor.
    pub fn any(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }
}

/// A TOTP authenticator (RFC 6238: SHA-1, 6 digits, 30 s).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct TotpFactor {
    /// The shared secret, sealed (AES-256-GCM with a key outside the store, bound to the
    /// account id).
    pub sealed: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The last time step a code was accepted for: a code is good once (RFC 6238, 5.2).
    #[serde(default)]
    pub last_step: u64,
}

impl std::fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpFactor")
            .field("created_at", &self.created_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// How a session's holder proved who they are. A session keeps its factors, so that every
/// access token it is refreshed into says the same (`amr`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AuthFactor {
    Password,
    /// A code mailed to the account's address.
    EmailCode,
    Totp,
    RecoveryCode,
    /// A passkey, with user verification (a PIN or biometric on the device): two factors.
    Passkey,
}

impl AuthFactor {
    /// The RFC 8176 authentication method reference.
    pub fn amr(self) -> &'static str {
        match self {
            AuthFactor::Password => "pwd",
            // A one-time password, whichever way it came.
            AuthFactor::EmailCode | AuthFactor::Totp | AuthFactor::RecoveryCode => "otp",
            AuthFactor::Passkey => "hwk",
        }
    }

    /// Something known or received (a first factor) rather than something held.
    fn is_first(self) -> bool {
        matches!(self, AuthFactor::Password | AuthFactor::EmailCode)
    }

    /// Two independent factors: a first one and something held, or a passkey (held, and
    /// unlocked by user verification: webauthn-rs requires it of every passkey ceremony).
    pub fn two_factor(factors: &[AuthFactor]) -> bool {
        factors.contains(&AuthFactor::Passkey)
            || (factors.iter().any(|f| f.is_first()) && factors.iter().any(|f| !f.is_first()))
    }

    /// The `amr` claim for these factors: each method once, and `mfa` for two factors.
    pub fn amr_of(factors: &[AuthFactor]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(factors.len() + 1);
        for f in factors {
            if !out.iter().any(|a| a == f.amr()) {
                out.push(f.amr().to_string());
            }
        }
        if AuthFactor::two_factor(factors) {
            out.push("mfa".into());
        }
        out
    }
}

impl User {
    /// An account as a new one starts: its address and roles, unlocked, never signed in.
    pub fn new(
        email: String,
        email_verified: bool,
        roles: Vec<String>,
        now: time::OffsetDateTime,
    ) -> User {
        User {
            v: RECORD_VERSION,
            id: uuid::Uuid::new_v4(),
            email,
            email_verified,
            username: None,
            full_name: None,
            phone: None,
            password: None,
            roles,
            profile: Default::default(),
            created_at: now,
            updated_at: now,
            blocked: false,
            locked_until: None,
            failed_attempts: 0,
            code_failed_attempts: 0,
            code_locked_until: None,
            security_version: 0,
            factors: SecondFactors::default(),
        }
    }
}

/// What a one-time code is for. A code made for one purpose never serves another.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    VerifyEmail,
    Login,
    ResetPassword,
    /// Confirms a new address for a signed-in account; the code is bound to that address.
    ChangeEmail,
    /// The second step of a sign-in (the `mfa_token`): never mailed, it holds the first
    /// factor until the second one is shown.
    SecondStep,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::Login => "login",
            Purpose::ResetPassword => "reset_password",
            Purpose::ChangeEmail => "change_email",
            Purpose::SecondStep => "second_step",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            Purpose::VerifyEmail => 1,
            Purpose::Login => 2,
            Purpose::ResetPassword => 3,
            Purpose::ChangeEmail => 4,
            Purpose::SecondStep => 5,
        }
    }
}

/// A one-time code: only its keyed hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Code {
    pub v: u32,
    pub user_id: UserId,
    pub purpose: Purpose,
    /// HMAC-SHA256 of the code, keyed with the server's code key and bound to user and purpose.
    pub hash: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Wrong tries so far; at the limit the code is dead.
    pub attempts: u32,
    /// A second step's first factor (the one already shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_factor: Option<AuthFactor>,
}

/// A signed-in device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub v: u32,
    pub id: String,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// Absolute end of the session, whatever its activity.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub ip: String,
    pub user_agent: String,
    pub device: String,
    pub os: String,
    /// The refresh token's state (rotation and the reuse grace window).
    #[serde(default)]
    pub refresh: Option<RefreshState>,
    /// How the sign-in was proved (empty in sessions made before this was kept: one factor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<AuthFactor>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefreshState {
    /// SHA-256 of the refresh token that is valid now.
    pub current_hash: Vec<u8>,
    /// Idle expiry of the current refresh token.
    #[serde(with = "time::serde::rfc3339")]
    pub current_expires_at: OffsetDateTime,
    /// The token rotated away last, and when: presented again within the grace window it
    /// gets `next_sealed` back instead of revoking the session.
    pub previous_hash: Option<Vec<u8>>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// The current refresh token, encrypted with a server key, for that replay.
    pub next_sealed: Option<Vec<u8>>,
}

/// A short-lived, single-use password reset token (two-step reset). Keyed by its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResetToken {
    pub v: u32,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The address whose code earned the token: it resets the password only while that
    /// address is still the account's (empty in tokens made before this was kept).
    #[serde(default)]
    pub email: String,
}

/// A session made (`live`) or ended, as other instances sharing the store hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub session_id: String,
    pub user_id: UserId,
    /// Unix seconds (0 for an ended session).
    pub expires_at: i64,
    pub live: bool,
}

/// Failures counted against a login that matches no account, kept as an account's are (in
/// the store, written and flushed the same way), so that neither the answers nor their
/// timing tell the two apart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LockRecord {
    pub v: u32,
    pub failed_attempts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    /// Last change, for pruning.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}
