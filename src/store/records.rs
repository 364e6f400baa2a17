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
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::Login => "login",
            Purpose::ResetPassword => "reset_password",
            Purpose::ChangeEmail => "change_email",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            Purpose::VerifyEmail => 1,
            Purpose::Login => 2,
            Purpose::ResetPassword => 3,
            Purpose::ChangeEmail => 4,
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
