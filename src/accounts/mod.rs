//! Accounts: registration, email verification, sign-in by password or emailed code, password
//! reset (one or two steps) and change, profile, roles and blocking. Every flow of the seed
//! backends lands here. Enumeration-safe by default: the code-sending flows answer the same
//! whether or not the address has an account.

use crate::clock::SharedClock;
use crate::codes::{CodeOutcome, Codes};
use crate::config::{AccountsConfig, OtpConfig};
use crate::mail::{CodeMail, Mailer};
use crate::passwords::{PasswordError, Passwords};
use crate::ratelimit::Class;
use crate::secret::Secret;
use crate::sessions::Sessions;
use crate::store::{
    Purpose, RECORD_VERSION, ResetToken, Store, StoreError, UniqueField, UpdateError, User, UserId,
};

pub mod bindings;
mod fields;
pub mod guard;

use bindings::Bindings;
use guard::{Factor, Guard, Subject};
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

/// Who is asking: the client address every quota starts from, and the device token it
/// presented (see [`bindings`]), which gives the account's own device a quota and a lock
/// count of its own.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: std::net::IpAddr,
    pub device: Option<&'a str>,
}

impl<'a> Client<'a> {
    pub fn new(ip: std::net::IpAddr, device: Option<&'a str>) -> Self {
        Client { ip, device }
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
}

/// What a flow that checks a code is about: an account, or the decoy of an address without
/// one (see [`guard`]: a code pretended sent there is a real record under its decoy id).
#[derive(Debug)]
enum CodeSubject {
    Account(Box<User>),
    Decoy { id: UserId, email: String },
}

/// The outcome of an email verification.
#[derive(Debug)]
pub struct Verified {
    pub user: User,
    /// The password chosen at registration was dropped: the client that verified did not
    /// present the sign-up token of the one that chose it (see [`bindings`]). It gets a
    /// reset token instead, to choose one at once (it has just proved the mailbox).
    pub reset: Option<(Secret, OffsetDateTime)>,
}

/// Whether `user` is mailed codes of `purpose`: a blocked account none, a verified one no
/// verification code. For the others, [`Accounts::pretend_sent`] makes a decoy's.
fn gets_codes(user: &User, purpose: Purpose) -> bool {
    match purpose {
        Purpose::VerifyEmail => !user.blocked && !user.email_verified,
        _ => !user.blocked,
    }
}

/// The per-account quota a try is counted in: strangers share the account's, each of its
/// devices has its own, a login without an account has one as an account would.
fn quota_key(who: &Subject<'_>) -> String {
    match who {
        Subject::Account { user, device: None } => user.id.simple().to_string(),
        Subject::Account {
            user,
            device: Some(d),
        } => format!("{}:{}", user.id.simple(), device_hex(d)),
        Subject::Nobody { login } => (*login).to_string(),
    }
}

fn device_hex(d: &bindings::DeviceId) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The per-recipient quota of a mail to `email` asked for by `device` of the account (the
/// owner's device has its own, so strangers cannot use up the owner's mail).
fn recipient_key(email: &str, device: Option<bindings::DeviceId>) -> String {
    match device {
        None => email.to_string(),
        Some(d) => format!("{email}:{}", device_hex(&d)),
    }
}

/// The store's key of the resend cooldown of `purpose` codes to `email`.
fn cooldown_key(purpose: Purpose, email: &str) -> String {
    format!("{}:{email}", purpose.as_str())
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
    ) -> Self {
        Accounts {
            limits,
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
    ///
    /// Past the cooldown, the mail counts against the address's quota: only a code that is
    /// made (sent, or pretended sent, which must cost the same) is charged, not a refusal,
    /// and the account's own device has a quota of its own.
    async fn take_cooldown(
        &self,
        email: &str,
        purpose: Purpose,
        account: Option<&User>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        let key = cooldown_key(purpose, email);
        let now = self.now();
        let cooldown = self.otp.resend_cooldown;
        if let Err(left) = self.store.take_cooldown(&key, now, cooldown).await? {
            let id = account.map_or_else(|| self.guard.decoy_id(email), |u| u.id);
            if self.codes.is_live(&self.store, &id, purpose, now).await? {
                return Err(AccountError::OtpStillValid { retry_after: left });
            }
            self.store.set_cooldown(&key, now, cooldown).await?;
        }
        let device = account.and_then(|u| client.device.and_then(|t| self.bindings.device(u, t)));
        self.limits
            .check_key(Class::CodeSend, client.ip, &recipient_key(email, device))?;
        Ok(())
    }

    /// The account a code-checking flow is about. An unknown address is its decoy (answered
    /// as an account would be) unless existence may be revealed.
    /// Whose code of `purpose` a code for `email` would be: the account's, when it is sent
    /// such codes (see [`gets_codes`]); otherwise the decoy's, which [`Self::pretend_sent`]
    /// made and nobody was mailed, so that guessing at it is answered as at a real one and
    /// can never succeed.
    async fn account_for_code(
        &self,
        email: &str,
        purpose: Purpose,
    ) -> Result<CodeSubject, AccountError> {
        let decoy = || CodeSubject::Decoy {
            id: self.guard.decoy_id(email),
            email: email.to_string(),
        };
        match self.store.user_by_email(email).await? {
            Some(u) if gets_codes(&u, purpose) => Ok(CodeSubject::Account(Box::new(u))),
            Some(u) if self.reveal && purpose == Purpose::VerifyEmail && u.email_verified => {
                Err(AccountError::AlreadyVerified)
            }
            Some(_) => Ok(decoy()),
            None if self.reveal => Err(AccountError::UserDoesNotExist),
            None => Ok(decoy()),
        }
    }

    /// Checks a code of `purpose` (bound to `bound`, see [`Codes::issue_bound`]): the code
    /// lock, then the code, counting failures. A device of the account keeps its own count,
    /// and its guesses do not spend the code's tries. A decoy is checked the same way (its
    /// code matches nothing: nobody was sent it).
    async fn consume_code(
        &self,
        subject: &CodeSubject,
        client: &Client<'_>,
        purpose: Purpose,
        bound: &str,
        code: &str,
    ) -> Result<User, AccountError> {
        let (id, who, user) = match subject {
            CodeSubject::Account(u) => {
                let device = client.device.and_then(|t| self.bindings.device(u, t));
                (u.id, Subject::Account { user: u, device }, Some(u))
            }
            CodeSubject::Decoy { id, email } => (*id, Subject::Nobody { login: email }, None),
        };
        let device = match who {
            Subject::Account { device, .. } => device,
            Subject::Nobody { .. } => None,
        };
        self.limits
            .check_key(Class::CodeVerify, client.ip, &quota_key(&who))?;
        self.guard.check(who, Factor::Code).await?;
        let outcome = self
            .codes
            .check_bound(
                &self.store,
                &id,
                purpose,
                bound,
                code,
                self.now(),
                device.is_none(),
            )
            .await?;
        match (outcome, user) {
            (CodeOutcome::Valid, Some(u)) => self.guard.success(u, device, Factor::Code).await,
            (CodeOutcome::Expired, _) => Err(AccountError::OtpExpired),
            // No live code: nothing to guess, so nothing counted (else anyone could lock any
            // account by posting codes for it).
            (CodeOutcome::Missing, _) | (CodeOutcome::Valid, None) => Err(AccountError::InvalidOtp),
            (CodeOutcome::Wrong, _) => {
                self.guard.failure(who, Factor::Code).await?;
                tracing::info!(target: "audit", event = "code_failed", user_id = %id, purpose = purpose.as_str(), "wrong one-time code");
                Err(AccountError::InvalidOtp)
            }
            (CodeOutcome::Exhausted, _) => {
                self.guard.failure(who, Factor::Code).await?;
                tracing::info!(target: "audit", event = "code_exhausted", user_id = %id, purpose = purpose.as_str(), "one-time code out of tries");
                Err(AccountError::AttemptsExceeded {
                    retry_after: self.otp.resend_cooldown,
                })
            }
        }
    }

    /// The answer for an address that gets no code (unknown, blocked, already verified):
    /// the same shape as a sent one, and a code is made as for a real send, only never
    /// mailed, under the address's decoy id (never the account's, whose code it would then
    /// be: a verified account's verification code signed the page in): guesses at it are
    /// answered as guesses at a real one, so neither says anything about the account (and it
    /// costs the same store write).
    async fn pretend_sent(
        &self,
        purpose: Purpose,
        email: &str,
    ) -> Result<OffsetDateTime, AccountError> {
        let id = self.guard.decoy_id(email);
        let (_never_mailed, expires_at) = self
            .codes
            .issue(&self.store, &id, purpose, self.now())
            .await?;
        Ok(expires_at)
    }

    // The flows.

    /// Creates an account and mails an email verification code. The sign-up token that
    /// comes back keeps the password when the same client verifies the address.
    pub async fn register(
        &self,
        reg: Registration,
        client: &Client<'_>,
    ) -> Result<(User, OffsetDateTime, Secret), AccountError> {
        self.limits.check_ip(Class::CodeSend, client.ip)?;
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
        // Registration mails a code: it counts against the address's quota.
        self.limits.check_key(Class::CodeSend, client.ip, &email)?;
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
            code_failed_attempts: 0,
            code_locked_until: None,
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
        let signup = self.bindings.signup_token(&user);
        Ok((user, expires, signup))
    }

    /// Verifies the email address with the code mailed at registration (or resent). A
    /// password chosen before the address was verified survives only when the client that
    /// verifies presents the sign-up token of the one that chose it: otherwise a squatter who
    /// registered this address with a password of their own would keep it once the owner
    /// entered the code that arrived. It is dropped then, and the caller told so.
    pub async fn verify_email(
        &self,
        email: &str,
        code: &str,
        signup: Option<&str>,
        client: &Client<'_>,
    ) -> Result<Verified, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let email = self.email(email)?;
        self.check_code_format(code)?;
        let subject = self.account_for_code(&email, Purpose::VerifyEmail).await?;
        let user = self
            .consume_code(&subject, client, Purpose::VerifyEmail, "", code)
            .await?;
        let chosen_here = signup.is_some_and(|t| self.bindings.signup_ok(&user, t));
        let squatted = !user.email_verified && user.password.is_some() && !chosen_here;
        let user = if squatted {
            let user = self.drop_unverified_password(&user).await?;
            tracing::warn!(target: "audit", event = "password_cleared", user_id = %user.id, "address verified without the sign-up token: the password chosen before verification was dropped");
            user
        } else {
            self.mark_verified(&user).await?
        };
        tracing::info!(target: "audit", event = "email_verified", user_id = %user.id, "email verified");
        let reset = match squatted {
            true => Some(self.issue_reset_token(&user).await?),
            false => None,
        };
        Ok(Verified { user, reset })
    }

    /// Verifies the address and drops a password set before it was verified (by whoever
    /// registered it, who need not be the mailbox's owner): every session ends with it.
    async fn drop_unverified_password(&self, user: &User) -> Result<User, AccountError> {
        let now = self.now();
        self.store
            .update_user(&user.id, |u| {
                u.password = None;
                u.email_verified = true;
                u.security_version += 1;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        self.sessions.revoke_all(&user.id, None).await?;
        // As it is after the sessions ended: a sign-in that follows goes on with it.
        self.profile(&user.id).await
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
    pub async fn resend_verification(
        &self,
        email: &str,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.limits.check_ip(Class::CodeSend, client.ip)?;
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if self.reveal {
            match &user {
                None => return Err(AccountError::UserDoesNotExist),
                Some(u) if u.email_verified => return Err(AccountError::AlreadyVerified),
                _ => {}
            }
        }
        self.take_cooldown(&email, Purpose::VerifyEmail, user.as_ref(), client)
            .await?;
        match user {
            Some(u) if gets_codes(&u, Purpose::VerifyEmail) => {
                self.send_code(&u, Purpose::VerifyEmail).await
            }
            _ => self.pretend_sent(Purpose::VerifyEmail, &email).await,
        }
    }

    /// A refresh, for the API and for the login page's transparent one: the client's refresh
    /// quota, then the rotation (see [`crate::sessions::Sessions::refresh`]).
    pub async fn refresh(
        &self,
        token: &Secret,
        client: &Client<'_>,
    ) -> Result<(crate::sessions::TokenPair, User), AccountError> {
        self.limits.check_ip(Class::Refresh, client.ip)?;
        Ok(self.sessions.refresh(token).await?)
    }

    /// Sign-in by username or email and password. An unknown login costs the same time as a
    /// wrong password, and is counted and locked as an account is; a locked account is
    /// refused before the password is looked at. A client with one of the account's device
    /// tokens is judged by its own count, not by strangers' (see [`guard`]).
    pub async fn login_password(
        &self,
        login: &str,
        password: &Secret,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::Login, client.ip)?;
        let login = login.trim();
        if login.is_empty() {
            return Err(AccountError::field("login", "is required"));
        }
        let (user, key) = if login.contains('@') {
            match normalize_email(login) {
                Ok(e) => (self.store.user_by_email(&e).await?, format!("email:{e}")),
                Err(_) => (None, format!("email:{}", login.to_lowercase())),
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
            let who = Subject::Nobody { login: &key };
            self.limits
                .check_key(Class::Login, client.ip, &quota_key(&who))?;
            if let Err(e) = self.guard.check(who, Factor::Password).await {
                self.passwords.verify(password, None).await?;
                return Err(e);
            }
            self.passwords.verify(password, None).await?;
            self.guard.failure(who, Factor::Password).await?;
            return Err(AccountError::InvalidCredentials);
        };
        let device = client.device.and_then(|t| self.bindings.device(&user, t));
        let who = Subject::Account {
            user: &user,
            device,
        };
        self.limits
            .check_key(Class::Login, client.ip, &quota_key(&who))?;
        if let Err(e) = self.guard.check(who, Factor::Password).await {
            self.passwords.verify(password, None).await?;
            tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason = "locked", device = device.is_some(), "sign-in refused: locked");
            return Err(e);
        }
        if !self
            .passwords
            .verify(password, user.password.as_ref())
            .await?
        {
            self.guard.failure(who, Factor::Password).await?;
            tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason = "password", device = device.is_some(), "sign-in failed");
            return Err(AccountError::InvalidCredentials);
        }
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        if !user.email_verified {
            return Err(AccountError::EmailNotVerified);
        }
        let user = self.guard.success(&user, device, Factor::Password).await?;
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "password", "signed in");
        Ok(user)
    }

    /// Passwordless step 1: mails a sign-in code.
    pub async fn start_code_login(
        &self,
        email: &str,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.limits.check_ip(Class::CodeSend, client.ip)?;
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if user.is_none() && self.reveal {
            return Err(AccountError::UserDoesNotExist);
        }
        self.take_cooldown(&email, Purpose::Login, user.as_ref(), client)
            .await?;
        match user {
            Some(u) if gets_codes(&u, Purpose::Login) => self.send_code(&u, Purpose::Login).await,
            _ => self.pretend_sent(Purpose::Login, &email).await,
        }
    }

    /// Passwordless step 2: the code signs in, and verifies the email on a first sign-in.
    pub async fn finish_code_login(
        &self,
        email: &str,
        code: &str,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let email = self.email(email)?;
        self.check_code_format(code)?;
        let subject = self.account_for_code(&email, Purpose::Login).await?;
        let user = self
            .consume_code(&subject, client, Purpose::Login, "", code)
            .await?;
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        let user = if !user.email_verified && user.password.is_some() {
            // Whoever registered this unverified address chose that password; the mailbox's
            // owner is the one signing in now. Keeping it would let a squatter in later.
            let cleared = self.drop_unverified_password(&user).await?;
            tracing::warn!(target: "audit", event = "password_cleared", user_id = %user.id, "first sign-in by code on an unverified account: its password was cleared");
            cleared
        } else {
            self.mark_verified(&user).await?
        };
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "code", "signed in");
        Ok(user)
    }

    /// Mails a password reset code.
    pub async fn forgot_password(
        &self,
        email: &str,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.limits.check_ip(Class::CodeSend, client.ip)?;
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if user.is_none() && self.reveal {
            return Err(AccountError::UserDoesNotExist);
        }
        self.take_cooldown(&email, Purpose::ResetPassword, user.as_ref(), client)
            .await?;
        match user {
            Some(u) if gets_codes(&u, Purpose::ResetPassword) => {
                self.send_code(&u, Purpose::ResetPassword).await
            }
            _ => self.pretend_sent(Purpose::ResetPassword, &email).await,
        }
    }

    /// One-step reset: email, code and new password. Every session of the account ends.
    pub async fn reset_password(
        &self,
        email: &str,
        code: &str,
        new_password: &Secret,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let email = self.email(email)?;
        self.check_code_format(code)?;
        // The policy is checked before the code is spent on a password that will be refused.
        self.passwords
            .check_policy(new_password, vec![email.clone()])
            .await?;
        let subject = self
            .account_for_code(&email, Purpose::ResetPassword)
            .await?;
        let user = self
            .consume_code(&subject, client, Purpose::ResetPassword, "", code)
            .await?;
        self.set_password(&user, new_password, None).await
    }

    /// Two-step reset, step 1: the code buys a short-lived single-use reset token.
    pub async fn reset_token(
        &self,
        email: &str,
        code: &str,
        client: &Client<'_>,
    ) -> Result<(Secret, OffsetDateTime), AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let email = self.email(email)?;
        self.check_code_format(code)?;
        let subject = self
            .account_for_code(&email, Purpose::ResetPassword)
            .await?;
        let user = self
            .consume_code(&subject, client, Purpose::ResetPassword, "", code)
            .await?;
        self.issue_reset_token(&user).await
    }

