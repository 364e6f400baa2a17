//! What makes an application act on another method or path than the request's own: the
//! override headers frameworks obey (Symfony, Laravel, Rails, IIS, Express's
//! method-override) and the `_method` parameter of the query string. A rule matched on the
//! request must also hold for what they name, at every door; the proxy also removes the
//! headers unless `proxy.keep_override_headers` keeps them.

use super::App;
use super::error::ApiError;
pub use crate::override_names::{METHOD_HEADERS, PATH_HEADERS};
use crate::policy::Rule;
use http::{HeaderMap, HeaderName, Method};

/// The method a framework takes from an override value: upper-cased, as they do.
fn method_of(value: &str) -> Result<Method, ApiError> {
    Method::from_bytes(value.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| ApiError::bad_request("A method override does not name an HTTP method."))
}

/// What the application could act on instead of the request's own method and path.
#[derive(Debug, Default)]
pub struct Overrides {
    pub methods: Vec<Method>,
    /// Paths, normalized.
    pub paths: Vec<String>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.paths.is_empty()
    }
}

/// The overrides a request carries: the header names given (those that reach the
/// application) and `_method` in the query string. Allocates nothing for the common request,
/// which has none.
pub fn of<'a>(
    headers: &HeaderMap,
    method_headers: impl Iterator<Item = &'a HeaderName>,
    path_headers: impl Iterator<Item = &'a HeaderName>,
    query: Option<&str>,
) -> Result<Overrides, ApiError> {
    let mut out = Overrides::default();
    for name in method_headers {
        for v in headers.get_all(name) {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request("A method override is not text."))?;
            out.methods.push(method_of(v)?);
        }
    }
    for name in path_headers {
        for v in headers.get_all(name) {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request("A path override is not text."))?;
            let path = v.split(['?', '#']).next().unwrap_or("/");
            // IIS and Symfony take a path (some an absolute URL): its path is what counts.
            let path = match path.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| rest.get(i..).unwrap_or("/")),
                None => path,
            };
            let norm = crate::urlpath::normalize(path)
                .map_err(|e| ApiError::bad_request(format!("A path override: {e}")))?;
            out.paths.push(norm.into_owned());
        }
    }
    // Only a query that could name one is parsed: it spells `method` out, or escapes some of
    // its letters (`_%6Dethod`), which needs a `%`.
    let could = |q: &&str| {
        q.contains('%')
            || q.as_bytes()
                .windows(6)
                .any(|w| w.eq_ignore_ascii_case(b"method"))
    };
    if let Some(q) = query.filter(could) {
        // `;` separates pairs too for some parsers (Rack 2, Python before 3.9.2, Go before 1.17).
        for part in q.split(';') {
            for (k, v) in url::form_urlencoded::parse(part.as_bytes()) {
                if names_method(&k) {
                    out.methods.push(method_of(&v)?);
                }
            }
        }
    }
    Ok(out)
}

/// Whether a decoded query key is `_method` as some framework reads it. PHP reads a name as
/// a C string (up to a NUL), drops leading spaces, takes `name[...]` as an array `name`, and
/// turns `.`, ` ` and a lone `[` into `_` (so `.method` is Laravel's and Symfony's
/// `_method`); any case, since the check is only ever stricter for it.
fn names_method(key: &str) -> bool {
    let key = key.split('\0').next().unwrap_or("");
    let key = key.trim_start_matches(' ');
    let key = match key.get(1..).and_then(|rest| rest.find('[')) {
        // `i` counts from the second byte: the `[` is at `i + 1`.
        Some(i) if key.get(i + 2..).is_some_and(|r| r.contains(']')) => {
            key.get(..=i).unwrap_or(key)
        }
        _ => key,
    };
    let mut chars = key.chars();
    matches!(chars.next(), Some('_' | '.' | ' ' | '['))
        && chars.as_str().eq_ignore_ascii_case("method")
}

/// Whether `name` stands for one of `names` to a CGI or FastCGI application, which reads
/// `X_Auth_User_Id` as `X-Auth-User-Id` (both become `HTTP_X_AUTH_USER_ID`).
pub fn is_lookalike<'a>(
    name: &HeaderName,
    mut names: impl Iterator<Item = &'a HeaderName>,
) -> bool {
    let n = name.as_str();
    n.contains('_')
        && names.any(|want| {
            want.as_str().len() == n.len()
                && want
                    .as_str()
                    .bytes()
                    .zip(n.bytes())
                    .all(|(w, c)| w == c || (w == b'-' && c == b'_'))
        })
}

