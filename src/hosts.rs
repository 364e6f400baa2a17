//! Host names as requests and config write them: ports, trailing dots, subdomains.

/// `example.com:8443` → `example.com`; `[::1]:8443` → `[::1]`.
/// The trailing dot of a fully-qualified name goes too: `app.example.com.` is the same host.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => host.get(..=i).unwrap_or(host),
            None => host,
        };
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Whether `host` is `domain` or one of its subdomains (both lower-case).
pub fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}
