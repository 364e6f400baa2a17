//! The operations the gateway answers itself: one table, which the router consults before it
//! dispatches (a path that is not here is 404, a method that is not here 405), and which the
//! OpenAPI document at `{prefix}/openapi.json` must list exactly (a test holds them to it).

use http::Method;

/// Every method, for the forward-auth doors: a front proxy may ask with the request's own.
pub const ANY: &str = "*";

/// `(method, path after the auth prefix)`; `{name}` is a segment of the caller's choosing.
pub const UNDER_PREFIX: &[(&str, &str)] = &[
    // Forward-auth.
    (ANY, "/validate"),
    (ANY, "/validate/auth-request"),
    (ANY, "/validate/forward-auth"),
    // Accounts.
    ("POST", "/register"),
    ("POST", "/verify"),
    ("POST", "/verify/resend"),
    ("POST", "/login"),
    ("POST", "/login/code"),
    ("POST", "/login/code/verify"),
    ("POST", "/password/forgot"),
    ("POST", "/password/reset"),
    ("POST", "/password/reset/verify"),
    ("POST", "/password/change"),
    ("GET", "/me"),
    ("PATCH", "/me"),
    ("POST", "/me/email"),
    ("POST", "/me/email/verify"),
    // Second factors.
    ("POST", "/login/mfa"),
    ("GET", "/mfa"),
    ("POST", "/mfa/totp"),
    ("DELETE", "/mfa/totp"),
    ("POST", "/mfa/totp/confirm"),
    ("POST", "/mfa/recovery-codes"),
    ("POST", "/mfa/verify"),
    ("POST", "/login/passkey/options"),
    ("POST", "/login/passkey"),
    ("POST", "/login/mfa/passkey/options"),
    ("POST", "/login/mfa/passkey"),
    ("POST", "/passkeys/register/options"),
    ("POST", "/passkeys/register"),
    ("GET", "/passkeys"),
    ("PATCH", "/passkeys/{id}"),
    ("DELETE", "/passkeys/{id}"),
    // Sessions.
    ("POST", "/token/refresh"),
    ("POST", "/logout"),
    ("GET", "/sessions"),
    ("DELETE", "/sessions/{id}"),
    // Keys and the contract.
    ("GET", "/jwks.json"),
    ("GET", "/openapi.json"),
    // Administration.
    ("GET", "/admin/users"),
    ("GET", "/admin/users/{id}"),
    ("POST", "/admin/users/{id}/block"),
    ("POST", "/admin/users/{id}/unblock"),
    ("PUT", "/admin/users/{id}/roles"),
    ("GET", "/admin/users/{id}/sessions"),
    ("DELETE", "/admin/users/{id}/sessions"),
    ("DELETE", "/admin/users/{id}/sessions/{sid}"),
    ("DELETE", "/admin/users/{id}/mfa"),
    // Hosted pages: what a browser gets (GET, and HEAD with it) and the forms it posts.
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("GET", "/ui/style.css"),
    ("HEAD", "/ui/style.css"),
    ("GET", "/ui/passkeys.js"),
    ("HEAD", "/ui/passkeys.js"),
    ("GET", "/ui/login"),
    ("HEAD", "/ui/login"),
    ("POST", "/ui/login"),
    ("GET", "/ui/code"),
    ("HEAD", "/ui/code"),
    ("POST", "/ui/code"),
    ("POST", "/ui/code/verify"),
    ("GET", "/ui/signup"),
    ("HEAD", "/ui/signup"),
    ("POST", "/ui/signup"),
    ("POST", "/ui/verify"),
    ("POST", "/ui/verify/resend"),
    ("GET", "/ui/forgot"),
    ("HEAD", "/ui/forgot"),
    ("POST", "/ui/forgot"),
    ("POST", "/ui/reset"),
    ("GET", "/ui/devices"),
    ("HEAD", "/ui/devices"),
    ("POST", "/ui/devices/revoke"),
    ("GET", "/ui/email"),
    ("HEAD", "/ui/email"),
    ("POST", "/ui/email"),
    ("POST", "/ui/email/verify"),
    ("POST", "/ui/logout"),
    ("POST", "/ui/mfa"),
    ("GET", "/ui/step-up"),
    ("HEAD", "/ui/step-up"),
    ("POST", "/ui/step-up"),
    ("GET", "/ui/security"),
    ("HEAD", "/ui/security"),
    ("POST", "/ui/security/totp"),
    ("POST", "/ui/security/totp/confirm"),
    ("POST", "/ui/security/totp/remove"),
    ("POST", "/ui/security/recovery-codes"),
    ("POST", "/ui/security/passkeys/rename"),
    ("POST", "/ui/security/passkeys/remove"),
    ("GET", "/ui/signed-out"),
    ("HEAD", "/ui/signed-out"),
];

/// The operational endpoints, at the root (not under the prefix).
pub const AT_ROOT: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("GET", "/metrics"),
    ("HEAD", "/metrics"),
];

/// What the table says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Yes,
    /// The path is an operation's, with other methods (405).
    OtherMethod,
    No,
}

/// Looks a request up: `segs` are the path's segments after the prefix.
pub fn find(method: &Method, segs: &[&str]) -> Found {
    let mut path_known = false;
    for (m, template) in UNDER_PREFIX {
        if matches(template, segs) {
            if *m == ANY || *m == method.as_str() {
                return Found::Yes;
            }
            path_known = true;
        }
    }
    match path_known {
        true => Found::OtherMethod,
        false => Found::No,
    }
}

/// The methods the table has for a path, for a 405's `Allow` header ("GET, HEAD").
pub fn allowed_methods(segs: &[&str]) -> String {
    let mut out = String::new();
    for (m, template) in UNDER_PREFIX {
        if *m != ANY && matches(template, segs) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(m);
        }
    }
    out
}

fn matches(template: &str, segs: &[&str]) -> bool {
    let mut want = template.trim_start_matches('/').split('/');
    let mut got = segs.iter();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') || w == *g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_paths() {
        assert_eq!(find(&Method::POST, &["register"]), Found::Yes);
        assert_eq!(find(&Method::GET, &["register"]), Found::OtherMethod);
        assert_eq!(find(&Method::DELETE, &["sessions", "abc"]), Found::Yes);
        assert_eq!(find(&Method::DELETE, &["sessions"]), Found::OtherMethod);
        assert_eq!(find(&Method::DELETE, &["sessions", "a", "b"]), Found::No);
        assert_eq!(
            find(&Method::PUT, &["validate", "forward-auth"]),
            Found::Yes
        );
        assert_eq!(find(&Method::GET, &["nothing"]), Found::No);
        assert_eq!(find(&Method::GET, &[""]), Found::No);
        assert_eq!(allowed_methods(&["me"]), "GET, PATCH");
        assert_eq!(allowed_methods(&["ui", "login"]), "GET, HEAD, POST");
    }

    #[test]
    fn each_operation_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for op in UNDER_PREFIX.iter().chain(AT_ROOT) {
            assert!(seen.insert(op), "{op:?} twice");
        }
    }
}
