//! Accounts: registration, email verification, sign-in by password or emailed code, password
//! reset (one or two steps) and change, profile, roles and blocking. Every flow of the seed
//! backends lands here. Enumeration-safe by default: the code-sending flows answer the same
//! whether or not the address has an account.

use crate::clock::SharedClock;
use crate::codes::Codes;
use crate::config::{AccountsConfig, MfaConfig, OtpConfig};
use crate::mail::Mailer;
use crate::passwords::{PasswordError, Passwords};
use crate::second_factor::SecondFactorKeys;
use crate::secret::Secret;
use crate::sessions::Sessions;
use crate::store::{Store, StoreError, UniqueField, UpdateError, User};

mod admin;
pub mod bindings;
mod codes;
mod email_change;
mod fields;
pub mod guard;
mod mfa;
mod passkeys;
mod recovery;
mod register;
mod sign_in;

pub use mfa::{FactorsStatus, SecondStep, SignIn};
pub use passkeys::Ceremony;

use bindings::Bindings;
use guard::Guard;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid request")]
    Invalid(BTreeMap<String, String>),
    #[error("{} already taken", .0.as_str())]
    AlreadyExists(UniqueField),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("email not verified")]
    EmailNotVerified,
    #[error("account blocked")]
    Blocked { retry_after: Option<Duration> },
    #[error("no such account")]
    UserDoesNotExist,
    #[error("already verified")]
    AlreadyVerified,
    #[error("invalid code")]
    InvalidOtp,
    #[error("code expired")]
    OtpExpired,
    #[error("too many tries")]
    AttemptsExceeded { retry_after: Duration },
    #[error("a code was sent recently")]
    OtpStillValid { retry_after: Duration },
    #[error("invalid reset token")]
    InvalidResetToken,
    #[error("reset token expired")]
    ResetTokenExpired,
    #[error("sign in again first")]
    ReauthRequired,
    /// An `mfa_token` that is unknown, used, expired or out of tries.
    #[error("the sign-in step is over")]
    InvalidSecondStep,
    #[error("not found")]
    NotFound,
    /// Passkeys are off: the public host is no domain a passkey can be bound to.
    #[error("passkeys are not available")]
    PasskeysOff,
    /// A passkey answer that does not verify, or names no ceremony under way.
    #[error("passkey refused")]
    InvalidPasskey,
    /// Only a session that showed two factors may do this (remove the last second factor).
    #[error("second factor needed")]
    SecondFactorNeeded,
    #[error("busy")]
    Busy,
    #[error("rate limited")]
    RateLimited(crate::ratelimit::Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A refresh the session layer refused (see [`Accounts::refresh`]).
    #[error(transparent)]
    Session(#[from] crate::sessions::SessionError),
    #[error("internal: {0}")]
    Internal(String),
}

impl AccountError {
    fn field(name: &str, message: impl Into<String>) -> Self {
        AccountError::Invalid(BTreeMap::from([(name.to_string(), message.into())]))
    }
}

impl From<crate::ratelimit::Refused> for AccountError {
    fn from(r: crate::ratelimit::Refused) -> Self {
        AccountError::RateLimited(r)
    }
}

/// Who is asking: the client address every quota starts from, the device token it
/// presented (see [`bindings`]), which gives the account's own device a quota and a lock
/// count of its own, and its user agent, which names the device a sign-in makes.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: std::net::IpAddr,
    pub device: Option<&'a str>,
    pub user_agent: &'a str,
}

impl<'a> Client<'a> {
    pub fn new(ip: std::net::IpAddr, device: Option<&'a str>) -> Self {
        Client {
            ip,
            device,
            user_agent: "",
        }
    }

    pub fn with_user_agent(self, user_agent: &'a str) -> Self {
        Client { user_agent, ..self }
    }

    /// The same client without its device token: a signed-in caller's tries count as the
    /// account's, not as a device's.
    fn without_device(self) -> Self {
        Client {
            device: None,
            ..self
        }
    }
}

/// A finished sign-in, whichever flow and door it came through: the account as it is now,
/// its new session's token pair, and the device token the client keeps (see [`bindings`]).
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub pair: crate::sessions::TokenPair,
    pub device: Secret,
}

/// Which sessions a sign-out ends.
#[derive(Debug)]
pub enum SignOut {
    /// The caller's own.
    This,
    /// These of the caller's account (ids of other accounts' sessions are ignored).
    Sessions(Vec<String>),
    /// Every session of the account.
    Everywhere,
}

