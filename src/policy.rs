//! Route rules: which upstream serves a request, and who may reach it.

use crate::config::{Access, RouteConfig};
use crate::hosts::strip_port;
use crate::identity::Identity;
use crate::metrics::RouteMetrics;
use crate::urlpath::under_prefix;
use http::{Method, uri::Authority};
use std::sync::Arc;

/// Who may pass: the access rule of a route.
#[derive(Debug, Clone)]
pub struct Rule {
    pub access: Access,
    pub roles: Vec<String>,
    /// Only a two-factor session passes (`routes[].mfa`).
    pub mfa: bool,
}

impl Rule {
    /// Signed in, any role: the account endpoints' rule, and at the forward-auth door the
    /// rule for a request no route matches.
    pub fn signed_in() -> &'static Rule {
        static SIGNED_IN: Rule = Rule {
            access: Access::Authenticated,
            roles: Vec::new(),
            mfa: false,
        };
        &SIGNED_IN
    }

    /// Is this identity allowed?
    pub fn authorize(&self, identity: Option<&Identity>) -> Result<(), Denial> {
        match (self.access, identity) {
            (Access::Public, _) => Ok(()),
            (Access::Authenticated, None) => Err(Denial::Unauthenticated),
            (Access::Authenticated, Some(id)) => {
                let role_ok =
                    self.roles.is_empty() || self.roles.iter().any(|r| id.roles.contains(r));
                if !role_ok {
                    // A role the account holds, withheld until a second factor is shown: the
                    // caller can do something about it.
                    return if self.roles.iter().any(|r| id.withheld_roles.contains(r)) {
                        Err(Denial::MfaRequired)
                    } else {
                        Err(Denial::Forbidden)
                    };
                }
                if self.mfa && !id.two_factor {
                    return Err(Denial::MfaRequired);
                }
                Ok(())
            }
        }
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    host: Option<String>,
    pub path_prefix: String,
    pub rule: Rule,
    methods: Vec<Method>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    /// The upstream's authority as a Host header value, made once.
    pub upstream_host: Option<http::HeaderValue>,
    /// The upstream URL's path without its trailing '/', prepended to the forwarded path.
    pub upstream_base: String,
    /// Index of this route's upstream (scheme and authority) in [`RouteTable::origins`]:
    /// routes to one upstream share its connections.
    pub upstream: usize,
    pub metrics: RouteMetrics,
}

/// Why the authorize phase refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Not signed in (401).
    Unauthenticated,
    /// Signed in, not allowed (403).
    Forbidden,
    /// Signed in with one factor where two are needed (403 MFA_REQUIRED, or the step-up page).
    MfaRequired,
}

impl Route {
    /// Is this identity allowed on this route?
    pub fn authorize(&self, identity: Option<&Identity>) -> Result<(), Denial> {
        self.rule.authorize(identity)
    }

    /// The path the upstream receives for the normalized request path.
    pub fn upstream_path(&self, path: &str) -> String {
        let rest = if self.strip_prefix && self.path_prefix != "/" {
            // The prefix was matched without regard to case: so is it stripped.
            let n = self.path_prefix.len();
            let r = match path.get(..n) {
                Some(head) if head.eq_ignore_ascii_case(&self.path_prefix) => {
                    path.get(n..).unwrap_or("")
                }
                _ => path,
            };
            if r.starts_with('/') { r } else { "/" }
        } else {
            path
        };
        let mut out = String::with_capacity(self.upstream_base.len() + rest.len());
        out.push_str(&self.upstream_base);
        out.push_str(rest);
        out
    }
}

/// The `[[routes]]` table, matched by host and longest path prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    origins: Vec<http::Uri>,
}

#[derive(Debug, thiserror::Error)]
#[error("routes[{index}].upstream: {message}")]
pub struct RouteError {
    pub index: usize,
    pub message: String,
}

impl RouteTable {
    pub fn new(
        configs: &[RouteConfig],
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self, RouteError> {
        let mut routes = Vec::with_capacity(configs.len());
        let mut origins: Vec<http::Uri> = Vec::new();
        for (index, c) in configs.iter().enumerate() {
            let err = |message: String| RouteError { index, message };
            let authority: Authority = c
                .upstream
                .authority()
                .parse()
                .map_err(|e| err(format!("bad authority: {e}")))?;
            let scheme = match c.upstream.scheme() {
                "https" => http::uri::Scheme::HTTPS,
                _ => http::uri::Scheme::HTTP,
            };
            let origin = http::Uri::builder()
                .scheme(scheme)
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|e| err(format!("bad upstream: {e}")))?;
            let upstream = match origins.iter().position(|o| *o == origin) {
                Some(i) => i,
                None => {
                    origins.push(origin);
                    origins.len() - 1
                }
            };
            let name = c.name.clone().unwrap_or_else(|| c.path_prefix.clone());
            routes.push(Arc::new(Route {
                metrics: metrics.route(&name),
                name,
                host: c.host.as_ref().map(|h| h.to_ascii_lowercase()),
                // `/admin/` covers `/admin` too, which Express and Spring serve alike.
                path_prefix: match c.path_prefix.trim_end_matches('/') {
                    "" => "/".to_string(),
                    p => p.to_string(),
                },
                rule: Rule {
                    access: c.access,
                    roles: c.roles.clone(),
                    mfa: c.mfa,
                },
                methods: c.methods.clone(),
                strip_prefix: c.strip_prefix,
                preserve_host: c.preserve_host,
                upstream_host: http::HeaderValue::from_str(authority.as_str()).ok(),
                upstream_base: c.upstream.path().trim_end_matches('/').to_string(),
                upstream,
            }));
        }
        Ok(RouteTable { routes, origins })
    }

