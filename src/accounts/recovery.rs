//! Password recovery (one step, or two with a reset token) and change.

use super::codes::quota_key;
use super::guard::{Factor, Subject};
use super::{AccountError, Accounts, Client};
use crate::ratelimit::Class;
use crate::secret::Secret;
use crate::store::{Purpose, RECORD_VERSION, ResetToken, User, UserId};
use time::OffsetDateTime;

impl Accounts {
    /// Mails a password reset code.
    pub async fn forgot_password(
        &self,
        email: &str,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.mail_code(email, Purpose::ResetPassword, client).await
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
        let user = self
            .code_owner(&email, code, Purpose::ResetPassword, client)
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
        let user = self
            .take_code(email, code, Purpose::ResetPassword, client)
            .await?;
        self.issue_reset_token(&user).await
    }

    /// A short-lived single-use token that sets `user`'s password (two-step reset).
    pub(super) async fn issue_reset_token(
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
        // The password alone does not replace itself on an account it does not open alone.
        self.require_second_factor_session(&user, keep_session)
            .await?;
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
        // A second step earned with the old password is over.
        self.codes
            .withdraw(&self.store, &user.id, Purpose::SecondStep)
            .await?;
        tracing::info!(target: "audit", event = "password_changed", user_id = %user.id, sessions_revoked = revoked.len(), "password set");
        Ok(updated)
    }
}
