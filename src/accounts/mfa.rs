//! Second factors: enrolment and removal of an authenticator app (TOTP) and of recovery
//! codes, the second step of a sign-in, and stepping a signed-in session up.
//!
//! The model:
//!
//! - **A first factor earns a second step, not a session.** When the account has a second
//!   factor, a right password or mailed code answers an `mfa_token` (see
//!   [`crate::codes::Codes::issue_second_step`]): single use, short-lived, dead after
//!   `otp.max_attempts` wrong second factors, good for `/login/mfa` only. Everything before
//!   it (the first factor's checks, locks and answers) is the same for every account, so
//!   the second step says nothing about the accounts that have none.
//! - **Wrong second factors lock like wrong passwords.** They are counted on the account's
//!   sign-in counter (strangers share it, each known device has its own; see [`guard`]).
//! - **A TOTP code is good once** (RFC 6238, 5.2): the last accepted time step is kept on
//!   the account and only a later one is accepted, within a step either side of now.
//! - **Adding a factor needs a fresh proof** (the current password, or for an account
//!   without one a recent sign-in), as an email change does; removing the authenticator
//!   needs one of its codes or a recovery code.
//!
//! [`guard`]: super::guard

use super::codes::quota_key;
use super::guard::{Factor, Subject};
use super::{AccountError, Accounts, Client, SignedIn};
use crate::codes::{StepState, StepUse};
use crate::ratelimit::Class;
use crate::second_factor::{Enrolment, is_recovery_code};
use crate::secret::Secret;
use crate::sessions::TokenPair;
use crate::store::{AuthFactor, User, UserId};

/// A sign-in's outcome: done, or a second factor to show first.
#[derive(Debug)]
pub enum SignIn {
    Done(Box<SignedIn>),
    SecondFactor(SecondStep),
}

/// The second step a first factor earned.
#[derive(Debug)]
pub struct SecondStep {
    /// `mfa1.<account>.<random>`: names the account, proves nothing without the second factor.
    pub mfa_token: Secret,
    /// Among `totp`, `recovery_code` (and, later, `passkey`).
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

/// What `GET /mfa` shows.
#[derive(Debug)]
pub struct FactorsStatus {
    pub totp: bool,
    pub totp_pending: bool,
    pub recovery_codes: usize,
    pub passkeys: Vec<crate::store::PasskeyRecord>,
}

const TOKEN_PREFIX: &str = "mfa1";

impl Accounts {
    /// Where every first factor ends: a session, or a second step when the account has a
    /// second factor.
    pub(super) async fn after_first_factor(
        &self,
        user: User,
        client: &Client<'_>,
        first: AuthFactor,
    ) -> Result<SignIn, AccountError> {
        if !user.factors.any() {
            return Ok(SignIn::Done(Box::new(
                self.start_session(user, client, &[first]).await?,
            )));
        }
        let now = self.now();
        let secret = self
            .codes
            .issue_second_step(&self.store, &user.id, first, self.mfa.token_ttl, now)
            .await?;
        tracing::info!(target: "audit", event = "second_factor_asked", user_id = %user.id, first = ?first, "first factor right; second factor asked");
        Ok(SignIn::SecondFactor(SecondStep {
            mfa_token: Secret::new(format!(
                "{TOKEN_PREFIX}.{}.{}",
                user.id.simple(),
                secret.expose()
            )),
            methods: methods(&user),
            expires_in: self.mfa.token_ttl.as_secs(),
        }))
    }

    /// The second step of a sign-in: the `mfa_token` and a TOTP or recovery code.
    pub async fn login_second_factor(
        &self,
        mfa_token: &Secret,
        code: &Secret,
        client: &Client<'_>,
    ) -> Result<SignedIn, AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let (user_id, secret) = parse_token(mfa_token).ok_or(AccountError::InvalidSecondStep)?;
        let now = self.now();
        let first = match self
            .codes
            .second_step(&self.store, &user_id, secret, now, StepUse::Look)
            .await?
        {
            StepState::Live(first) => first,
            StepState::Dead => return Err(AccountError::InvalidSecondStep),
        };
        let user = self.profile(&user_id).await?;
        match self.check_second_factor(&user, code, client).await {
            Ok(second) => {
                // Used up before the session is made: of two requests with one token, one
                // signs in.
                if self
                    .codes
                    .second_step(&self.store, &user_id, secret, now, StepUse::End)
                    .await?
                    == StepState::Dead
                {
                    return Err(AccountError::InvalidSecondStep);
                }
                if user.blocked {
                    return Err(AccountError::Blocked { retry_after: None });
                }
                let device = client.device.and_then(|t| self.bindings.device(&user, t));
                let user = self.guard.success(&user, device, Factor::Password).await?;
                tracing::info!(target: "audit", event = "login", user_id = %user.id, method = ?first, second = ?second, "signed in with a second factor");
                self.start_session(user, client, &[first, second]).await
            }
            Err(e) => {
                if matches!(e, AccountError::InvalidOtp) {
                    self.codes
                        .second_step(&self.store, &user_id, secret, now, StepUse::Miss)
                        .await?;
                }
                Err(e)
            }
        }
    }

