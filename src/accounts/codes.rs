//! Mailed one-time codes as every flow uses them, and the rules that keep them from telling
//! anyone whether an address has an account.
//!
//! The model: a code is sent (or, for an address that gets none: unknown, blocked, already
//! verified, pretended sent) under a resend cooldown kept per address and purpose, and
//! charged to the recipient's quota. A pretended code is a real record under the address's
//! decoy id (see [`super::guard`]) that nobody was mailed, so guessing at it costs and answers
//! the same as guessing at a real one, and can never succeed. Checking a code counts wrong
//! guesses towards the account's code lock (or the decoy's), except a device of the account,
//! which keeps a count of its own.

use super::guard::{Factor, Subject};
use super::{AccountError, Accounts, Client, bindings};
use crate::codes::CodeOutcome;
use crate::mail::CodeMail;
use crate::ratelimit::Class;
use crate::store::{Purpose, User, UserId};
use time::OffsetDateTime;

/// What a flow that checks a code is about: an account, or the decoy of an address without
/// one (see [`guard`]: a code pretended sent there is a real record under its decoy id).
#[derive(Debug)]
pub(super) enum CodeSubject {
    Account(Box<User>),
    Decoy { id: UserId, email: String },
}

/// Whether `user` is mailed codes of `purpose`: a blocked account none, a verified one no
/// verification code. For the others, [`Accounts::pretend_sent`] makes a decoy's.
pub(super) fn gets_codes(user: &User, purpose: Purpose) -> bool {
    match purpose {
        Purpose::VerifyEmail => !user.blocked && !user.email_verified,
        _ => !user.blocked,
    }
}

/// The per-account quota a try is counted in: strangers share the account's, each of its
/// devices has its own, a login without an account has one as an account would.
pub(super) fn quota_key(who: &Subject<'_>) -> String {
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
pub(super) fn recipient_key(email: &str, device: Option<bindings::DeviceId>) -> String {
    match device {
        None => email.to_string(),
        Some(d) => format!("{email}:{}", device_hex(&d)),
    }
}

/// The store's key of the resend cooldown of `purpose` codes to `email`.
pub(super) fn cooldown_key(purpose: Purpose, email: &str) -> String {
    format!("{}:{email}", purpose.as_str())
}

impl Accounts {
    /// Sends a code for `purpose` to `user`, starting that address's cooldown.
    pub(super) async fn send_code(
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
    pub(super) async fn take_cooldown(
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
    pub(super) async fn account_for_code(
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
    pub(super) async fn consume_code(
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
    pub(super) async fn pretend_sent(
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

    /// The code-sending flows' one shape: the client's quota, the address, what may be said
    /// about it (only with `security.reveal_account_existence`), the cooldown, then the code
    /// mailed, or pretended sent.
    pub(super) async fn mail_code(
        &self,
        email: &str,
        purpose: Purpose,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.limits.check_ip(Class::CodeSend, client.ip)?;
        let email = self.email(email)?;
        let user = self.store.user_by_email(&email).await?;
        if self.reveal {
            match &user {
                None => return Err(AccountError::UserDoesNotExist),
                Some(u) if purpose == Purpose::VerifyEmail && u.email_verified => {
                    return Err(AccountError::AlreadyVerified);
                }
                _ => {}
            }
        }
        self.take_cooldown(&email, purpose, user.as_ref(), client)
            .await?;
        match user {
            Some(u) if gets_codes(&u, purpose) => self.send_code(&u, purpose).await,
            _ => self.pretend_sent(purpose, &email).await,
        }
    }

    /// The code-checking flows' one shape: the client's quota, the address and the code's
    /// form, then [`Self::code_owner`].
    pub(super) async fn take_code(
        &self,
        email: &str,
        code: &str,
        purpose: Purpose,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let email = self.email(email)?;
        self.check_code_format(code)?;
        self.code_owner(&email, code, purpose, client).await
    }

    /// The account whose live code of `purpose` for `email` (normalized) `code` is, the code
    /// spent; a decoy's never matches (see the module doc).
    pub(super) async fn code_owner(
        &self,
        email: &str,
        code: &str,
        purpose: Purpose,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        let subject = self.account_for_code(email, purpose).await?;
        self.consume_code(&subject, client, purpose, "", code).await
    }
}
