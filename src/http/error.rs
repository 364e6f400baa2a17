//! The one place that turns an error into a status, headers and the JSON envelope.
//! Nothing internal reaches the body: 500s say only that something failed.

use super::body::{self, Body};
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

/// An error answered to the client, with a stable machine-readable `code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub fields: Option<BTreeMap<String, String>>,
    pub retry_after: Option<Duration>,
    /// The limit that refused, for the `RateLimit-*` headers of a 429 RATE_LIMITED.
    pub rate_limit: Option<u32>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    status: &'static str,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a BTreeMap<String, String>>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: None,
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// A 400 with per-field messages.
    pub fn with_fields(fields: std::collections::BTreeMap<String, String>) -> Self {
        let mut e = Self::bad_request("Some fields are not valid.");
        e.fields = Some(fields);
        e
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Nothing is served at this address.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "This method is not allowed here.",
        )
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Sign in to continue.",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "You are signed in but not allowed here.",
        )
    }

    pub fn mfa_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "MFA_REQUIRED",
            "This needs a second factor: confirm it with POST /mfa/verify, or enrol one first.",
        )
    }

    pub fn headers_too_large() -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            "The request headers are too large.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Something went wrong on our side.",
        )
    }

    pub fn into_response(self) -> Response<Body> {
        let env = Envelope {
            status: "error",
            code: self.code,
            message: &self.message,
            fields: self.fields.as_ref(),
        };
        // Serializing a struct of strings cannot fail; fall back to a fixed body all the same.
        let json = serde_json::to_vec(&env).unwrap_or_else(|_| {
            br#"{"status":"error","code":"INTERNAL","message":"error"}"#.to_vec()
        });
        let mut resp = body::json_response(self.status, json);
        if let Some(d) = self.retry_after {
            // Round up: "Retry-After: 0" would invite an immediate retry.
            let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            if let Some(limit) = self.rate_limit {
                h.insert("ratelimit-limit", HeaderValue::from(limit));
                h.insert("ratelimit-remaining", HeaderValue::from(0u32));
                h.insert("ratelimit-reset", HeaderValue::from(secs));
            }
        }
        resp
    }
}

/// The success envelope: `{"status":"success","message":...,"data":...}`.
pub fn success<T: Serialize>(status: StatusCode, message: &str, data: &T) -> Response<Body> {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        status: &'static str,
        message: &'a str,
        data: &'a T,
    }
    match serde_json::to_vec(&Ok {
        status: "success",
        message,
        data,
    }) {
        Ok(json) => body::json_response(status, json),
        Err(_) => ApiError::internal().into_response(),
    }
}

impl ApiError {
    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_BUSY",
            "The gateway is busy; try again shortly.",
        )
        .with_retry_after(Duration::from_secs(1))
    }

    pub fn token_expired() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "TOKEN_EXPIRED",
            "The token has expired; refresh it or sign in again.",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::internal()
    }
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as A;
        let s = |status, code, msg: &'static str| ApiError::new(status, code, msg);
        match e {
            A::Invalid(fields) => ApiError::with_fields(fields),
            A::AlreadyExists(f) => {
                let mut e = s(
                    StatusCode::CONFLICT,
                    "ALREADY_EXISTS",
                    "An account with these details already exists.",
                );
                e.fields = Some(BTreeMap::from([(
                    f.as_str().to_string(),
                    "is already taken".to_string(),
                )]));
                e
            }
            A::InvalidCredentials => s(
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "The login or password is wrong.",
            ),
            A::EmailNotVerified => s(
                StatusCode::FORBIDDEN,
                "EMAIL_NOT_VERIFIED",
                "Verify your email address first.",
            ),
            A::Blocked { retry_after } => {
                let e = s(
                    StatusCode::FORBIDDEN,
                    "USER_BLOCKED",
                    "This account is blocked for now.",
                );
                match retry_after {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                }
            }
            A::UserDoesNotExist => s(
                StatusCode::NOT_FOUND,
                "USER_DOES_NOT_EXIST",
                "There is no account with this address.",
            ),
            A::ReauthRequired => s(
                StatusCode::FORBIDDEN,
                "REAUTH_REQUIRED",
                "Sign in again to do this: your sign-in is too old.",
            ),
            A::AlreadyVerified => s(
                StatusCode::CONFLICT,
                "ALREADY_VERIFIED",
                "This account is already verified.",
            ),
            A::InvalidOtp => s(
                StatusCode::BAD_REQUEST,
                "INVALID_OTP",
                "The code is not valid.",
            ),
            A::OtpExpired => s(
                StatusCode::BAD_REQUEST,
                "OTP_EXPIRED",
                "The code has expired; ask for a new one.",
            ),
            A::AttemptsExceeded { retry_after } => s(
                StatusCode::TOO_MANY_REQUESTS,
                "ATTEMPTS_EXCEEDED",
                "Too many wrong tries; this code no longer works. Ask for a new one.",
            )
            .with_retry_after(retry_after),
            A::OtpStillValid { retry_after } => s(
                StatusCode::TOO_MANY_REQUESTS,
                "OTP_STILL_VALID",
                "A code was sent recently and is still valid; check your mail.",
            )
            .with_retry_after(retry_after),
            A::InvalidSecondStep => s(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "This sign-in step is over (used, expired or out of tries): sign in again.",
            ),
            A::NotFound => ApiError::not_found(),
            A::PasskeysOff => s(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Passkeys are not available here (webauthn.rp_id must be a domain).",
            ),
            A::InvalidPasskey => s(
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "The passkey was not accepted (or the request for it is over): try again.",
            ),
            A::SecondFactorNeeded => ApiError::mfa_required(),
            A::InvalidResetToken => s(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "The reset token is not valid or was already used.",
            ),
            A::ResetTokenExpired => s(
                StatusCode::UNAUTHORIZED,
                "TOKEN_EXPIRED",
                "The reset token has expired; start again.",
            ),
            A::Busy => ApiError::busy(),
            A::RateLimited(r) => ApiError::from(r),
            A::Store(e) => e.into(),
            A::Session(e) => e.into(),
            A::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::access::Denied> for ApiError {
    fn from(d: crate::access::Denied) -> Self {
        use crate::access::Denied as D;
        match d {
            D::Unauthenticated { expired: true } => ApiError::token_expired(),
            D::Unauthenticated { expired: false } => ApiError::unauthenticated(),
            D::Forbidden => ApiError::forbidden(),
            D::MfaRequired => ApiError::mfa_required(),
        }
    }
}

impl From<crate::sessions::SessionError> for ApiError {
    fn from(e: crate::sessions::SessionError) -> Self {
        use crate::sessions::SessionError as S;
        match e {
            S::Unauthenticated => ApiError::unauthenticated(),
            S::Expired => ApiError::token_expired(),
            S::Reused => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "This refresh token was already used; the session has been ended. Sign in again.",
            ),
            S::Blocked => ApiError::new(
                StatusCode::FORBIDDEN,
                "USER_BLOCKED",
                "This account is blocked.",
            ),
            S::Store(e) => e.into(),
            S::Token(e) => {
                tracing::error!(error = %e, "token error");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::ratelimit::Refused> for ApiError {
    fn from(r: crate::ratelimit::Refused) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "Too many requests; slow down.",
        )
        .with_retry_after(r.retry_after);
        e.rate_limit = Some(r.limit);
        e
    }
}
