//! Request limits checked before anything else, and the headers every response of the
//! gateway's own carries.

use super::body::Body;
use super::error::ApiError;
use http::{HeaderMap, HeaderValue, Response, header};

/// Refuses requests with too many or too large headers with a 431 envelope. hyper enforces a
/// hard cap on its read buffer as a backstop; this check is what gives clients a clear answer.
pub fn check_header_limits(
    h: &HeaderMap,
    max_headers: usize,
    max_bytes: usize,
) -> Result<(), ApiError> {
    if h.len() > max_headers {
        return Err(ApiError::headers_too_large());
    }
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if bytes > max_bytes {
        return Err(ApiError::headers_too_large());
    }
    Ok(())
}

/// Headers for the gateway's own answers: nothing cached, nothing sniffed, no referrer leak.
pub fn own_headers(mut resp: Response<Body>, scheme: &str) -> Response<Body> {
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if scheme == "https" {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}
