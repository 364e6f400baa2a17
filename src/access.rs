//! The one gate: who is calling, and may they pass. Every door asks it (the proxy, the
//! forward-auth endpoints, the account API and the hosted pages), so no two doors can
//! disagree about which credentials count, which session is live, or what a rule admits.
//!
//! A door takes the request's [`Credentials`] (which ones it accepts is its [`Door`]), and
//! [`Gate::check`] answers [`Access`] (who passed, if anyone) or [`Denied`]. What a denial
//! looks like on the wire is decided in one place, `http::error`.

use crate::http::auth::{ACCESS_COOKIE, SHARED_ACCESS_COOKIE, bearer, cookie};
use crate::policy::{Denial, Rule};
use crate::secret::Secret;
use crate::sessions::{SessionError, Sessions};
use crate::tokens::Verified;
use http::HeaderMap;
use std::sync::Arc;

/// How a request presented its access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

/// Which access cookies the gateway believes: the ones it sets. The host-only `__Host-`
/// cookie only it can set; the `__Secure-` one any sibling subdomain can, so it is believed
/// only where `server.cookie_domain` makes the gateway set it (else a sibling could plant its
/// own token and sign the victim in as someone else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessCookies {
    HostOnly,
    AlsoShared,
}

impl AccessCookies {
    pub fn of(cookie_domain: Option<&str>) -> Self {
        match cookie_domain {
            Some(_) => AccessCookies::AlsoShared,
            None => AccessCookies::HostOnly,
        }
    }
}

/// Which credentials a door takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The proxy, forward-auth and the JSON API: a Bearer token, else the access cookie.
    Any,
    /// The hosted pages: the access cookie only (a browser page never sends a Bearer header,
    /// and the pages' forms are protected as cookie-authenticated forms).
    Pages,
}

/// The access token a request presents, and how; borrowed from the request where it can be.
/// Its `Debug` says how, never what.
#[derive(Default)]
pub struct Credentials<'r> {
    token: Option<(Token<'r>, Via)>,
}

/// The token as presented: borrowed from the Authorization header, or the cookie's value.
enum Token<'r> {
    Header(&'r str),
    Cookie(Secret),
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("via", &self.via())
            .finish_non_exhaustive()
    }
}

impl<'r> Credentials<'r> {
    /// Reads them from the request's headers: the Authorization header wins over the cookie.
    pub fn of(headers: &'r HeaderMap, door: Door, cookies: AccessCookies) -> Self {
        let bearer = match door {
            Door::Any => bearer(headers).map(|t| (Token::Header(t), Via::Bearer)),
            Door::Pages => None,
        };
        let token = bearer
            .or_else(|| access_cookie(headers, cookies).map(|t| (Token::Cookie(t), Via::Cookie)));
        Credentials { token }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|(t, _)| match t {
            Token::Header(t) => *t,
            Token::Cookie(t) => t.expose(),
        })
    }

    pub fn via(&self) -> Option<Via> {
        self.token.as_ref().map(|(_, v)| *v)
    }
}

/// The access cookie: host-only, or (see [`AccessCookies`]) shared with the cookie domain.
fn access_cookie(headers: &HeaderMap, cookies: AccessCookies) -> Option<Secret> {
    cookie(headers, ACCESS_COOKIE).or_else(|| match cookies {
        AccessCookies::AlsoShared => cookie(headers, SHARED_ACCESS_COOKIE),
        AccessCookies::HostOnly => None,
    })
}

/// Why the gate refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials that verify and name a live session (401). `expired`: the token was
    /// ours and only too old, so a refresh would do.
    #[error("not signed in")]
    Unauthenticated { expired: bool },
    /// Signed in, and the rule does not admit this identity (403).
    #[error("not allowed")]
    Forbidden,
    /// Signed in with one factor, and the rule needs two.
    #[error("second factor required")]
    MfaRequired,
}

/// Who passed the gate.
#[derive(Debug, Clone)]
pub struct Access {
    /// None on a public route for a caller without valid credentials.
    verified: Option<Arc<Verified>>,
    via: Option<Via>,
    expired: bool,
}

impl Access {
    pub fn verified(&self) -> Option<&Arc<Verified>> {
        self.verified.as_ref()
    }

