//! Path normalization, done once per request: the route table and the upstream see the same
//! path, so no encoding trick can make a rule match one thing and the upstream serve another.

use std::borrow::Cow;

/// Why a path was refused (each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path has an invalid percent-encoding")]
    BadEscape,
    #[error("the path has an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has a control character")]
    ControlCharacter,
    #[error("the path climbs above the root")]
    EscapesRoot,
    #[error("the path has parameters (';'), which upstreams disagree about")]
    Parameters,
    #[error("the path is encoded twice over a '.', '/', '\\', '%' or control character")]
    DoubleEncoded,
    #[error("the path's percent-encoding is not UTF-8")]
    NotUtf8,
    #[error(
        "a path segment ends with '.' or a space, names a data stream (\"::$\") or is an 8.3 short name (\"~1\"): Windows servers read it as another path"
    )]
    WindowsAlias,
    #[error(
        "a path segment reads as '.', '..', '/' or '\\' once Unicode compatibility forms are folded (NFKC), as some servers and applications fold them"
    )]
    CompatibilityAlias,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when `p` is already in normal form, so the common request allocates nothing.
fn is_plain(p: &str) -> bool {
    // One pass over the segments (this runs on every request; five substring searches cost
    // several times more): none empty but a trailing one, none `.` or `..`, no byte that
    // needs decoding or refusing.
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.as_bytes().split(|&c| c == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
            return false;
        }
        // Looked at closely below: IIS and NTFS read `admin.`, `admin ` and `admin::$DATA`
        // as `admin`, and `ADMINI~1` as `administrator`.
        if seg.last() == Some(&b'.') || seg.contains(&b':') || seg.contains(&b'~') {
            return false;
        }
        if seg
            .iter()
            .any(|&c| matches!(c, b'%' | b'\\' | b';') || c < 0x20 || c == 0x7f)
        {
            return false;
        }
    }
    true
}

/// Normalizes a request path (without the query):
/// percent-encoded unreserved characters are decoded, other escapes upper-cased; `.` and `..`
/// segments are resolved; repeated slashes merged. Encoded separators (`%2F`, `%5C`), NUL,
/// backslashes, `..` above the root and path parameters (`;`) are refused.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.contains('%') {
        check_decodings(raw)?;
    }
    // Pass 1: escapes.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .ok_or(PathError::BadEscape)?;
                let lo = bytes
                    .get(i + 2)
                    .copied()
                    .and_then(hex)
                    .ok_or(PathError::BadEscape)?;
                let v = hi * 16 + lo;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if is_unreserved(v) {
                    decoded.push(char::from(v));
                } else {
                    decoded.push('%');
                    for nibble in [hi, lo] {
                        let c = char::from_digit(u32::from(nibble), 16).unwrap_or('0');
                        decoded.push(c.to_ascii_uppercase());
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            // Tomcat, Jetty and Spring drop ";params" from a segment, others keep them: a rule
            // matched on one reading would be served on the other. Encoded (%3B) stays data.
            b';' => return Err(PathError::Parameters),
            c if c < 0x20 || c == 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                // Copy the run up to the next byte that needs attention (keeps UTF-8 intact).
                let run = bytes
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&c| matches!(c, b'%' | b'\\' | b';') || c < 0x20 || c == 0x7f)
                    .unwrap_or(bytes.len() - i);
                decoded.push_str(raw.get(i..i + run).ok_or(PathError::BadEscape)?);
                i += run;
            }
        }
    }
    // Pass 2: segments.
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = decoded.ends_with('/');
    for seg in decoded.split('/') {
        if windows_alias(seg) {
            return Err(PathError::WindowsAlias);
        }
        match seg {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                trailing_slash = true;
            }
            s => {
                out.push(s);
                trailing_slash = decoded.ends_with('/');
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    if let Some(c) = compatibility_form(&path) {
        if c.contains('\\') || has_dot_segment(&c) || has_empty_segment(&c) {
            return Err(PathError::CompatibilityAlias);
        }
    }
    Ok(Cow::Owned(path))
}

/// A segment that a Windows server (IIS, NTFS) reads as another: a trailing dot or space
/// (`admin.`, `admin%20`), an alternate data stream (`admin::$DATA`), or an 8.3 short name
/// (`ADMINI~1` for `administrator`).
fn windows_alias(seg: &str) -> bool {
    if seg == "." || seg == ".." {
        return false;
    }
    let plain = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
    let short_name = plain
        .as_bytes()
        .windows(2)
        .any(|w| w.first() == Some(&b'~') && w.get(1).is_some_and(u8::is_ascii_digit));
    plain.ends_with('.') || plain.ends_with(' ') || plain.contains(":$") || short_name
}

/// Whether a path has an empty segment before its end (`//x/admin`): the front proxy forwards
/// it as written, and a WHATWG URL parser (Node's `new URL(req.url, base)`) or Python's
/// `urlsplit` reads `//x/admin` as host `x`, path `/admin`.
pub fn has_empty_segment(path: &str) -> bool {
    path.contains("//")
}

/// Whether a path has a `.` or `..` segment, written out or percent-encoded (`%2e%2e`).
/// The built-in proxy forwards the path it judged, resolved; a front proxy asking at the
/// forward-auth door forwards the path as the client wrote it (nginx's `$request_uri`,
/// Caddy), and an application that does not resolve `..` serves `/admin/..` as `/admin`.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let len = seg.len();
        (1..=6).contains(&len) && {
            let plain = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
            plain == "." || plain == ".."
        }
    })
}