    /// The distinct upstreams (scheme and authority), indexed by [`Route::upstream`].
    pub fn origins(&self) -> &[http::Uri] {
        &self.origins
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The best route: a host-specific one before a host-less one, then the longest prefix.
    /// Routes that list methods match only those methods (HEAD wherever GET is listed).
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Arc<Route>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .filter(|r| match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
                (Some(_), None) => false,
            })
            // HEAD is GET without the body (RFC 9110, 9.3.2), and frameworks run the GET
            // handler for it: a GET rule is HEAD's rule too.
            .filter(|r| {
                r.methods.is_empty()
                    || r.methods.contains(method)
                    || (*method == Method::HEAD && r.methods.contains(&Method::GET))
            })
            .filter(|r| under_prefix(path, &r.path_prefix))
            .max_by_key(|r| (r.host.is_some(), r.path_prefix.len()))
    }

    /// Adds to `out` the rules of the routes an upstream could take this path for, besides
    /// `matched` (the path's own): with Unicode folded to what it stands for (NFKC, and `ı`
    /// as case-insensitive Java matching takes it: `/adm%C4%B1n` and `/%EF%BD%81dmin` are
    /// `/admin` to some servers; see [`crate::urlpath::compatibility_form`]), and with a
    /// segment's suffix dropped as frameworks' suffix matching does (Rails routes `/admin` as
    /// `/admin.json` too, Spring MVC before 5.3 as `/admin.anything`). Allocates nothing for a
    /// path with neither.
    pub fn add_alias_rules<'a>(
        &'a self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        matched: Option<&Arc<Route>>,
        out: &mut Vec<&'a Rule>,
    ) {
        let mut add = |alias: &str| {
            if let Some(r) = self.find(host, alias, method) {
                if !matched.is_some_and(|m| Arc::ptr_eq(m, r)) {
                    out.push(&r.rule);
                }
            }
        };
        let folded = crate::urlpath::compatibility_form(path);
        if let Some(f) = &folded {
            add(f);
        }
        for candidate in std::iter::once(path).chain(folded.as_deref()) {
            let mut segment_start = 0;
            let mut dotted = false;
            for (i, b) in candidate.bytes().enumerate() {
                match b {
                    b'/' => (segment_start, dotted) = (i + 1, false),
                    // The first dot of a segment with a name before it (`.well-known` has none).
                    b'.' if !dotted && i > segment_start => {
                        dotted = true;
                        if let Some(alias) = candidate.get(..i) {
                            add(alias);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table(toml: &str) -> RouteTable {
        let c = Config::from_toml(toml, &crate::config::MapSource::default()).unwrap();
        RouteTable::new(&c.routes, &crate::metrics::Metrics::new()).unwrap()
    }

    const ROUTES: &str = r#"
        [[routes]]
        name = "root"
        upstream = "http://127.0.0.1:1"
        access = "public"
        [[routes]]
        name = "api"
        path_prefix = "/api"
        upstream = "http://127.0.0.1:2/base/"
        [[routes]]
        name = "api-host"
        host = "App.Example.com"
        path_prefix = "/api"
        upstream = "http://127.0.0.1:3"
        [[routes]]
        name = "admin-post"
        path_prefix = "/api/admin"
        methods = ["post"]
        roles = ["admin"]
        upstream = "http://127.0.0.1:4"
        strip_prefix = true
    "#;

    #[test]
    fn longest_prefix_and_host_win() {
        let t = table(ROUTES);
        let get = Method::GET;
        assert_eq!(t.find(None, "/x", &get).unwrap().name, "root");
        assert_eq!(t.find(None, "/api/x", &get).unwrap().name, "api");
        assert_eq!(t.find(None, "/apix", &get).unwrap().name, "root");
        assert_eq!(
            t.find(Some("app.example.com:443"), "/api/x", &get)
                .unwrap()
                .name,
            "api-host"
        );
        assert_eq!(t.find(Some("other"), "/api/x", &get).unwrap().name, "api");
        assert_eq!(t.find(None, "/api/admin/x", &get).unwrap().name, "api");
        assert_eq!(
            t.find(None, "/api/admin/x", &Method::POST).unwrap().name,
            "admin-post"
        );
    }

    #[test]
    fn a_format_suffix_is_judged_by_the_route_it_names_too() {
        let t = table(ROUTES);
        let rules = |path: &str, method: &Method| {
            let matched = t.find(None, path, method);
            let mut out = Vec::new();
            t.add_alias_rules(None, path, method, matched, &mut out);
            (matched.map(|r| r.name.clone()), out.len())
        };
        // `/api.json` is the root route's, and Rails would serve it as `/api`.
        assert_eq!(rules("/api.json", &Method::GET), (Some("root".into()), 1));
        assert_eq!(
            rules("/api/admin.xml", &Method::POST),
            (Some("api".into()), 1)
        );
        assert_eq!(
            rules("/api/admin.a.b", &Method::POST),
            (Some("api".into()), 1)
        );
        // Same route either way, a dot with no name before it, no dot: nothing more.
        for path in [
            "/style.css",
            "/api/x.json",
            "/.well-known/x",
            "/api/.env",
            "/api",
        ] {
            assert_eq!(rules(path, &Method::POST).1, 0, "{path}");
        }
        // GET `/api/admin.json` meets no POST-only rule.
        assert_eq!(rules("/api/admin.json", &Method::GET).1, 0);
        // Unicode that case-insensitive servers fold to ASCII: `ı`, `İ`, `ſ`, the Kelvin sign.
        assert_eq!(
            rules("/api/adm%C4%B1n/x", &Method::POST),
            (Some("api".into()), 1)
        );
        assert_eq!(
            rules("/api/adm%c4%b0n", &Method::POST),
            (Some("api".into()), 1)
        );
        assert_eq!(
            rules("/api/adm%C4%B1n.json", &Method::POST),
            (Some("api".into()), 1)
        );
        assert_eq!(rules("/%C5%BFtyle", &Method::POST).1, 0);
    }

    #[test]
    fn upstream_paths() {
        let t = table(ROUTES);
        let api = t.find(None, "/api/x", &Method::GET).unwrap();
        assert_eq!(api.upstream_path("/api/x"), "/base/api/x");
        let admin = t.find(None, "/api/admin/x", &Method::POST).unwrap();
        assert_eq!(admin.upstream_path("/api/admin/x"), "/x");
        assert_eq!(admin.upstream_path("/api/admin"), "/");
        assert_eq!(
            admin.upstream_path("/API/Admin/x"),
            "/x",
            "stripped as matched"
        );
    }

    #[test]
    fn a_prefix_with_a_trailing_slash_covers_the_bare_path() {
        let t = table(
            r#"
            [[routes]]
            path_prefix = "/"
            upstream = "http://a:1"
            access = "public"
            [[routes]]
            path_prefix = "/admin/"
            upstream = "http://a:1"
            roles = ["admin"]
            "#,
        );
        for p in ["/admin", "/admin/", "/admin/x"] {
            assert_eq!(
                t.find(None, p, &Method::GET).unwrap().path_prefix,
                "/admin",
                "{p}"
            );
        }
        assert_eq!(
            t.find(None, "/adminx", &Method::GET).unwrap().path_prefix,
            "/"
        );
    }

    #[test]
    fn authorize_rules() {
        let t = table(ROUTES);
        let with = |roles: &[&str], amr: &[&str]| {
            Identity::new(
                "u".into(),
                "e@x".into(),
                None,
                roles.iter().map(|r| r.to_string()).collect(),
                "s".into(),
                amr.iter().map(|r| r.to_string()).collect(),
                &["admin".to_string()],
            )
        };
        let id = |roles: &[&str]| with(roles, &["pwd", "otp", "mfa"]);
        let root = t.find(None, "/", &Method::GET).unwrap();
        assert_eq!(root.authorize(None), Ok(()));
        let api = t.find(None, "/api", &Method::GET).unwrap();
        assert_eq!(api.authorize(None), Err(Denial::Unauthenticated));
        assert_eq!(api.authorize(Some(&id(&["customer"]))), Ok(()));
        let admin = t.find(None, "/api/admin", &Method::POST).unwrap();
        assert_eq!(
            admin.authorize(Some(&id(&["customer"]))),
            Err(Denial::Forbidden)
        );
        assert_eq!(admin.authorize(Some(&id(&["customer", "admin"]))), Ok(()));
        // A role that needs a second factor, in a one-factor session: withheld, and the
        // refusal says what would help.
        let one_factor_admin = with(&["customer", "admin"], &["pwd"]);
        assert_eq!(one_factor_admin.roles, vec!["customer".to_string()]);
        assert_eq!(
            admin.authorize(Some(&one_factor_admin)),
            Err(Denial::MfaRequired)
        );
        assert_eq!(api.authorize(Some(&one_factor_admin)), Ok(()));
        // A rule that needs two factors.
        let vault = Rule {
            access: Access::Authenticated,
            roles: Vec::new(),
            mfa: true,
        };
        assert_eq!(
            vault.authorize(Some(&with(&["customer"], &["pwd"]))),
            Err(Denial::MfaRequired)
        );
        assert_eq!(
            vault.authorize(Some(&with(&["customer"], &["otp"]))),
            Err(Denial::MfaRequired)
        );
        assert_eq!(vault.authorize(Some(&id(&["customer"]))), Ok(()));
        assert_eq!(vault.authorize(None), Err(Denial::Unauthenticated));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.example:8443"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
        assert_eq!(strip_port("a.example.:443"), "a.example");
    }
}