    pub fn into_verified(self) -> Option<Arc<Verified>> {
        self.verified
    }

    pub fn via(&self) -> Option<Via> {
        self.via
    }

    /// Whether `rule` admits the same caller too: what an application would take instead of
    /// the request's own method or path (an override) must be allowed as well.
    pub fn admits(&self, rule: &Rule) -> Result<(), Denied> {
        let identity = self.verified.as_ref().map(|v| &v.identity);
        rule.authorize(identity).map_err(|d| match d {
            Denial::Unauthenticated => Denied::Unauthenticated {
                expired: self.expired,
            },
            Denial::Forbidden => Denied::Forbidden,
            Denial::MfaRequired => Denied::MfaRequired,
        })
    }
}

/// The gate itself: the live sessions, and which cookies it believes.
#[derive(Debug)]
pub struct Gate {
    sessions: Arc<Sessions>,
    cookies: AccessCookies,
}

impl Gate {
    pub fn new(sessions: Arc<Sessions>, cookies: AccessCookies) -> Self {
        Gate { sessions, cookies }
    }

    /// The credentials of a request at `door`.
    pub fn credentials<'r>(&self, headers: &'r HeaderMap, door: Door) -> Credentials<'r> {
        Credentials::of(headers, door, self.cookies)
    }

    /// The token must verify and belong to a live session, and `rule` must admit the identity
    /// it names. Invalid credentials count as none: a public route still passes.
    pub async fn check(&self, creds: &Credentials<'_>, rule: &Rule) -> Result<Access, Denied> {
        let mut expired = false;
        let verified = match creds.token() {
            None => None,
            Some(token) => match self.sessions.authenticate_shared(token).await {
                Ok(v) => Some(v),
                Err(SessionError::Expired) => {
                    expired = true;
                    None
                }
                Err(e @ (SessionError::Store(_) | SessionError::Token(_))) => {
                    // A token is never believed on a failure; it is worth a line in the log.
                    tracing::warn!(error = %e, "access token could not be checked");
                    None
                }
                Err(_) => None,
            },
        };
        let access = Access {
            verified,
            via: creds.via(),
            expired,
        };
        access.admits(rule)?;
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::tests::h;

    #[test]
    fn credentials_from_header_or_cookie() {
        let m = h(&[("cookie", "a=1; __Host-authgate-access=tok; b=2")]);
        let c = Credentials::of(&m, Door::Any, AccessCookies::HostOnly);
        assert_eq!((c.token(), c.via()), (Some("tok"), Some(Via::Cookie)));
        let both = h(&[
            ("cookie", "__Host-authgate-access=c"),
            ("authorization", "bearer b"),
        ]);
        let c = Credentials::of(&both, Door::Any, AccessCookies::HostOnly);
        assert_eq!((c.token(), c.via()), (Some("b"), Some(Via::Bearer)));
        // The pages take the cookie only.
        let c = Credentials::of(&both, Door::Pages, AccessCookies::HostOnly);
        assert_eq!((c.token(), c.via()), (Some("c"), Some(Via::Cookie)));
        let bearer_only = h(&[("authorization", "Bearer b")]);
        let c = Credentials::of(&bearer_only, Door::Pages, AccessCookies::HostOnly);
        assert_eq!(c.token(), None);
        // A sibling subdomain can set the shared cookie: believed only with a cookie domain.
        let planted = h(&[("cookie", "__Secure-authgate-access=theirs")]);
        let c = Credentials::of(&planted, Door::Any, AccessCookies::HostOnly);
        assert_eq!(c.token(), None);
        let c = Credentials::of(&planted, Door::Any, AccessCookies::AlsoShared);
        assert_eq!(c.token(), Some("theirs"));
    }

    #[test]
    fn an_expired_token_is_remembered_for_later_rules() {
        let public = Rule {
            access: crate::config::Access::Public,
            roles: Vec::new(),
            mfa: false,
        };
        let a = Access {
            verified: None,
            via: Some(Via::Bearer),
            expired: true,
        };
        assert_eq!(a.admits(&public), Ok(()));
        assert_eq!(
            a.admits(Rule::signed_in()),
            Err(Denied::Unauthenticated { expired: true })
        );
    }
}
