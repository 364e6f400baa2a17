//! Moving an account to a new email address: proof of ownership, then a code mailed there.

use super::codes::CodeSubject;
use super::{AccountError, Accounts, Client, SignedIn};
use crate::mail::CodeMail;
use crate::ratelimit::Class;
use crate::secret::Secret;
use crate::store::{Purpose, UniqueField, UserId};
use time::OffsetDateTime;

impl Accounts {
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
        let client = &client.without_device();
        let new_email = self.email(new_email)?;
        let user = self.profile(user_id).await?;
        if new_email == user.email {
            return Err(AccountError::field("email", "is already your address"));
        }
        // A password check costs a hash, and the mail goes to an address the caller names:
        // limited like a sign-in, and per recipient like every code mail (below).
        self.prove_owner(&user, session_id, current_password, client)
            .await?;
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
    /// caller's device goes on in a new one), codes mailed to the old address die, and it is
    /// told.
    pub async fn finish_email_change(
        &self,
        user_id: &UserId,
        session_id: &str,
        new_email: &str,
        code: &str,
        client: &Client<'_>,
    ) -> Result<SignedIn, AccountError> {
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
                &client.without_device(),
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
        for purpose in [
            Purpose::VerifyEmail,
            Purpose::Login,
            Purpose::ResetPassword,
            Purpose::SecondStep,
        ] {
            self.codes.withdraw(&self.store, &user.id, purpose).await?;
        }
        // The new session is proved as the caller's was (the code proves only the mailbox).
        let factors = self
            .store
            .session(session_id)
            .await?
            .filter(|s| s.user_id == user.id)
            .map(|s| s.factors)
            .unwrap_or_default();
        let revoked = self.sessions.revoke_all(&user.id, None).await?;
        if user.email != updated.email {
            self.mailer.send_email_changed(&user.email);
        }
        tracing::info!(target: "audit", event = "email_changed", user_id = %user.id, sessions_revoked = revoked.len(), "email address changed");
        // As it is after the sessions ended: the device that confirmed signs in anew with it.
        let user = self.profile(&user.id).await?;
        self.start_session(user, client, &factors).await
    }
}