/// The rule a request for `method` on `host` and `path` meets at this gateway.
pub fn rule_for<'a>(app: &'a App, host: Option<&str>, path: &str, method: &Method) -> &'a Rule {
    app.routes
        .find(host, path, method)
        .map_or(Rule::signed_in(), |r| &r.rule)
}

/// The rules beside the request's own (`matched`) that must admit the caller too: those of
/// what the overrides name instead of its method and path, and of what an upstream could
/// take its path for (a folded Unicode form, a format suffix: see
/// [`crate::policy::RouteTable::add_alias_rules`]). Both doors ask this. Allocates nothing
/// for a request with neither.
pub fn also_rules<'a>(
    app: &'a App,
    overrides: &Overrides,
    host: Option<&str>,
    path: &str,
    method: &Method,
    matched: Option<&std::sync::Arc<crate::policy::Route>>,
) -> Vec<&'a Rule> {
    let mut out = rules(app, overrides, host, path, method);
    app.routes
        .add_alias_rules(host, path, method, matched, &mut out);
    out
}

/// The rules of what the overrides name instead of the request's own method and path.
fn rules<'a>(
    app: &'a App,
    overrides: &Overrides,
    host: Option<&str>,
    path: &str,
    method: &Method,
) -> Vec<&'a Rule> {
    let mut asked: Vec<(&str, &Method)> = Vec::new();
    for m in &overrides.methods {
        asked.push((path, m));
    }
    for p in &overrides.paths {
        asked.push((p.as_str(), method));
        for m in &overrides.methods {
            asked.push((p.as_str(), m));
        }
    }
    asked
        .into_iter()
        .map(|(p, m)| rule_for(app, host, p, m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalikes_are_found_by_their_dashes() {
        let names = [HeaderName::from_static("x-auth-user-id")];
        let h = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        assert!(is_lookalike(&h("x_auth_user_id"), names.iter()));
        assert!(is_lookalike(&h("X_Auth-User_Id"), names.iter()));
        assert!(
            !is_lookalike(&h("x-auth-user-id"), names.iter()),
            "the name itself"
        );
        assert!(!is_lookalike(&h("x_auth_user_idx"), names.iter()));
        assert!(!is_lookalike(&h("x_other_user_id"), names.iter()));
    }

    #[test]
    fn overrides_are_read_from_headers_and_the_query() {
        let mut headers = HeaderMap::new();
        headers.insert("x-http-method-override", "delete".parse().unwrap());
        headers.insert("x-rewrite-url", "/admin/../api/admin?x=1".parse().unwrap());
        let o = of(
            &headers,
            METHOD_HEADERS.iter(),
            PATH_HEADERS.iter(),
            Some("a=1&_method=put"),
        )
        .unwrap();
        assert_eq!(o.methods, vec![Method::DELETE, Method::PUT]);
        assert_eq!(o.paths, vec!["/api/admin".to_string()]);
        let none = of(
            &HeaderMap::new(),
            METHOD_HEADERS.iter(),
            PATH_HEADERS.iter(),
            Some("a=1"),
        )
        .unwrap();
        assert!(none.is_empty());
        let encoded = of(
            &HeaderMap::new(),
            [].iter(),
            [].iter(),
            Some("%5Fmethod=DELETE"),
        )
        .unwrap();
        assert_eq!(encoded.methods, vec![Method::DELETE]);
        // Every spelling some framework reads as `_method`.
        for q in [
            "_%6Dethod=DELETE",
            "_%6d%65thod=DELETE",
            ".method=DELETE",
            "%2Emethod=DELETE",
            "+_method=DELETE",
            "[method=DELETE",
            "x=1&_METHOD=delete",
            // PHP reads a name up to a NUL, and `name[...]` as the array `name`.
            "_method%00=DELETE",
            "_method%00x=DELETE",
            "_method[]=DELETE",
            "_method[a]=DELETE",
            // `;` separates pairs for some parsers.
            "x=1;_method=DELETE",
        ] {
            let o = of(&HeaderMap::new(), [].iter(), [].iter(), Some(q)).unwrap();
            assert_eq!(o.methods, vec![Method::DELETE], "{q}");
        }
        for q in [
            "method=DELETE",
            "x_method=DELETE",
            "_methods=DELETE",
            "a=%20",
            "%00_method=DELETE",
            "_method[=DELETE",
            "_m[ethod]=DELETE",
        ] {
            let o = of(&HeaderMap::new(), [].iter(), [].iter(), Some(q)).unwrap();
            assert!(o.is_empty(), "{q}");
        }
    }
}
