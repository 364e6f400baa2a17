//! Accounts: registration, email verification, sign-in by password or emailed code, password
//! reset (one or two steps) and change, profile, roles and blocking. Every flow of the seed
//! backends lands here. Enumeration-safe by default: the code-sending flows answer the same
//! whether or not the address has an account.

use crate::clock::SharedClock;
use crate::codes::{CodeOutcome, Codes};
use crate::config::{AccountsConfig, OtpConfig};
use crate::mail::{CodeMail, Mailer};
use crate::passwords::{PasswordError, Passwords};
use crate::secret::Secret;
use crate::sessions::Sessions;
use crate::store::{
    Purpose, RECORD_VERSION, ResetToken, Store, StoreError, UniqueField, UpdateError, User, UserId,
};
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
    #[error("busy")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl AccountError {
    fn field(name: &str, message: impl Into<String>) -> Self {
        AccountError::Invalid(BTreeMap::from([(name.to_string(), message.into())]))
    }
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

// Validation: pure functions, one per field, each saying what is wrong in a sentence.

pub fn normalize_email(raw: &str) -> Result<String, String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        return Err("is required".into());
    }
    if e.len() > 254 || !email_address::EmailAddress::is_valid(&e) || !e.contains('@') {
        return Err("is not an email address".into());
    }
    let domain = e.rsplit('@').next().unwrap_or("");
    if !domain.contains('.') && domain != "localhost" {
        return Err("is not an email address".into());
    }
    Ok(e)
}

pub fn normalize_username(raw: &str) -> Result<String, String> {
    let u = raw.trim().to_lowercase();
    let ok_chars = u
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !(3..=32).contains(&u.len())
        || !ok_chars
        || !u.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return Err(
            "must be 3 to 32 letters, digits, '_', '.' or '-', starting with a letter or digit"
                .into(),
        );
    }
    Ok(u)
}

/// E.164: '+', a non-zero country digit, up to 15 digits in all. Spaces, dashes and
/// parentheses are accepted and removed.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let p: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = p.strip_prefix('+').unwrap_or("");
    let valid = digits.len() >= 8
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !valid {
        return Err("must be an international number such as +14155550100 (E.164)".into());
    }
    Ok(p)
}

pub fn normalize_full_name(raw: &str) -> Result<String, String> {
    let n = raw.trim().to_string();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err("must be 1 to 100 characters, without control characters".into());
    }
    Ok(n)
}

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
    /// Failed sign-ins against logins that match no account, paced and locked exactly like a
    /// real account's, so that USER_BLOCKED does not tell an attacker which logins exist.
    /// In memory and bounded: a login sprayed out of it starts again from zero.
    phantoms: quick_cache::sync::Cache<String, LockState>,
    /// Codes "sent" to addresses that got none (no account, blocked, already verified), by
    /// purpose and address: guessing at one runs out of tries and expires like a real code,
    /// so ATTEMPTS_EXCEEDED does not tell which addresses have an account. Bounded likewise.
    phantom_codes: quick_cache::sync::Cache<(Purpose, String), PhantomCode>,
    /// Held across each read-modify-write of the two tables above, so that parallel
    /// failures are all counted, as the store's transactions count a real account's.
    phantom_update: std::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy)]
struct PhantomCode {
    tries_left: u32,
    expires_at: OffsetDateTime,
}

/// A guess at a code pretended sent: past its lifetime (not counted, as for a real code), or
/// wrong (counted), with the answer a real code would give.
#[derive(Debug)]
enum Guess {
    Expired,
    Wrong(AccountError),
}

/// A failure counter and lock, as kept on a user record (or for a phantom login).
#[derive(Debug, Clone, Copy, Default)]
struct LockState {
    failed_attempts: u32,
    locked_until: Option<OffsetDateTime>,
}

/// The phantom table's key for an email address: the same for a sign-in by password and a
/// guess at a code, so both count towards one lock, as they do on an account.
fn phantom_key_email(email: &str) -> String {
    format!("email:{email}")
}

/// The store's key of the resend cooldown of `purpose` codes to `email`.
fn cooldown_key(purpose: Purpose, email: &str) -> String {
    format!("{}:{email}", purpose.as_str())
}

