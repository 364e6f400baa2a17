//! Who is calling, as the gateway tells the applications behind it.

/// Who is making the request, once the authenticate phase has found out.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub email: String,
    pub username: Option<String>,
    /// The roles that count for this session: all the account's, but those that need a
    /// second factor this session has not shown (see `withheld_roles`).
    pub roles: Vec<String>,
    pub session_id: String,
    /// How the session was proved (RFC 8176 values).
    pub amr: Vec<String>,
    /// Two factors were shown (`amr` has `mfa`).
    pub two_factor: bool,
    /// The account's roles that count only after a second factor (`mfa.required_roles`),
    /// while this session has shown one factor.
    pub withheld_roles: Vec<String>,
}

impl Identity {
    /// An identity as its token says it, the roles in `second_factor_roles` withheld from a
    /// one-factor session.
    pub fn new(
        user_id: String,
        email: String,
        username: Option<String>,
        roles: Vec<String>,
        session_id: String,
        amr: Vec<String>,
        second_factor_roles: &[String],
    ) -> Self {
        let two_factor = amr.iter().any(|a| a == "mfa");
        let (roles, withheld_roles) = if two_factor {
            (roles, Vec::new())
        } else {
            roles
                .into_iter()
                .partition(|r| !second_factor_roles.contains(r))
        };
        Identity {
            user_id,
            email,
            username,
            roles,
            session_id,
            amr,
            two_factor,
            withheld_roles,
        }
    }

    /// Adds roles the token names as withheld (a one-factor session only).
    pub fn withholding(mut self, roles: Vec<String>) -> Self {
        if !self.two_factor {
            for r in roles {
                if !self.withheld_roles.contains(&r) {
                    self.withheld_roles.push(r);
                }
            }
        }
        self
    }
}

/// An identity as the values of its headers (user id, email, name, roles, session id), made
/// once when its token is first verified, then shared by every request that token makes.
/// A value that cannot be a header value is absent, never mangled.
#[derive(Debug, Clone)]
pub struct IdentityValues {
    pub user_id: Option<http::HeaderValue>,
    pub email: Option<http::HeaderValue>,
    /// The username, or the email for accounts without one (Authelia-style apps read
    /// Remote-User as the login).
    pub name: Option<http::HeaderValue>,
    pub roles: Option<http::HeaderValue>,
    pub session_id: Option<http::HeaderValue>,
    /// The `amr` values, comma-separated.
    pub amr: Option<http::HeaderValue>,
}

impl IdentityValues {
    pub fn new(id: &Identity) -> Self {
        let v = |s: &str| http::HeaderValue::from_str(s).ok();
        IdentityValues {
            user_id: v(&id.user_id),
            email: v(&id.email),
            name: v(id.username.as_deref().unwrap_or(&id.email)),
            roles: v(&id.roles.join(",")),
            session_id: v(&id.session_id),
            amr: v(&id.amr.join(",")),
        }
    }
}