    /// A short-lived single-use token that sets `user`'s password (two-step reset).
    async fn issue_reset_token(
        &self,
        user: &User,
    ) -> Result<(Secret, OffsetDateTime), AccountError> {
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
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
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
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::Login, client.ip)?;
        let user = self.profile(user_id).await?;
        let who = Subject::Account {
            user: &user,
            device: None,
        };
        self.limits
            .check_key(Class::Login, client.ip, &quota_key(&who))?;
        self.guard.check(who, Factor::Password).await?;
        if !self
            .passwords
            .verify(current, user.password.as_ref())
            .await?
        {
            self.guard.failure(who, Factor::Password).await?;
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
                u.code_failed_attempts = 0;
                u.code_locked_until = None;
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
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        // A password check costs a hash, and the mail goes to an address the caller names:
        // limited like a sign-in, and per recipient like every code mail (below).
        self.limits.check_ip(Class::Login, client.ip)?;
        let new_email = self.email(new_email)?;
        let user = self.profile(user_id).await?;
        let who = Subject::Account {
            user: &user,
            device: None,
        };
        self.limits
            .check_key(Class::Login, client.ip, &quota_key(&who))?;
        self.guard.check(who, Factor::Password).await?;
        if new_email == user.email {
            return Err(AccountError::field("email", "is already your address"));
        }
        match (&user.password, current_password) {
            (Some(_), None) => {
                return Err(AccountError::field("current_password", "is required"));
            }
            (Some(hash), Some(given)) => {
                if !self.passwords.verify(given, Some(hash)).await? {
                    self.guard.failure(who, Factor::Password).await?;
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
        self.limits.check_ip(Class::CodeSend, client.ip)?;
        self.take_cooldown(&new_email, Purpose::ChangeEmail, Some(&user), client)
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
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
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
            .consume_code(
                &CodeSubject::Account(Box::new(user)),
                // A signed-in caller's code guesses count as a stranger's.
                &Client::new(client.ip, None),
                Purpose::ChangeEmail,
                &new_email,
                code,
            )
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
                    u.code_locked_until = None;
                    u.code_failed_attempts = 0;
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
            code_failed_attempts: 0,
            code_locked_until: None,
            security_version: 0,
        };
        self.store.insert_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(f) => AccountError::AlreadyExists(f),
            other => AccountError::Store(other),
        })?;
        Ok(user)
    }
}
