//! The profile, and administration (the HTTP admin endpoints and the CLI).

use super::{AccountError, Accounts, ProfilePatch};
use super::{normalize_full_name, normalize_phone, normalize_username};
use crate::store::{User, UserId};
use std::collections::BTreeMap;

impl Accounts {
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
}