    /// Checks a TOTP or recovery code of `user` (a recovery code is used up; a TOTP code's
    /// step is spent), counting a wrong one as a failed sign-in.
    async fn check_second_factor(
        &self,
        user: &User,
        code: &Secret,
        client: &Client<'_>,
    ) -> Result<AuthFactor, AccountError> {
        let device = client.device.and_then(|t| self.bindings.device(user, t));
        let who = Subject::Account { user, device };
        self.limits
            .check_key(Class::Login, client.ip, &quota_key(&who))?;
        self.guard.check(who, Factor::Password).await?;
        let found = if is_recovery_code(code.expose()) {
            self.use_recovery_code(&user.id, code).await?
        } else {
            // A secret this key cannot open (the key outside the store was replaced) is the
            // gateway's fault, not a wrong code: no failure is counted against the owner.
            if let Some(t) = &user.factors.totp {
                if !self.factors.opens(&user.id, t) {
                    tracing::error!(user_id = %user.id, "the TOTP secret cannot be opened: was tokens.secret_key (or keys_dir/secrets.key) replaced?");
                    return Err(AccountError::Internal("TOTP secret unreadable".into()));
                }
            }
            self.use_totp_code(&user.id, code).await?
        };
        match found {
            Some(f) => Ok(f),
            None => {
                self.guard.failure(who, Factor::Password).await?;
                tracing::info!(target: "audit", event = "second_factor_failed", user_id = %user.id, device = device.is_some(), "wrong second factor");
                Err(AccountError::InvalidOtp)
            }
        }
    }

    /// Spends the TOTP step `code` is right for, if any (atomically: a code races itself
    /// once).
    async fn use_totp_code(
        &self,
        user_id: &UserId,
        code: &Secret,
    ) -> Result<Option<AuthFactor>, AccountError> {
        let now = self.clock.unix_now();
        let result = self
            .store
            .update_user(user_id, |u| {
                let Some(t) = u.factors.totp.as_mut() else {
                    return Err(());
                };
                let step = self
                    .factors
                    .check_totp(user_id, t, code.expose(), now)
                    .ok_or(())?;
                t.last_step = step;
                Ok(())
            })
            .await;
        match result {
            Ok(_) => Ok(Some(AuthFactor::Totp)),
            Err(crate::store::UpdateError::Rejected(())) => Ok(None),
            Err(crate::store::UpdateError::Store(e)) => Err(e.into()),
        }
    }

    async fn use_recovery_code(
        &self,
        user_id: &UserId,
        code: &Secret,
    ) -> Result<Option<AuthFactor>, AccountError> {
        let result = self
            .store
            .update_user(user_id, |u| {
                let i = self
                    .factors
                    .find_recovery_code(user_id, &u.factors.recovery_codes, code.expose())
                    .ok_or(())?;
                u.factors.recovery_codes.remove(i);
                Ok(())
            })
            .await;
        match result {
            Ok(u) => {
                tracing::info!(target: "audit", event = "recovery_code_used", user_id = %user_id, remaining = u.factors.recovery_codes.len(), "recovery code used");
                Ok(Some(AuthFactor::RecoveryCode))
            }
            Err(crate::store::UpdateError::Rejected(())) => Ok(None),
            Err(crate::store::UpdateError::Store(e)) => Err(e.into()),
        }
    }

    pub async fn factors_status(&self, user_id: &UserId) -> Result<FactorsStatus, AccountError> {
        let u = self.profile(user_id).await?;
        Ok(FactorsStatus {
            totp: u.factors.totp.is_some(),
            totp_pending: u.factors.totp_pending.is_some(),
            recovery_codes: u.factors.recovery_codes.len(),
            passkeys: u.factors.passkeys,
        })
    }

    /// TOTP enrolment, step 1: after a fresh proof of the owner, a new secret (shown once)
    /// that asks for nothing until a first code confirms it.
    pub async fn start_totp(
        &self,
        user_id: &UserId,
        session_id: &str,
        current_password: Option<&Secret>,
        client: &Client<'_>,
    ) -> Result<Enrolment, AccountError> {
        let user = self.profile(user_id).await?;
        self.prove_owner(&user, session_id, current_password, client)
            .await?;
        if user.factors.totp.is_some() {
            return Err(AccountError::field(
                "totp",
                "is already enrolled: remove it first",
            ));
        }
        let now = self.now();
        let enrolment = self
            .factors
            .enrol(&user.id, &user.email, now)
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        let pending = enrolment.factor.clone();
        self.store
            .update_user(&user.id, |u| {
                // Looked at again where it is written: one enrolment never replaces another.
                if u.factors.totp.is_some() {
                    return Err(AccountError::field(
                        "totp",
                        "is already enrolled: remove it first",
                    ));
                }
                u.factors.totp_pending = Some(pending.clone());
                u.updated_at = now;
                Ok(())
            })
            .await?;
        tracing::info!(target: "audit", event = "totp_enrolment_started", user_id = %user.id, "authenticator enrolment started");
        Ok(enrolment)
    }