/// Whether a path carries a percent-escape of a non-ASCII byte (UTF-8 beyond ASCII).
fn has_non_ascii_escape(path: &str) -> bool {
    path.as_bytes().windows(2).any(|w| {
        w.first() == Some(&b'%')
            && w.get(1)
                .is_some_and(|h| matches!(h, b'8'..=b'9' | b'A'..=b'F' | b'a'..=b'f'))
    })
}

/// The path as an upstream reads it that decodes it and folds Unicode to what it stands for,
/// when that differs: NFKC, as Python applications and Windows' best-fit mapping do (`ａdmin`
/// is `admin`, `．．` and `‥` are `..`, `／` is `/`, `ſ` is `s`, the Kelvin sign `K`), and
/// `ı`, `İ` as `i`, as Java's `equalsIgnoreCase` and Spring's case-insensitive matching take
/// them. Decoded: compared with the routes' prefixes, never forwarded.
pub fn compatibility_form(path: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    if !has_non_ascii_escape(path) {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let folded: String = decoded
        .nfkc()
        .map(|c| match c {
            '\u{131}' | '\u{130}' => 'i',
            c => c,
        })
        .collect();
    (folded != decoded).then_some(folded)
}

/// Every escape decoded once, as an upstream would decode the path (`None` for a bad escape,
/// which pass 1 names).
fn decode_once(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hi = s.get(i + 1).copied().and_then(hex)?;
            let lo = s.get(i + 2).copied().and_then(hex)?;
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// What an upstream that decodes the path (once, or once more) would read must be what the
/// rules were matched on: its once-decoded bytes are UTF-8, and a second decoding finds no
/// `.`, `/`, `\`, `%` or control character (`%252e%252e`, `%252f`, `%255c`, `%2500`).
fn check_decodings(raw: &str) -> Result<(), PathError> {
    let Some(once) = decode_once(raw.as_bytes()) else {
        return Err(PathError::BadEscape);
    };
    if std::str::from_utf8(&once).is_err() {
        return Err(PathError::NotUtf8);
    }
    let mut i = 0;
    while let Some(&b) = once.get(i) {
        if b == b'%' {
            let v = once
                .get(i + 1)
                .copied()
                .and_then(hex)
                .zip(once.get(i + 2).copied().and_then(hex))
                .map(|(hi, lo)| hi * 16 + lo);
            if v.is_some_and(|v| matches!(v, b'.' | b'/' | b'\\' | b'%') || v < 0x20 || v == 0x7f) {
                return Err(PathError::DoubleEncoded);
            }
        }
        i += 1;
    }
    Ok(())
}

/// True when `path` is `prefix` or lies under it on a segment boundary
/// (`/api` covers `/api` and `/api/x`, not `/apix`).
/// Case-insensitive: `/API` is under `/api`, since case-insensitive upstreams (IIS, some
/// file servers) would serve it as such; a case-sensitive upstream just answers 404.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let (p, x) = (path.as_bytes(), prefix.as_bytes());
    match p.get(..x.len()) {
        Some(head) if head.eq_ignore_ascii_case(x) => {
            let rest = p.get(x.len()..).unwrap_or_default();
            rest.is_empty() || rest.first() == Some(&b'/') || prefix.ends_with('/')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{PathError, compatibility_form, has_dot_segment, normalize};

    #[test]
    fn unicode_that_stands_for_ascii_is_folded_or_refused() {
        assert_eq!(
            compatibility_form("/adm%C4%B1n/x").as_deref(),
            Some("/admin/x")
        );
        assert_eq!(compatibility_form("/adm%C4%B0n").as_deref(), Some("/admin"));
        assert_eq!(
            compatibility_form("/%E2%84%AAey/%C5%BF").as_deref(),
            Some("/Key/s")
        );
        assert_eq!(
            compatibility_form("/%EF%BD%81dmin").as_deref(),
            Some("/admin")
        );
        assert_eq!(compatibility_form("/caf%C3%A9/100%25"), None);
        assert_eq!(compatibility_form("/plain"), None);
        for p in [
            "/x/%E2%80%A5/admin",
            "/x/%EF%BC%8E%EF%BC%8E/admin",
            "/x/%E2%80%A4%E2%80%A4/admin",
            "/x%EF%BC%8F..%EF%BC%8Fadmin",
            "/%EF%BC%8Fadmin",
            "/x%EF%BC%BCadmin",
        ] {
            assert_eq!(normalize(p), Err(PathError::CompatibilityAlias), "{p}");
        }
        assert!(
            normalize("/%EF%BD%81dmin/x").is_ok(),
            "a letter is judged, not refused"
        );
        assert!(normalize("/caf%C3%A9").is_ok());
    }

    #[test]
    fn empty_segments_are_found() {
        assert!(super::has_empty_segment("//x/admin"));
        assert!(super::has_empty_segment("/a//b"));
        assert!(!super::has_empty_segment("/a/b/"));
        assert!(!super::has_empty_segment("/"));
    }

    #[test]
    fn dot_segments_are_found_written_or_encoded() {
        for p in [
            "/admin/..",
            "/admin/../x",
            "/a/.",
            "/admin/%2e%2e",
            "/x/.%2E/y",
            "/%2e",
        ] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in [
            "/",
            "/admin",
            "/a..b/",
            "/.well-known/x",
            "/...",
            "/a/%2e%2e%2e",
        ] {
            assert!(!has_dot_segment(p), "{p}");
        }
    }

    /// The one-pass check agrees with the plain substring definition on every path of up to
    /// six characters over the characters that matter.
    #[test]
    fn is_plain_matches_its_definition() {
        fn reference(p: &str) -> bool {
            p.starts_with('/')
                && !p
                    .bytes()
                    .any(|c| matches!(c, b'%' | b'\\' | b';') || c < 0x20 || c == 0x7f)
                && !p.contains("//")
                && !p.contains("/./")
                && !p.contains("/../")
                && !p.ends_with("/.")
                && !p.ends_with("/..")
                && !p
                    .split('/')
                    .any(|seg| seg.ends_with('.') || seg.contains(':'))
        }
        let alphabet = ['/', '.', 'a', '%', ';', ':'];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            paths.extend(longer.into_iter().filter(|p| p.len() <= 6));
            paths.sort();
            paths.dedup();
        }
        for p in &paths {
            assert_eq!(is_plain(p), reference(p), "{p:?}");
        }
    }
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/public/../x", "/x"),
            ("/public/%2e%2e/x", "/x"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%7eb", "/a~b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%20b", "/a%20b"),
            ("/a%3a", "/a%3A"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/..a/b", "/..a/b"),
            ("/a/..b", "/a/..b"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a//../b", "/b"),
            ("/100%25", "/100%25"),
            ("/v1/users:search", "/v1/users:search"),
            ("/a.b/c", "/a.b/c"),
            ("/a%2541", "/a%2541"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize(input).as_deref(), Ok(*want), "{input}");
        }
        let bad: &[(&str, PathError)] = &[
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/..", PathError::EscapesRoot),
            ("/../etc/passwd", PathError::EscapesRoot),
            ("/a/../../b", PathError::EscapesRoot),
            ("/%2e%2e/b", PathError::EscapesRoot),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%zzb", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/public/..;/admin", PathError::Parameters),
            ("/public/.;x/admin", PathError::Parameters),
            ("/api;x/admin", PathError::Parameters),
            ("/a;v=1", PathError::Parameters),
            ("/public/%252e%252e/admin", PathError::DoubleEncoded),
            ("/public/%252E./admin", PathError::DoubleEncoded),
            ("/a%252fb", PathError::DoubleEncoded),
            ("/a%255cb", PathError::DoubleEncoded),
            ("/a%2500", PathError::DoubleEncoded),
            ("/a%25252e", PathError::DoubleEncoded),
            ("/%C0%AE%C0%AE/admin", PathError::NotUtf8),
            ("/admin.", PathError::WindowsAlias),
            ("/admin./x", PathError::WindowsAlias),
            ("/admin%2e", PathError::WindowsAlias),
            ("/admin%20", PathError::WindowsAlias),
            ("/admin::$DATA", PathError::WindowsAlias),
            ("/admin%3A%3A%24DATA", PathError::WindowsAlias),
            ("/ADMINI~1/x", PathError::WindowsAlias),
            ("/ADMINI%7E1", PathError::WindowsAlias),
            ("/a%FFb", PathError::NotUtf8),
        ];
        for (input, want) in bad {
            assert_eq!(normalize(input), Err(*want), "{input}");
        }
    }

    #[test]
    fn plain_paths_borrow() {
        assert!(matches!(normalize("/api/v1/items"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn prefixes_on_segment_boundaries() {
        assert!(under_prefix("/api", "/api"));
        assert!(under_prefix("/api/x", "/api"));
        assert!(!under_prefix("/apix", "/api"));
        assert!(under_prefix("/api/x", "/api/"));
        assert!(under_prefix("/anything", "/"));
        assert!(under_prefix("/API/x", "/api"), "case-insensitive");
        assert!(!under_prefix("/ap", "/api"));
    }
}
