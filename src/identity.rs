//! Who is calling, as the gateway tells the applications behind it.

/// Who is making the request, once the authenticate phase has found out.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub email: String,
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub session_id: String,
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
        }
    }
}