    /// TOTP enrolment, step 2: a first right code makes the authenticator required at every
    /// sign-in; ten new recovery codes (shown once) come with it.
    pub async fn confirm_totp(
        &self,
        user_id: &UserId,
        session_id: &str,
        code: &Secret,
        client: &Client<'_>,
    ) -> Result<Vec<Secret>, AccountError> {
        let client = &client.without_device();
        let user = self.profile(user_id).await?;
        let first = !user.factors.any();
        let who = Subject::Account {
            user: &user,
            device: None,
        };
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        self.guard.check(who, Factor::Password).await?;
        let now_unix = self.clock.unix_now();
        let now = self.now();
        let (codes, hashes) = self.factors.recovery_codes(&user.id);
        let result = self
            .store
            .update_user(&user.id, |u| {
                if u.factors.totp.is_some() {
                    return Err(false);
                }
                let mut pending = u.factors.totp_pending.clone().ok_or(false)?;
                let step = self
                    .factors
                    .check_totp(&u.id, &pending, code.expose(), now_unix)
                    .ok_or(true)?;
                pending.last_step = step;
                u.factors.totp = Some(pending);
                u.factors.totp_pending = None;
                u.factors.recovery_codes = hashes.clone();
                u.updated_at = now;
                Ok(())
            })
            .await;
        match result {
            Ok(_) => {
                let revoked = if first {
                    self.second_factor_added(&user.id, session_id).await?
                } else {
                    0
                };
                tracing::info!(target: "audit", event = "totp_enabled", user_id = %user.id, sessions_revoked = revoked, "authenticator enrolled; second factor required from now on");
                Ok(codes)
            }
            Err(crate::store::UpdateError::Rejected(false)) => Err(AccountError::field(
                "code",
                "no enrolment is under way (or one was confirmed already): start one with POST /mfa/totp",
            )),
            Err(crate::store::UpdateError::Rejected(true)) => {
                self.guard.failure(who, Factor::Password).await?;
                Err(AccountError::InvalidOtp)
            }
            Err(crate::store::UpdateError::Store(e)) => Err(e.into()),
        }
    }

