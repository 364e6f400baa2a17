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
        }
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
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
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
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
