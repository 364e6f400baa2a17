//! Reading a JSON request body: content type, size cap, read deadline, nesting depth, and
//! type errors reported per field. Every refusal is a 4xx envelope.

use super::error::ApiError;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 32;

pub fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("The request body is larger than {limit} bytes."),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// How long, and how much, a refused body is still read after its 413 has been answered:
/// closing a connection whose client is still sending makes the kernel reset it, and the
/// client loses the answer with it (nginx's `lingering_close`, `lingering_time` and
/// `lingering_timeout` do the same).
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_QUIET: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// Reads what is left of a refused body off the request path, discarding it, so that the
/// 413 reaches the client; then the connection may even be kept.
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let mut read: u64 = 0;
        let drain = async {
            // Until the end, a broken body, a client gone quiet, or enough.
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(LINGER_QUIET, body.frame()).await {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                }
                if read > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}

/// Whether the client waits for `100 Continue` before it sends the body: then a refusal
/// before reading spares it the sending, and there is nothing to linger over.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Reads the whole body, within `limit` bytes and `deadline`. A body past `limit` is
/// answered 413 at once, and the rest is read and dropped in the background.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        if !expects_continue(headers) {
            linger(body);
        }
        return Err(payload_too_large(limit));
    }
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| ApiError::bad_request("The request body could not be read."))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > limit {
                    return Err(payload_too_large(limit));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "The request body did not arrive in time.",
        )),
        Ok(Err(e)) => {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                linger(body);
            }
            Err(e)
        }
        Ok(Ok(())) => Ok(buf.freeze()),
    }
}

/// Reads and parses a JSON body into `T`. An empty body parses as `{}` when `empty_ok`.
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    deadline: Duration,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, limit, deadline).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return parse(b"{}");
    }
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the request body as application/json.",
        ));
    }
    parse(&bytes)
}

/// Parses JSON into `T`, naming the field of a type error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if depth(bytes) > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "The JSON body nests deeper than {MAX_DEPTH} levels."
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut de);
    if parsed.is_ok() {
        if let Err(e) = de.end() {
            return Err(ApiError::bad_request(format!(
                "The body is not valid JSON: {e}."
            )));
        }
    }
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::bad_request(format!(
                    "The body is not valid JSON: {}.",
                    inner
                )));
            }
            let path = e.path().to_string();
            let message = inner.to_string();
            // "invalid type: integer `5`, expected a string at line 1 column 12" → drop the position.
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            if path == "." || path.is_empty() {
                let field = message
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string);
                return Err(match field {
                    Some(f) => {
                        ApiError::with_fields(BTreeMap::from([(f, "is required".to_string())]))
                    }
                    None => ApiError::bad_request(format!(
                        "The body does not have the expected shape: {message}."
                    )),
                });
            }
            Err(ApiError::with_fields(BTreeMap::from([(path, message)])))
        }
    }
}

/// Deepest array/object nesting in a JSON text, strings skipped; a cheap scan before parsing.
fn depth(bytes: &[u8]) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Login {
        login: String,
        password: String,
    }

    #[test]
    fn errors_name_fields() {
        let e = parse::<Login>(br#"{"login": 5, "password": "x"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.fields.as_ref().unwrap().contains_key("login"), "{e:?}");
        let e = parse::<Login>(br#"{"login": "a"}"#).unwrap_err();
        assert_eq!(
            e.fields
                .as_ref()
                .unwrap()
                .get("password")
                .map(String::as_str),
            Some("is required")
        );
        let e = parse::<Login>(b"{not json").unwrap_err();
        assert!(e.fields.is_none() && e.message.contains("not valid JSON"));
        let e = parse::<Login>(br#"{"login":"a","password":"b"} trailing"#).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn depth_is_bounded() {
        assert_eq!(depth(br#"{"a":[1,{"b":"[[[["}]}"#), 3);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("nests deeper"));
    }
}