    /// Removes the authenticator (and its recovery codes): needs one of its codes or a
    /// recovery code.
    pub async fn remove_totp(
        &self,
        user_id: &UserId,
        code: &Secret,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        let client = client.without_device();
        let user = self.profile(user_id).await?;
        if user.factors.totp.is_none() {
            return Err(AccountError::NotFound);
        }
        self.check_second_factor(&user, code, &client).await?;
        let now = self.now();
        self.store
            .update_user(user_id, |u| {
                u.factors.totp = None;
                u.factors.totp_pending = None;
                u.factors.recovery_codes.clear();
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        tracing::info!(target: "audit", event = "totp_removed", user_id = %user_id, "authenticator removed");
        Ok(())
    }

    /// Ten new recovery codes for an authenticator's code; the old ones die.
    pub async fn regenerate_recovery_codes(
        &self,
        user_id: &UserId,
        code: &Secret,
        client: &Client<'_>,
    ) -> Result<Vec<Secret>, AccountError> {
        let client = client.without_device();
        let user = self.profile(user_id).await?;
        if user.factors.totp.is_none() {
            return Err(AccountError::NotFound);
        }
        if is_recovery_code(code.expose()) {
            return Err(AccountError::field(
                "code",
                "must be a code from your authenticator app",
            ));
        }
        self.check_second_factor(&user, code, &client).await?;
        let (codes, hashes) = self.factors.recovery_codes(user_id);
        let now = self.now();
        self.store
            .update_user(user_id, |u| {
                u.factors.recovery_codes = hashes.clone();
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        tracing::info!(target: "audit", event = "recovery_codes_regenerated", user_id = %user_id, "recovery codes replaced");
        Ok(codes)
    }

    /// Steps the caller's session up with a second factor (for a route with `mfa = true`).
    pub async fn step_up(
        &self,
        user_id: &UserId,
        session_id: &str,
        code: &Secret,
        client: &Client<'_>,
    ) -> Result<(TokenPair, User), AccountError> {
        let client = client.without_device();
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let user = self.profile(user_id).await?;
        if !user.factors.any() {
            return Err(AccountError::field(
                "code",
                "this account has no second factor: enrol one first",
            ));
        }
        let factor = self.check_second_factor(&user, code, &client).await?;
        let user = self.profile(user_id).await?;
        let pair = self.sessions.elevate(&user, session_id, factor).await?;
        tracing::info!(target: "audit", event = "session_stepped_up", user_id = %user_id, factor = ?factor, "second factor shown in a signed-in session");
        Ok((pair, user))
    }

    /// An administrator's reset: every factor gone and every session ended (whoever holds
    /// them may hold the lost device).
    pub async fn reset_factors(&self, user_id: &UserId) -> Result<usize, AccountError> {
        let now = self.now();
        self.store
            .update_user(user_id, |u| {
                u.factors = Default::default();
                u.security_version += 1;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        let revoked = self.sessions.revoke_all(user_id, None).await?;
        self.codes
            .withdraw(&self.store, user_id, crate::store::Purpose::SecondStep)
            .await?;
        Ok(revoked.len())
    }

    /// The owner, freshly proved: the current password, or for an account without one a
    /// sign-in within `accounts.recent_sign_in` (a stolen access token alone must not
    /// change how the account is proved); and on an account with a second factor, a session
    /// that showed it (a password thief's session from before must not move the account).
    pub(super) async fn prove_owner(
        &self,
        user: &User,
        session_id: &str,
        current_password: Option<&Secret>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        self.limits.check_ip(Class::Login, client.ip)?;
        self.require_second_factor_session(user, session_id).await?;
        let who = Subject::Account { user, device: None };
        self.limits
            .check_key(Class::Login, client.ip, &quota_key(&who))?;
        self.guard.check(who, Factor::Password).await?;
        match (&user.password, current_password) {
            (Some(_), None) => Err(AccountError::field("current_password", "is required")),
            (Some(hash), Some(given)) => {
                if self.passwords.verify(given, Some(hash)).await? {
                    Ok(())
                } else {
                    self.guard.failure(who, Factor::Password).await?;
                    Err(AccountError::InvalidCredentials)
                }
            }
            (None, _) => self.require_recent_sign_in(session_id).await,
        }
    }
}

impl Accounts {
    /// On an account with a second factor, only a session that showed two factors may
    /// change how the account is proved (its password, address or factors).
    pub(super) async fn require_second_factor_session(
        &self,
        user: &User,
        session_id: &str,
    ) -> Result<(), AccountError> {
        if !user.factors.any() {
            return Ok(());
        }
        let two = self
            .store
            .session(session_id)
            .await?
            .filter(|s| s.user_id == user.id)
            .is_some_and(|s| AuthFactor::two_factor(&s.factors));
        if two {
            Ok(())
        } else {
            Err(AccountError::SecondFactorNeeded)
        }
    }

    /// A first second factor is on: every other session was proved by one factor (a thief
    /// with the password may hold one), so they end; sign-ins under way are undone.
    pub(super) async fn second_factor_added(
        &self,
        user_id: &UserId,
        keep_session: &str,
    ) -> Result<usize, AccountError> {
        let now = self.now();
        self.store
            .update_user(user_id, |u| {
                u.security_version += 1;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        Ok(self
            .sessions
            .revoke_all(user_id, Some(keep_session))
            .await?
            .len())
    }
}

/// The methods a second step offers for `user`.
fn methods(user: &User) -> Vec<&'static str> {
    let mut m = Vec::new();
    if user.factors.totp.is_some() {
        m.push("totp");
    }
    if !user.factors.passkeys.is_empty() {
        m.push("passkey");
    }
    if !user.factors.recovery_codes.is_empty() {
        m.push("recovery_code");
    }
    m
}

pub(super) fn parse_token(token: &Secret) -> Option<(UserId, &str)> {
    let mut parts = token.expose().splitn(3, '.');
    if parts.next()? != TOKEN_PREFIX {
        return None;
    }
    let user = uuid::Uuid::try_parse(parts.next()?).ok()?;
    let secret = parts.next().filter(|s| !s.is_empty() && s.len() <= 64)?;
    Some((user, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_step_tokens_parse_strictly() {
        let id = uuid::Uuid::new_v4();
        let good = Secret::new(format!("mfa1.{}.abc", id.simple()));
        assert_eq!(
            parse_token(&good).map(|(u, s)| (u, s.to_string())),
            Some((id, "abc".into()))
        );
        for bad in [
            String::new(),
            format!("mfa2.{}.abc", id.simple()),
            format!("mfa1.{}.", id.simple()),
            "mfa1.nope.abc".to_string(),
            format!("mfa1.{}.{}", id.simple(), "a".repeat(65)),
        ] {
            assert!(parse_token(&Secret::new(bad.clone())).is_none(), "{bad}");
        }
    }
}
