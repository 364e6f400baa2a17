//! Header names through which applications take another method or path than the
//! request's own: the proxy strips them, forward-auth judges what they name, config may
//! keep some.

use http::HeaderName;

/// Headers that name another method.
pub static METHOD_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Headers that name another path.
pub static PATH_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Headers that make frameworks act on another method or path than the request's own
/// (Symfony, Laravel and Rails read the method overrides, IIS and Symfony the URL ones): a
/// rule matched on the request would not be the rule for what the application does. Removed
/// from proxied requests unless `proxy.keep_override_headers` names them.
pub static OVERRIDE_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];