/// What a sign-out ended.
#[derive(Debug)]
pub struct SignedOut {
    pub revoked: Vec<String>,
    /// The caller's own session was among them: its cookies go too.
    pub this_one: bool,
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => AccountError::Busy,
            PasswordError::Policy(m) => AccountError::field("password", m),
            PasswordError::Internal(m) => AccountError::Internal(m),
        }
    }
}

impl<E> From<UpdateError<E>> for AccountError
where
    AccountError: From<E>,
{
    fn from(e: UpdateError<E>) -> Self {
        match e {
            UpdateError::Store(StoreError::Conflict(f)) => AccountError::AlreadyExists(f),
            UpdateError::Store(StoreError::NotFound) => AccountError::UserDoesNotExist,
            UpdateError::Store(s) => AccountError::Store(s),
            UpdateError::Rejected(r) => AccountError::from(r),
        }
    }
}

impl From<std::convert::Infallible> for AccountError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

/// A registration as submitted.
#[derive(Debug, Default)]
pub struct Registration {
    pub email: String,
    pub password: Option<Secret>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub phone: Option<String>,
    pub profile: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A profile change: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfilePatch {
    pub username: Option<Option<String>>,
    pub full_name: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub profile: Option<serde_json::Map<String, serde_json::Value>>,
}

pub use fields::{normalize_email, normalize_full_name, normalize_phone, normalize_username};

pub struct Accounts {
    store: Store,
    passwords: Passwords,
    codes: Codes,
    mailer: Mailer,
    sessions: Arc<Sessions>,
    clock: SharedClock,
    cfg: AccountsConfig,
    otp: OtpConfig,
    reveal: bool,
    /// Failure counting, locks, devices and decoys (see [`guard`]).
    guard: Guard,
    /// Device and sign-up tokens.
    bindings: Bindings,
    /// The quotas every flow checks itself, so that no door can forget one.
    limits: Arc<crate::ratelimit::RateLimits>,
    /// TOTP sealing and recovery-code hashing.
    factors: SecondFactorKeys,
    mfa: MfaConfig,
    /// The relying party, when passkeys are on.
    webauthn: Option<webauthn_rs::Webauthn>,
}

/// The outcome of an email verification.
#[derive(Debug)]
pub struct Verified {
    pub user: User,
    /// The password chosen at registration was dropped: the client that verified did not
    /// present the sign-up token of the one that chose it (see [`bindings`]). It gets a
    /// reset token instead, to choose one at once (it has just proved the mailbox).
    pub reset: Option<(Secret, OffsetDateTime)>,
    /// The client asked to be signed in once the address is verified (the hosted sign-up
    /// page does: the code proved the mailbox, as a code sign-in does).
    pub signed_in: Option<SignedIn>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("reveal", &self.reveal)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::too_many_arguments)]
impl Accounts {
    pub fn new(
        store: Store,
        passwords: Passwords,
        codes: Codes,
        mailer: Mailer,
        sessions: Arc<Sessions>,
        clock: SharedClock,
        cfg: AccountsConfig,
        otp: OtpConfig,
        reveal: bool,
        keyring: &crate::keyring::Keyring,
        limits: Arc<crate::ratelimit::RateLimits>,
        factors: SecondFactorKeys,
        mfa: MfaConfig,
        webauthn: Option<webauthn_rs::Webauthn>,
    ) -> Self {
        Accounts {
            limits,
            factors,
            mfa,
            webauthn,
            guard: Guard::new(
                store.clone(),
                clock.clone(),
                &otp,
                &keyring.key(crate::keyring::KeyPurpose::Decoy),
            ),
            bindings: Bindings::new(keyring),
            store,
            passwords,
            codes,
            mailer,
            sessions,
            clock,
            cfg,
            otp,
            reveal,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// A device token for `user` (see [`bindings`]): the device `presented` names again
    /// when it is one of this account's, else a new one.
    pub fn device_token(&self, user: &User, presented: Option<&str>) -> Secret {
        let known = presented.and_then(|t| self.bindings.device(user, t));
        self.bindings.device_token(user, known)
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn check_code_format(&self, code: &str) -> Result<(), AccountError> {
        let c = code.trim();
        if c.len() != self.otp.length || !c.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AccountError::field(
                "code",
                format!("must be {} digits", self.otp.length),
            ));
        }
        Ok(())
    }

    fn validate_profile(
        &self,
        p: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let size = serde_json::to_vec(p).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.cfg.profile_max_bytes {
            return Err(format!(
                "must be at most {} bytes as JSON",
                self.cfg.profile_max_bytes
            ));
        }
        Ok(())
    }

    /// Email (required) validated and normalized, or the field error.
    fn email(&self, raw: &str) -> Result<String, AccountError> {
        normalize_email(raw).map_err(|m| AccountError::field("email", m))
    }
}
