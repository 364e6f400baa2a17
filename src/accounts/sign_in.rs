//! Sign-in by password or by a mailed code, refresh, and sign-out: every sign-in ends in
//! [`Accounts::start_session`], whichever door asked.

use super::codes::quota_key;
use super::guard::{Factor, Subject};
use super::{
    AccountError, Accounts, Client, SignIn, SignOut, SignedIn, SignedOut, normalize_email,
};
use crate::ratelimit::Class;
use crate::secret::Secret;
use crate::sessions::{ClientInfo, TokenPair};
use crate::store::{AuthFactor, Purpose, User, UserId};
use time::OffsetDateTime;

impl Accounts {
    /// A refresh, for the API and for the login page's transparent one: the client's refresh
    /// quota, then the rotation (see [`crate::sessions::Sessions::refresh`]).
    pub async fn refresh(
        &self,
        token: &Secret,
        client: &Client<'_>,
    ) -> Result<(TokenPair, User), AccountError> {
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
    ) -> Result<SignIn, AccountError> {
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
        // With a second factor to come, the failures are cleared only once it is shown: a
        // thief with the password cannot reset the count between wrong codes.
        let user = if user.factors.any() {
            user
        } else {
            self.guard.success(&user, device, Factor::Password).await?
        };
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "password", "password right");
        self.after_first_factor(user, client, AuthFactor::Password)
            .await
    }

    /// Passwordless step 1: mails a sign-in code.
    pub async fn start_code_login(
        &self,
        email: &str,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.mail_code(email, Purpose::Login, client).await
    }

    /// Passwordless step 2: the code signs in, and verifies the email on a first sign-in.
    pub async fn finish_code_login(
        &self,
        email: &str,
        code: &str,
        client: &Client<'_>,
    ) -> Result<SignIn, AccountError> {
        let user = self.take_code(email, code, Purpose::Login, client).await?;
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        let user = if !user.email_verified && user.password.is_some() {
            // Whoever registered this unverified address chose that password; the mailbox's
            // owner is the one signing in now. Keeping it would let a squatter in later.
            self.drop_unverified_password(&user, "first sign-in by code on an unverified account")
                .await?
        } else {
            self.mark_verified(&user).await?
        };
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "code", "code right");
        self.after_first_factor(user, client, AuthFactor::EmailCode)
            .await
    }

    /// Where every sign-in ends: a session for the client, proved by `factors`, and its
    /// device token (the one it presented when that is still one of this account's).
    pub(super) async fn start_session(
        &self,
        user: User,
        client: &Client<'_>,
        factors: &[AuthFactor],
    ) -> Result<SignedIn, AccountError> {
        let info = ClientInfo {
            ip: client.ip,
            user_agent: client.user_agent.to_string(),
        };
        let pair = self.sessions.sign_in(&user, &info, factors).await?;
        let device = self.device_token(&user, client.device);
        Ok(SignedIn { user, pair, device })
    }

    /// Ends sessions of `user_id`, whose session `current` is asking.
    pub async fn sign_out(
        &self,
        user_id: &UserId,
        current: &str,
        which: SignOut,
    ) -> Result<SignedOut, AccountError> {
        let revoked = match which {
            SignOut::Everywhere => self.sessions.revoke_all(user_id, None).await?,
            SignOut::This => {
                self.sessions
                    .revoke_ids(user_id, &[current.to_string()])
                    .await?
            }
            SignOut::Sessions(ids) => self.sessions.revoke_ids(user_id, &ids).await?,
        };
        let this_one = revoked.iter().any(|id| id == current);
        // Naming no session of this account ends nothing, and is no event.
        if !revoked.is_empty() {
            tracing::info!(target: "audit", event = "signed_out", user_id = %user_id, sessions_revoked = revoked.len(), this_session = this_one, "signed out");
        }
        Ok(SignedOut { revoked, this_one })
    }
}