/// Phantom logins remembered at most (about 100 bytes each).
const MAX_PHANTOMS: usize = 100_000;

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
    ) -> Self {
        Accounts {
            store,
            passwords,
            codes,
            mailer,
            sessions,
            clock,
            cfg,
            otp,
            reveal,
            phantoms: quick_cache::sync::Cache::new(MAX_PHANTOMS),
            phantom_codes: quick_cache::sync::Cache::new(MAX_PHANTOMS),
            phantom_update: std::sync::Mutex::new(()),
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

    /// Sends a code for `purpose` to `user`, starting that address's cooldown.
    async fn send_code(
        &self,
        user: &User,
        purpose: Purpose,
    ) -> Result<OffsetDateTime, AccountError> {
        let (code, expires_at) = self
            .codes
            .issue(&self.store, &user.id, purpose, self.now())
            .await?;
        self.phantom_codes.remove(&(purpose, user.email.clone()));
        self.mailer.send_code(CodeMail {
            to: user.email.clone(),
            purpose,
            code,
            ttl: self.codes.ttl(),
        });
        Ok(expires_at)
    }

    /// The resend cooldown, kept per address and purpose whether or not an account exists.
    /// It protects a live code from being replaced, nothing else: once the code is used, or
    /// dead (expired, out of tries), a new one may be sent at once (the per-recipient quota
    /// still counts it). A code pretended sent lives and dies the same way, so the answer
    /// says nothing about the account.
    async fn take_cooldown(
        &self,
        email: &str,
        purpose: Purpose,
        account: Option<&User>,
    ) -> Result<(), AccountError> {
        let key = cooldown_key(purpose, email);
        let now = self.now();
        let cooldown = self.otp.resend_cooldown;
        let Err(left) = self.store.take_cooldown(&key, now, cooldown).await? else {
            return Ok(());
        };
        let live = self.phantom_code_alive(purpose, email)
            || match account {
                Some(u) => self.codes.is_live(&self.store, &u.id, purpose, now).await?,
                None => false,
            };
        if live {
            return Err(AccountError::OtpStillValid { retry_after: left });
        }
        self.store.set_cooldown(&key, now, cooldown).await?;
        Ok(())
    }

    /// Whether a code pretended sent to `email` for `purpose` could still be guessed at.
    fn phantom_code_alive(&self, purpose: Purpose, email: &str) -> bool {
        self.phantom_codes
            .get(&(purpose, email.to_string()))
            .is_some_and(|c| c.expires_at > self.now() && c.tries_left > 0)
    }

    fn check_lock(&self, user: &User) -> Result<(), AccountError> {
        self.check_locked_until(user.locked_until)
    }

    fn check_locked_until(&self, locked_until: Option<OffsetDateTime>) -> Result<(), AccountError> {
        let now = self.now();
        match locked_until {
            Some(t) if t > now => Err(AccountError::Blocked {
                retry_after: Some(Duration::try_from(t - now).unwrap_or(Duration::from_secs(1))),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed code or password. From half the threshold on, each failure pauses the
    /// account for an escalating moment (1 s, 2 s, 4 s, ...: kanidm's softlock, NIST SP
    /// 800-63B throttling); at the threshold it is locked for `lockout_duration`, and the
    /// failure that locks it is answered USER_BLOCKED.
    async fn record_failure(&self, user: &User) -> Result<(), AccountError> {
        let now = self.now();
        let updated = self
            .store
            .update_user(&user.id, |u| {
                let mut state = LockState {
                    failed_attempts: u.failed_attempts,
                    locked_until: u.locked_until,
                };
                self.count_failure(&mut state, now);
                u.failed_attempts = state.failed_attempts;
                u.locked_until = state.locked_until;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        if updated.failed_attempts == 0 && updated.locked_until.is_some_and(|t| t > now) {
            tracing::warn!(target: "audit", event = "lockout", user_id = %user.id, until = %crate::clock::rfc3339(now + self.otp.lockout_duration), "account locked after repeated failures");
            return Err(AccountError::Blocked {
                retry_after: Some(self.otp.lockout_duration),
            });
        }
        Ok(())
    }

    /// One more failure: the pause or lock it earns (see [`Accounts::record_failure`]).
    fn count_failure(&self, s: &mut LockState, now: OffsetDateTime) {
        let threshold = self.otp.lockout_threshold.max(1);
        let soft_from = (threshold / 2).max(2);
        let duration = self.otp.lockout_duration;
        s.failed_attempts += 1;
        if s.failed_attempts >= threshold {
            s.failed_attempts = 0;
            s.locked_until = Some(now + duration);
        } else if s.failed_attempts >= soft_from {
            let step = (s.failed_attempts - soft_from).min(20);
            let pause = Duration::from_secs(1u64 << step).min(duration);
            // Never shortens a lock already in place (in-flight failures after a lockout).
            s.locked_until = s.locked_until.max(Some(now + pause));
        }
    }

    fn phantom_serial(&self) -> std::sync::MutexGuard<'_, ()> {
        // It guards no data of its own: a poisoned lock still serializes.
        self.phantom_update
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A failed sign-in for a login that matches no account, answered as a real account's
    /// would be: the same pauses, the same lock, the same USER_BLOCKED.
    fn record_phantom_failure(&self, key: &str) -> Result<(), AccountError> {
        let now = self.now();
        let state = {
            let _serial = self.phantom_serial();
            // Read afresh: other failures may have been counted meanwhile.
            let mut state = self.phantoms.get(key).unwrap_or_default();
            self.count_failure(&mut state, now);
            self.phantoms.insert(key.to_string(), state);
            state
        };
        if state.failed_attempts == 0 && state.locked_until.is_some_and(|t| t > now) {
            return Err(AccountError::Blocked {
                retry_after: Some(self.otp.lockout_duration),
            });
        }
        Ok(())
    }

    async fn record_success(&self, user: &User) -> Result<User, AccountError> {
        if user.failed_attempts == 0 && user.locked_until.is_none() {
            return Ok(user.clone());
        }
        Ok(self
            .store
            .update_user(&user.id, |u| {
                u.failed_attempts = 0;
                u.locked_until = None;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?)
    }

    /// Checks a code of `purpose` for `user`: the lock, then the code, counting failures.
    async fn consume_code(
        &self,
        user: &User,
        purpose: Purpose,
        code: &str,
    ) -> Result<User, AccountError> {
        self.consume_code_bound(user, purpose, "", code).await
    }

    /// [`Accounts::consume_code`] for a code bound to a value (see [`Codes::issue_bound`]).
    async fn consume_code_bound(
        &self,
        user: &User,
        purpose: Purpose,
        bound: &str,
        code: &str,
    ) -> Result<User, AccountError> {
        self.check_lock(user)?;
        match self
            .codes
            .check_bound(&self.store, &user.id, purpose, bound, code, self.now())
            .await?
        {
            CodeOutcome::Valid => self.record_success(user).await,
            CodeOutcome::Expired => Err(AccountError::OtpExpired),
            // No live code: nothing to guess, so nothing counted (else anyone could lock any
            // account by posting codes for it), unless a code was pretended sent.
            CodeOutcome::Missing => match self.guess_phantom_code(purpose, &user.email) {
                None => Err(AccountError::InvalidOtp),
                Some(Guess::Expired) => Err(AccountError::OtpExpired),
                Some(Guess::Wrong(outcome)) => {
                    self.record_failure(user).await?;
                    tracing::info!(target: "audit", event = "code_failed", user_id = %user.id, purpose = purpose.as_str(), "wrong one-time code (none was sent)");
                    Err(outcome)
                }
            },
            CodeOutcome::Wrong => {
                self.record_failure(user).await?;
                tracing::info!(target: "audit", event = "code_failed", user_id = %user.id, purpose = purpose.as_str(), "wrong one-time code");
                Err(AccountError::InvalidOtp)
            }
            CodeOutcome::Exhausted => {
                self.record_failure(user).await?;
                tracing::info!(target: "audit", event = "code_exhausted", user_id = %user.id, purpose = purpose.as_str(), "one-time code out of tries");
                Err(AccountError::AttemptsExceeded {
                    retry_after: self.otp.resend_cooldown,
                })
            }
        }
    }

    /// The account for a code-checking flow. An unknown address answers as an account would
    /// (see [`Accounts::phantom_code_failure`]) unless existence may be revealed.
    async fn account_for_code(&self, email: &str, purpose: Purpose) -> Result<User, AccountError> {
        match self.store.user_by_email(email).await? {
            Some(u) => Ok(u),
            None if self.reveal => Err(AccountError::UserDoesNotExist),
            None => Err(self.phantom_code_failure(purpose, email)),
        }
    }

    /// A code checked for an address with no account: the steps of `consume_code` for an
    /// account, with the lock and failure count kept as for a phantom sign-in.
    fn phantom_code_failure(&self, purpose: Purpose, email: &str) -> AccountError {
        let key = phantom_key_email(email);
        let state = self.phantoms.get(&key).unwrap_or_default();
        if let Err(e) = self.check_locked_until(state.locked_until) {
            return e;
        }
        match self.guess_phantom_code(purpose, email) {
            None => AccountError::InvalidOtp,
            Some(Guess::Expired) => AccountError::OtpExpired,
            Some(Guess::Wrong(outcome)) => match self.record_phantom_failure(&key) {
                Err(blocked) => blocked,
                Ok(()) => outcome,
            },
        }
    }

    /// A guess at a code pretended sent to `email`, if there is one: what a real code would
    /// answer (see `Codes::check`).
    fn guess_phantom_code(&self, purpose: Purpose, email: &str) -> Option<Guess> {
        let key = (purpose, email.to_string());
        let _serial = self.phantom_serial();
        let code = self.phantom_codes.get(&key)?;
        if code.expires_at <= self.now() {
            self.phantom_codes.remove(&key);
            return Some(Guess::Expired);
        }
        // As a real code: the last try kills it, and it stays dead until it expires.
        let tries_left = code.tries_left.saturating_sub(1);
        self.phantom_codes
            .insert(key, PhantomCode { tries_left, ..code });
        Some(Guess::Wrong(if tries_left == 0 {
            AccountError::AttemptsExceeded {
                retry_after: self.otp.resend_cooldown,
            }
        } else {
            AccountError::InvalidOtp
        }))
    }

    /// The answer for an address that gets no code (unknown, blocked, already verified):
    /// the same shape as a sent one, and guesses at the code it did not get are answered as
    /// guesses at a real one, so neither says anything about the account.
    async fn pretend_sent(
        &self,
        purpose: Purpose,
        email: &str,
        account: Option<&User>,
    ) -> Result<OffsetDateTime, AccountError> {
        // A real code still alive from before (an account blocked or verified since) would
        // answer in its place, with its spent tries and its earlier expiry.
        if let Some(user) = account {
            self.codes.withdraw(&self.store, &user.id, purpose).await?;
        }
        let expires_at = self.now() + self.codes.ttl();
        self.phantom_codes.insert(
            (purpose, email.to_string()),
            PhantomCode {
                tries_left: self.codes.max_attempts(),
                expires_at,
            },
        );
        Ok(expires_at)
    }

    // The flows.

    /// Creates an account and mails an email verification code.
    pub async fn register(
        &self,
        reg: Registration,
    ) -> Result<(User, OffsetDateTime), AccountError> {
        let mut fields = BTreeMap::new();
        let email = normalize_email(&reg.email)
            .map_err(|m| fields.insert("email".into(), m))
            .ok();
        let username = match reg.username.as_deref().map(normalize_username).transpose() {
            Ok(u) => u,
            Err(m) => {
                fields.insert("username".into(), m);
                None
            }
        };
        let phone = match reg.phone.as_deref().map(normalize_phone).transpose() {
            Ok(p) => p,
            Err(m) => {
                fields.insert("phone".into(), m);
                None
            }
        };
        let full_name = match reg
            .full_name
            .as_deref()
            .map(normalize_full_name)
            .transpose()
        {
            Ok(n) => n,
            Err(m) => {
                fields.insert("full_name".into(), m);
                None
            }
        };
        if let Some(p) = &reg.profile {
            if let Err(m) = self.validate_profile(p) {
                fields.insert("profile".into(), m);
            }
        }
        match &reg.password {
            None if !self.cfg.allow_passwordless => {
                fields.insert("password".into(), "is required".into());
            }
            Some(p) => {
                if let Err(PasswordError::Policy(m)) = self.passwords.check_length(p) {
                    fields.insert("password".into(), m);
                }
            }
            None => {}
        }
        let email = match email {
            Some(e) if fields.is_empty() => e,
            _ => return Err(AccountError::Invalid(fields)),
        };
        // Uniqueness is decided by the store's transaction; this early look only saves an
        // argon2 hash for a registration that cannot succeed.
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(AccountError::AlreadyExists(UniqueField::Email));
        }
        let password = match &reg.password {
            Some(p) => {
                let mut inputs = vec![email.clone()];
                inputs.extend(username.clone());
                inputs.extend(full_name.clone());
                Some(self.passwords.hash_new(p, inputs).await?)
            }
            None => None,
        };
        let now = self.now();
        let user = User {
            v: RECORD_VERSION,
            id: uuid::Uuid::new_v4(),
            email,
            email_verified: false,
            username,
            full_name,
            phone,
            password,
            roles: self.cfg.default_roles.clone(),
            profile: reg.profile.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            blocked: false,
            locked_until: None,
            failed_attempts: 0,
            security_version: 0,
        };
        self.store.insert_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(f) => AccountError::AlreadyExists(f),
            other => AccountError::Store(other),
        })?;
        tracing::info!(target: "audit", event = "registered", user_id = %user.id, "account created");
        // Registration sends the first code, so it starts the resend cooldown too.
        self.store
            .set_cooldown(
                &cooldown_key(Purpose::VerifyEmail, &user.email),
                now,
                self.otp.resend_cooldown,
            )
            .await?;
        let expires = self.send_code(&user, Purpose::VerifyEmail).await?;
        Ok((user, expires))
    }

    /// Verifies the email address with the code mailed at registration (or resent).
    pub async fn verify_email(&self, email: &str, code: &str) -> Result<User, AccountError> {
        let email = self.email(email)?;
        self.check_code_format(code)?;
        let user = self.account_for_code(&email, Purpose::VerifyEmail).await?;
        if user.email_verified && self.reveal {
            return Err(AccountError::AlreadyVerified);
        }
        let user = self.consume_code(&user, Purpose::VerifyEmail, code).await?;
        let user = self.mark_verified(&user).await?;
        tracing::info!(target: "audit", event = "email_verified", user_id = %user.id, "email verified");
        Ok(user)
    }

    async fn mark_verified(&self, user: &User) -> Result<User, AccountError> {
        if user.email_verified {
            return Ok(user.clone());
        }
        let now = self.now();
        Ok(self
            .store
            .update_user(&user.id, |u| {
                u.email_verified = true;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?)
    }

    /// Sends a new verification code (after the cooldown).
    pub async fn resend_verification(&self, email: &str) -> Result<OffsetDateTime, AccountError> {
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if self.reveal {
            match &user {
                None => return Err(AccountError::UserDoesNotExist),
                Some(u) if u.email_verified => return Err(AccountError::AlreadyVerified),
                _ => {}
            }
        }
        self.take_cooldown(&email, Purpose::VerifyEmail, user.as_ref())
            .await?;
        match user {
            Some(u) if !u.email_verified && !u.blocked => {
                self.send_code(&u, Purpose::VerifyEmail).await
            }
            other => {
                self.pretend_sent(Purpose::VerifyEmail, &email, other.as_ref())
                    .await
            }
        }
    }

    /// Sign-in by username or email and password. An unknown login costs the same time as a
    /// wrong password; a locked account is refused before the password is looked at.
    pub async fn login_password(
        &self,
        login: &str,
        password: &Secret,
    ) -> Result<User, AccountError> {
        let login = login.trim();
        if login.is_empty() {
            return Err(AccountError::field("login", "is required"));
        }
        let (user, key) = if login.contains('@') {
            match normalize_email(login) {
                Ok(e) => (self.store.user_by_email(&e).await?, phantom_key_email(&e)),
                Err(_) => (None, phantom_key_email(&login.to_lowercase())),
            }
        } else {
            let name = login.to_lowercase();
            (
                self.store.user_by_username(&name).await?,
                format!("username:{name}"),
            )
        };
        let Some(user) = user else {
            tracing::info!(target: "audit", event = "login_failed", reason = "unknown", "sign-in failed");
            if self.reveal {
                self.passwords.verify(password, None).await?;
                return Err(AccountError::InvalidCredentials);
            }
            // The same steps, and the same answers, as for an account below.
            let state = self.phantoms.get(&key).unwrap_or_default();
            if let Err(e) = self.check_locked_until(state.locked_until) {
                self.passwords.verify(password, None).await?;
                return Err(e);
            }
            self.passwords.verify(password, None).await?;
            self.record_phantom_failure(&key)?;
            return Err(AccountError::InvalidCredentials);
        };
        if let Err(e) = self.check_lock(&user) {
            self.passwords.verify(password, None).await?;
            tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason = "locked", "sign-in refused: account locked");
            return Err(e);
        }
        if !self
            .passwords
            .verify(password, user.password.as_ref())
            .await?
        {
            self.record_failure(&user).await?;
            tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason = "password", "sign-in failed");
            return Err(AccountError::InvalidCredentials);
        }
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        if !user.email_verified {
            return Err(AccountError::EmailNotVerified);
        }
        let user = self.record_success(&user).await?;
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "password", "signed in");
        Ok(user)
    }

    /// Passwordless step 1: mails a sign-in code.
    pub async fn start_code_login(&self, email: &str) -> Result<OffsetDateTime, AccountError> {
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if user.is_none() && self.reveal {
            return Err(AccountError::UserDoesNotExist);
        }
        self.take_cooldown(&email, Purpose::Login, user.as_ref())
            .await?;
        match user {
            Some(u) if !u.blocked => self.send_code(&u, Purpose::Login).await,
            other => {
                self.pretend_sent(Purpose::Login, &email, other.as_ref())
                    .await
            }
        }
    }

    /// Passwordless step 2: the code signs in, and verifies the email on a first sign-in.
    pub async fn finish_code_login(&self, email: &str, code: &str) -> Result<User, AccountError> {
        let email = self.email(email)?;
        self.check_code_format(code)?;
        let user = self.account_for_code(&email, Purpose::Login).await?;
        let user = self.consume_code(&user, Purpose::Login, code).await?;
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        let user = if !user.email_verified && user.password.is_some() {
            // Whoever registered this unverified address chose that password; the mailbox's
            // owner is the one signing in now. Keeping it would let a squatter in later.
            let now = self.now();
            let cleared = self
                .store
                .update_user(&user.id, |u| {
                    u.password = None;
                    u.email_verified = true;
                    u.security_version += 1;
                    u.updated_at = now;
                    Ok::<(), std::convert::Infallible>(())
                })
                .await?;
            self.sessions.revoke_all(&user.id, None).await?;
            tracing::warn!(target: "audit", event = "password_cleared", user_id = %user.id, "first sign-in by code on an unverified account: its password was cleared");
            // As it is after the sessions ended: this sign-in goes on with it.
            self.profile(&cleared.id).await?
        } else {
            self.mark_verified(&user).await?
        };
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "code", "signed in");
        Ok(user)
    }

    /// Mails a password reset code.
    pub async fn forgot_password(&self, email: &str) -> Result<OffsetDateTime, AccountError> {
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if user.is_none() && self.reveal {
            return Err(AccountError::UserDoesNotExist);
        }
        self.take_cooldown(&email, Purpose::ResetPassword, user.as_ref())
            .await?;
        match user {
            Some(u) if !u.blocked => self.send_code(&u, Purpose::ResetPassword).await,
            other => {
                self.pretend_sent(Purpose::ResetPassword, &email, other.as_ref())
                    .await
            }
        }
    }

    /// One-step reset: email, code and new password. Every session of the account ends.
    pub async fn reset_password(
        &self,
        email: &str,
        code: &str,
        new_password: &Secret,
    ) -> Result<User, AccountError> {
        let email = self.email(email)?;
        self.check_code_format(code)?;
        // The policy is checked before the code is spent on a password that will be refused.
        self.passwords
            .check_policy(new_password, vec![email.clone()])
            .await?;
        let user = self
            .account_for_code(&email, Purpose::ResetPassword)
            .await?;
        let user = self
            .consume_code(&user, Purpose::ResetPassword, code)
            .await?;
        self.set_password(&user, new_password, None).await
    }

    /// Two-step reset, step 1: the code buys a short-lived single-use reset token.
    pub async fn reset_token(
        &self,
        email: &str,
        code: &str,
    ) -> Result<(Secret, OffsetDateTime), AccountError> {
        let email = self.email(email)?;
        self.check_code_format(code)?;
        let user = self
            .account_for_code(&email, Purpose::ResetPassword)
            .await?;
        let user = self
            .consume_code(&user, Purpose::ResetPassword, code)
            .await?;
        let mut raw = [0u8; 32];
        rand::fill(&mut raw);
        use base64::Engine;
        let token = Secret::new(format!(
            "prt1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        ));
        let expires_at = self.now() + self.cfg.reset_token_ttl;
        let record = ResetToken {
            v: RECORD_VERSION,
            user_id: user.id,
            expires_at,
            email: user.email.clone(),
        };
        self.store
            .put_reset_token(
                &crate::tokens::Tokens::hash_refresh(token.expose()),
                &record,
            )
            .await?;
        Ok((token, expires_at))
    }

    /// Two-step reset, step 2: the reset token and the new password.
    pub async fn reset_with_token(
        &self,
        token: &Secret,
        new_password: &Secret,
    ) -> Result<User, AccountError> {
        // Checked before the single-use token is spent.
        self.passwords
            .check_policy(new_password, Vec::new())
            .await?;
        let hash = crate::tokens::Tokens::hash_refresh(token.expose());
        let record = self
            .store
            .take_reset_token(&hash)
            .await?
            .ok_or(AccountError::InvalidResetToken)?;
        if record.expires_at <= self.now() {
            return Err(AccountError::ResetTokenExpired);
        }
        let user = self
            .store
            .user(&record.user_id)
            .await?
            .ok_or(AccountError::InvalidResetToken)?;
        // Earned by reading a mailbox that is no longer the account's (email changed since).
        if !record.email.is_empty() && record.email != user.email {
            return Err(AccountError::InvalidResetToken);
        }
        self.set_password(&user, new_password, None).await
    }

    /// Change when signed in: the current password first. Other sessions end.
    pub async fn change_password(
        &self,
        user_id: &UserId,
        current: &Secret,
        new_password: &Secret,
        keep_session: &str,
    ) -> Result<User, AccountError> {
        let user = self.profile(user_id).await?;
        self.check_lock(&user)?;
        if !self
            .passwords
            .verify(current, user.password.as_ref())
            .await?
        {
            self.record_failure(&user).await?;
            return Err(AccountError::InvalidCredentials);
        }
        self.set_password(&user, new_password, Some(keep_session))
            .await
    }

    /// Hashes and stores a new password (a reset also proves the address), then ends the
    /// account's sessions but `keep`.
    async fn set_password(
        &self,
        user: &User,
        new_password: &Secret,
        keep: Option<&str>,
    ) -> Result<User, AccountError> {
        let mut inputs = vec![user.email.clone()];
        inputs.extend(user.username.clone());
        inputs.extend(user.full_name.clone());
        let hash = self.passwords.hash_new(new_password, inputs).await?;
        let now = self.now();
        let updated = self
            .store
            .update_user(&user.id, |u| {
                u.password = Some(hash.clone());
                u.security_version += 1;
                u.email_verified = true;
                u.failed_attempts = 0;
                u.locked_until = None;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        let revoked = self.sessions.revoke_all(&user.id, keep).await?;
        tracing::info!(target: "audit", event = "password_changed", user_id = %user.id, sessions_revoked = revoked.len(), "password set");
        Ok(updated)
    }

    /// Email change, step 1: the caller proves it is the account's owner (the current
    /// password, or for an account without one a sign-in within `accounts.recent_sign_in`),
    /// then a code bound to the new address is mailed to that address.
    pub async fn start_email_change(
        &self,
        user_id: &UserId,
        session_id: &str,
        new_email: &str,
        current_password: Option<&Secret>,
    ) -> Result<OffsetDateTime, AccountError> {
        let new_email = self.email(new_email)?;
        let user = self.profile(user_id).await?;
        self.check_lock(&user)?;
        if new_email == user.email {
            return Err(AccountError::field("email", "is already your address"));
        }
        match (&user.password, current_password) {
            (Some(_), None) => {
                return Err(AccountError::field("current_password", "is required"));
            }
            (Some(hash), Some(given)) => {
                if !self.passwords.verify(given, Some(hash)).await? {
                    self.record_failure(&user).await?;
                    return Err(AccountError::InvalidCredentials);
                }
            }
            // Nothing to type: a stolen access token alone must not move the account to an
            // address its thief reads, so the sign-in itself has to be recent.
            (None, _) => {
                let signed_in = self
                    .store
                    .session(session_id)
                    .await?
                    .map(|s| s.created_at)
                    .ok_or(AccountError::ReauthRequired)?;
                if self.now() - signed_in > self.cfg.recent_sign_in {
                    return Err(AccountError::ReauthRequired);
                }
            }
        }
        // The store decides uniqueness again when the change is confirmed; this look spares
        // a mail that could never be used.
        if self.store.user_by_email(&new_email).await?.is_some() {
            return Err(AccountError::AlreadyExists(UniqueField::Email));
        }
        self.take_cooldown(&new_email, Purpose::ChangeEmail, Some(&user))
            .await?;
        let (code, expires_at) = self
            .codes
            .issue_bound(
                &self.store,
                &user.id,
                Purpose::ChangeEmail,
                &new_email,
                self.now(),
            )
            .await?;
        self.mailer.send_code(CodeMail {
            to: new_email,
            purpose: Purpose::ChangeEmail,
            code,
            ttl: self.codes.ttl(),
        });
        tracing::info!(target: "audit", event = "email_change_requested", user_id = %user.id, "code sent to a new address");
        Ok(expires_at)
    }

    /// Email change, step 2: the code mailed to the new address makes it the account's
    /// (verified) address. Every session ends, since their tokens name the old address (the
    /// caller signs in anew), codes mailed to the old address die, and it is told.
    pub async fn finish_email_change(
        &self,
        user_id: &UserId,
        new_email: &str,
        code: &str,
    ) -> Result<User, AccountError> {
        let new_email = self.email(new_email)?;
        self.check_code_format(code)?;
        let user = self.profile(user_id).await?;
        // Taken since step 1: answered before the code is spent (the store decides again).
        if self
            .store
            .user_by_email(&new_email)
            .await?
            .is_some_and(|other| other.id != user.id)
        {
            return Err(AccountError::AlreadyExists(UniqueField::Email));
        }
        let user = self
            .consume_code_bound(&user, Purpose::ChangeEmail, &new_email, code)
            .await?;
        let now = self.now();
        let updated = self
            .store
            .update_user(&user.id, |u| {
                u.email = new_email.clone();
                u.email_verified = true;
                u.security_version += 1;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        // Whoever reads the old mailbox keeps nothing: the codes sent there die (a reset
        // token earned there checks the address itself).
        for purpose in [Purpose::VerifyEmail, Purpose::Login, Purpose::ResetPassword] {
            self.codes.withdraw(&self.store, &user.id, purpose).await?;
        }
        let revoked = self.sessions.revoke_all(&user.id, None).await?;
        if user.email != updated.email {
            self.mailer.send_email_changed(&user.email);
        }
        tracing::info!(target: "audit", event = "email_changed", user_id = %user.id, sessions_revoked = revoked.len(), "email address changed");
        // As it is after the sessions ended: the device that confirmed signs in anew with it.
        self.profile(&user.id).await
    }

    pub async fn profile(&self, user_id: &UserId) -> Result<User, AccountError> {
        self.store
            .user(user_id)
            .await?
            .ok_or(AccountError::UserDoesNotExist)
    }

    pub async fn update_profile(
        &self,
        user_id: &UserId,
        patch: ProfilePatch,
        keep_session: &str,
    ) -> Result<User, AccountError> {
        let mut fields = BTreeMap::new();
        let mut norm = |name: &str,
                        v: Option<Option<String>>,
                        f: fn(&str) -> Result<String, String>| match v {
            Some(Some(s)) => match f(&s) {
                Ok(n) => Some(Some(n)),
                Err(m) => {
                    fields.insert(name.to_string(), m);
                    None
                }
            },
            other => other,
        };
        let username = norm("username", patch.username, normalize_username);
        let full_name = norm("full_name", patch.full_name, normalize_full_name);
        let phone = norm("phone", patch.phone, normalize_phone);
        if let Some(p) = &patch.profile {
            if let Err(m) = self.validate_profile(p) {
                fields.insert("profile".into(), m);
            }
        }
        if !fields.is_empty() {
            return Err(AccountError::Invalid(fields));
        }
        let now = self.now();
        let before = self.profile(user_id).await?;
        let updated = self
            .store
            .update_user(user_id, |u| {
                if let Some(v) = &username {
                    u.username = v.clone();
                }
                if let Some(v) = &full_name {
                    u.full_name = v.clone();
                }
                if let Some(v) = &phone {
                    u.phone = v.clone();
                }
                if let Some(p) = &patch.profile {
                    u.profile = p.clone();
                }
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        if before.username != updated.username {
            // Tokens carry the username; another account may take the old one, so tokens
            // naming it must not outlive the rename (this session gets a new pair on refresh).
            self.sessions
                .revoke_all(user_id, Some(keep_session))
                .await?;
        }
        Ok(updated)
    }

    // Administration (HTTP admin endpoints and the CLI).

    /// Blocks (ending every session) or unblocks an account; unblocking also clears a lockout.
    pub async fn set_blocked(&self, user_id: &UserId, blocked: bool) -> Result<User, AccountError> {
        let now = self.now();
        let user = self
            .store
            .update_user(user_id, |u| {
                u.blocked = blocked;
                u.security_version += 1;
                if !blocked {
                    u.locked_until = None;
                    u.failed_attempts = 0;
                }
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        if blocked {
            self.sessions.revoke_all(user_id, None).await?;
        }
        tracing::info!(target: "audit", event = if blocked { "blocked" } else { "unblocked" }, user_id = %user_id, "account {}", if blocked { "blocked" } else { "unblocked" });
        Ok(user)
    }

    /// Replaces the roles. Sessions end so that new tokens carry the new roles at once.
    pub async fn set_roles(
        &self,
        user_id: &UserId,
        roles: Vec<String>,
    ) -> Result<User, AccountError> {
        let mut clean: Vec<String> = Vec::new();
        for r in roles {
            let r = r.trim().to_lowercase();
            let valid = !r.is_empty()
                && r.len() <= 64
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
            if !valid {
                return Err(AccountError::field(
                    "roles",
                    format!("{r:?} is not a role name (letters, digits, _ - . :)"),
                ));
            }
            if !clean.contains(&r) {
                clean.push(r);
            }
        }
        let now = self.now();
        let user = self
            .store
            .update_user(user_id, |u| {
                u.roles = clean.clone();
                u.security_version += 1;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        self.sessions.revoke_all(user_id, None).await?;
        tracing::info!(target: "audit", event = "roles_set", user_id = %user_id, roles = ?user.roles, "roles changed");
        Ok(user)
    }

    /// Creates a verified account directly (CLI: the first admin).
    pub async fn create_verified(
        &self,
        email: &str,
        password: Option<&Secret>,
        roles: Vec<String>,
    ) -> Result<User, AccountError> {
        let email = self.email(email)?;
        let password = match password {
            Some(p) => Some(self.passwords.hash_new(p, vec![email.clone()]).await?),
            None => None,
        };
        let now = self.now();
        let user = User {
            v: RECORD_VERSION,
            id: uuid::Uuid::new_v4(),
            email,
            email_verified: true,
            username: None,
            full_name: None,
            phone: None,
            password,
            roles: if roles.is_empty() {
                self.cfg.default_roles.clone()
            } else {
                roles
            },
            profile: Default::default(),
            created_at: now,
            updated_at: now,
            blocked: false,
            locked_until: None,
            failed_attempts: 0,
            security_version: 0,
        };
        self.store.insert_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(f) => AccountError::AlreadyExists(f),
            other => AccountError::Store(other),
        })?;
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_validation() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in ["", "alice", "alice@", "@x.com", "a b@x.com", "alice@nodot"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_username("Alice_1").unwrap(), "alice_1");
        for bad in ["ab", "-abc", "has space", "a@b", &"x".repeat(33)] {
            assert!(normalize_username(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_phone("+1 (415) 555-0100").unwrap(),
            "+14155550100"
        );
        for bad in [
            "4155550100",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+1415abc0100",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
        assert!(normalize_full_name("Ada Lovelace").is_ok());
        assert!(normalize_full_name("bad\u{7}").is_err());
    }
}
