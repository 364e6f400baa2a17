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

/// Methods are case-sensitive (RFC 9110, 9.1), but many frameworks upper-case what they
/// receive: a `delete` that matched no DELETE rule would still run the DELETE handler. A
/// method with a lower-case letter is refused, so the method a rule matched is the method
/// the application acts on.
pub fn check_method(m: &http::Method) -> Result<(), ApiError> {
    if m.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(ApiError::bad_request(
            "The request method must be upper-case (GET, POST, DELETE, ...).",
        ));
    }
    Ok(())
}

/// A host as a request may name it: a DNS name or an IPv4 address, or an IPv6 address in
/// brackets, then an optional port of digits. Nothing else: userinfo (`user@host`), a
/// non-numeric port (`host:abc`, which a rule's host match and a front proxy read apart), a
/// fragment or any other character is refused, so every reader sees the same host.
pub fn check_host(host: &str) -> Result<(), ApiError> {
    if host_and_port(host).is_none() {
        return Err(ApiError::bad_request(
            "The request's host is not a host name with an optional numeric port.",
        ));
    }
    Ok(())
}

/// `host` split into its name and port, when it is well formed (see [`check_host`]).
pub fn host_and_port(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let name = host.get(..inside.len() + 2)?;
        match after {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    // No empty label (`admin.test..`, `.admin.test`): one trailing dot is the same name, a run
    // of them is a name that some upstreams read as the same and others do not.
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && !name.contains("..")
        && !name.starts_with('.')
        && (name.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
    };
    name_ok.then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_must_be_upper_case() {
        for ok in ["GET", "DELETE", "PROPFIND", "M-SEARCH"] {
            assert!(check_method(&http::Method::from_bytes(ok.as_bytes()).unwrap()).is_ok());
        }
        for bad in ["delete", "Delete", "dELETE", "get"] {
            assert!(check_method(&http::Method::from_bytes(bad.as_bytes()).unwrap()).is_err());
        }
    }

    #[test]
    fn hosts_without_userinfo() {
        for ok in [
            "app.example",
            "app.example:8443",
            "127.0.0.1:1",
            "[::1]:80",
            "a_b.local",
            "app.example.",
            "app.example.:443",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "user@secure.example",
            "a b",
            "",
            "x/y",
            "a\\b",
            "a%40b",
            "x#",
            "secure.example:abc",
            "secure.example:",
            "secure.example:1:2",
            "[secure.example]",
            "[::1]x",
            "admin.test..",
            "admin.test...:443",
            ".admin.test",
            "admin..test",
            "[::1]:x",
            "secure.example:123456",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert!(check_host("[::1]").is_ok());
        assert_eq!(host_and_port("a.example:80"), Some(("a.example", Some(80))));
        assert_eq!(host_and_port("[::1]:8443"), Some(("[::1]", Some(8443))));
    }
}
