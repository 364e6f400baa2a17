//! The forward-auth doors asked directly, as each front proxy asks them: which headers each
//! believes, from whom, and what happens when a client's own headers ride along. (Real nginx
//! and Caddy in front: `frontends.rs`.)

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use http::HeaderMap;
use serde_json::json;

const PW: &str = "correct horse battery staple";

fn routes(up: &Upstream) -> String {
    format!(
        r#"
        [[routes]]
        path_prefix = "/"
        upstream = "{u}"
        access = "public"
        [[routes]]
        path_prefix = "/app"
        upstream = "{u}"
        [[routes]]
        path_prefix = "/admin"
        upstream = "{u}"
        roles = ["admin"]
        [[routes]]
        path_prefix = "/api/admin"
        methods = ["DELETE"]
        upstream = "{u}"
        roles = ["admin"]
        [[routes]]
        path_prefix = "/reports"
        methods = ["GET"]
        upstream = "{u}"
        roles = ["admin"]
        "#,
        u = up.url()
    )
}

struct World {
    gw: Gateway,
    token: String,
    _up: Upstream,
    _smtp: Smtp,
}

/// A gateway (trusting loopback as its front proxy, or not) and a signed-in customer.
async fn world(trusted: bool) -> World {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let server = if trusted {
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    } else {
        ""
    };
    let gw = Gateway::start_with(&format!("{server}{}", routes(&up)), Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "fa@example.com", "password": PW}),
    )
    .await;
    let token = login(&gw, "fa@example.com", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    World {
        gw,
        token,
        _up: up,
        _smtp: smtp,
    }
}

impl World {
    /// Asks `door` with `headers`, signed in as the customer or not; status and error code.
    async fn ask(&self, door: &str, signed_in: bool, headers: &[(&str, &str)]) -> (u16, String) {
        let mut r = self.gw.client.get(self.gw.url(door));
        if signed_in {
            r = r.bearer_auth(&self.token);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        (status, v["code"].as_str().unwrap_or("").to_string())
    }
}

const DOORS: [&str; 3] = [
    "/auth/validate",
    "/auth/validate/auth-request",
    "/auth/validate/forward-auth",
];

/// From a peer that is not a trusted proxy, no description is believed: the request is
/// judged as itself (a signed-in caller or not), whatever path it names, even where `/` is
/// a public route.
#[tokio::test]
async fn a_client_that_is_not_a_trusted_proxy_cannot_describe_its_request() {
    let w = world(false).await;
    for door in DOORS {
        for spoof in [
            [
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-method", "GET"),
            ],
            [
                ("x-original-uri", "/public/x"),
                ("x-original-method", "GET"),
            ],
            [
                ("x-original-url", "http://127.0.0.1/public/x"),
                ("x-original-method", "GET"),
            ],
        ] {
            assert_eq!(
                w.ask(door, false, &spoof).await.0,
                401,
                "{door} believed {spoof:?} from an untrusted peer"
            );
        }
    }
    // Signed in, it is only ever asked "is this a signed-in caller" (no role rule is met by
    // naming another path).
    assert_eq!(
        w.ask(
            "/auth/validate",
            true,
            &[
                ("x-forwarded-uri", "/admin/x"),
                ("x-forwarded-method", "GET")
            ]
        )
        .await
        .0,
        200
    );
    w.gw.stop().await;
}

/// At `/auth/validate`, a request that carries both families must have them agree on
/// everything both state; otherwise it is refused, never decided by one of them.
#[tokio::test]
async fn two_families_that_disagree_are_refused() {
    let w = world(true).await;
    for (what, headers) in [
        (
            "uri",
            vec![
                ("x-original-uri", "/admin/x"),
                ("x-forwarded-uri", "/public/x"),
            ],
        ),
        (
            "method",
            vec![
                ("x-original-uri", "/api/admin/x"),
                ("x-original-method", "DELETE"),
                ("x-forwarded-method", "GET"),
            ],
        ),
        (
            "url and uri",
            vec![
                ("x-original-url", "http://127.0.0.1/admin/x"),
                ("x-original-uri", "/public/x"),
            ],
        ),
        (
            "host",
            vec![
                ("x-original-url", "http://app.test/admin/x"),
                ("x-forwarded-host", "other.test"),
            ],
        ),
        (
            "scheme",
            vec![
                ("x-original-url", "https://app.test/admin/x"),
                ("x-forwarded-proto", "http"),
            ],
        ),
    ] {
        let (status, code) = w.ask("/auth/validate", true, &headers).await;
        assert_eq!((status, code.as_str()), (400, "INVALID_REQUEST"), "{what}");
    }
    // Agreeing families are fine (the old nginx snippet sends X-Original-URI with
    // X-Forwarded-Host and -Proto).
    let (status, _) = w
        .ask(
            "/auth/validate",
            true,
            &[
                ("x-original-uri", "/app/x"),
                ("x-forwarded-uri", "/app/x"),
                ("x-forwarded-host", "app.test"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    w.gw.stop().await;
}

/// Each per-family door believes its own family only: the other family's headers, which
/// a front proxy passes through from the client, change nothing.
#[tokio::test]
async fn each_door_believes_only_its_own_family() {
    let w = world(true).await;
    // nginx / ingress-nginx: the client adds X-Forwarded-*.
    let nginx = [
        ("x-original-url", "http://127.0.0.1/admin/x"),
        ("x-original-method", "GET"),
    ];
    let mut spoofed = nginx.to_vec();
    spoofed.extend([
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "other.test"),
    ]);
    assert_eq!(
        w.ask("/auth/validate/auth-request", true, &spoofed).await.0,
        403
    );
    assert_eq!(
        w.ask("/auth/validate/auth-request", false, &spoofed)
            .await
            .0,
        401
    );
    // nginx's plain `$request_uri` form works too.
    assert_eq!(
        w.ask(
            "/auth/validate/auth-request",
            true,
            &[("x-original-uri", "/app/x"), ("x-original-method", "GET")]
        )
        .await
        .0,
        200
    );
    // Traefik / Caddy: the client adds X-Original-*.
    let forward = [
        ("x-forwarded-uri", "/admin/x"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
    ];
    let mut spoofed = forward.to_vec();
    spoofed.extend([
        ("x-original-uri", "/public/x"),
        ("x-original-url", "http://127.0.0.1/public/x"),
        ("x-original-method", "GET"),
    ]);
    assert_eq!(
        w.ask("/auth/validate/forward-auth", true, &spoofed).await.0,
        403
    );
    assert_eq!(
        w.ask("/auth/validate/forward-auth", false, &spoofed)
            .await
            .0,
        401
    );
    // A per-family door asked without its family is a misconfigured proxy: told so.
    for (door, headers) in [
        ("/auth/validate/auth-request", forward.to_vec()),
        ("/auth/validate/forward-auth", nginx.to_vec()),
    ] {
        let (status, code) = w.ask(door, true, &headers).await;
        assert_eq!((status, code.as_str()), (400, "INVALID_REQUEST"), "{door}");
    }
    w.gw.stop().await;
}

/// The original method is matched as the application will read it: lower-case spellings
/// of a standard method are refused, and a method override must pass the rule too.
#[tokio::test]
async fn method_spellings_and_overrides_cannot_pass_a_method_rule() {
    let w = world(true).await;
    for m in ["delete", "Delete", "dELETE"] {
        let (status, _) = w
            .ask(
                "/auth/validate/forward-auth",
                true,
                &[
                    ("x-forwarded-uri", "/api/admin/x"),
                    ("x-forwarded-method", m),
                ],
            )
            .await;
        assert_eq!(status, 400, "{m}");
    }
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let (status, _) = w
            .ask(
                "/auth/validate/forward-auth",
                true,
                &[
                    ("x-forwarded-uri", "/api/admin/x"),
                    ("x-forwarded-method", "POST"),
                    (name, "DELETE"),
                ],
            )
            .await;
        assert_eq!(status, 403, "{name}");
    }
    // Userinfo in the described host is refused rather than parsed two ways.
    let (status, _) = w
        .ask(
            "/auth/validate/auth-request",
            true,
            &[
                ("x-original-url", "http://user@127.0.0.1/app/x"),
                ("x-original-method", "GET"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    w.gw.stop().await;
}

/// Rails routes `/admin` as `/admin.json` too, Spring MVC (before 5.3) as `/admin.anything`:
/// a described path whose segment is `admin.<suffix>` meets the `/admin` rule as well, though
/// it falls under the public `/` route. So does Unicode that case-insensitive servers (Java's
/// equalsIgnoreCase, Spring) fold to ASCII: `ı`, `İ`, the Kelvin sign. A static file's suffix
/// changes nothing.
#[tokio::test]
async fn a_format_suffix_or_folded_case_cannot_walk_around_a_prefix_rule() {
    let w = world(true).await;
    let door = "/auth/validate/forward-auth";
    for uri in [
        "/admin.json",
        "/admin%2ejson",
        "/admin.json/x",
        "/admin.a.b",
        "/adm%C4%B1n/x",
        "/adm%C4%B0n",
        "/adm%C4%B1n.json",
        "/%EF%BD%81dmin",
    ] {
        let described = [("x-forwarded-uri", uri), ("x-forwarded-method", "GET")];
        assert_eq!(w.ask(door, false, &described).await.0, 401, "{uri}");
        assert_eq!(w.ask(door, true, &described).await.0, 403, "{uri}");
    }
    let described = [
        ("x-forwarded-uri", "/api/admin.xml"),
        ("x-forwarded-method", "DELETE"),
    ];
    assert_eq!(w.ask(door, true, &described).await.0, 403);
    for uri in [
        "/style.css",
        "/.well-known/x",
        "/administrator.json",
        "/app.json",
    ] {
        let described = [("x-forwarded-uri", uri), ("x-forwarded-method", "GET")];
        let expected = if uri == "/app.json" { 401 } else { 200 };
        assert_eq!(w.ask(door, false, &described).await.0, expected, "{uri}");
    }
    w.gw.stop().await;
}

/// A front proxy forwards the path as the client wrote it: `/admin/..`, judged as `/`, would
/// reach an application that does not resolve `..` as `/admin`, and `//x/admin`, judged as
/// `/x/admin`, one that parses it with a URL parser as `/admin`. A described path with a
/// `.`, `..` (written or encoded) or empty segment is refused at every door.
#[tokio::test]
async fn a_described_path_with_dot_or_empty_segments_is_refused() {
    let w = world(true).await;
    for uri in [
        "/admin/..",
        "/admin/%2e%2e",
        "/app/./x/..",
        "/admin/.%2E/",
        "/x/.",
    ] {
        let (status, _) = w
            .ask(
                "/auth/validate/forward-auth",
                false,
                &[("x-forwarded-uri", uri), ("x-forwarded-method", "GET")],
            )
            .await;
        assert_eq!(status, 400, "forward-auth {uri}");
        let (status, _) = w
            .ask(
                "/auth/validate/auth-request",
                false,
                &[
                    ("x-original-url", &format!("http://127.0.0.1{uri}")),
                    ("x-original-method", "GET"),
                ],
            )
            .await;
        assert_eq!(status, 400, "auth-request {uri}");
    }
    w.gw.stop().await;
}

/// A description is read one way and judged whole. A fragment in the described URL (a `#`
/// in the Host made the rest a fragment and the path `/`), a port that is not a number, a
/// host with a space: refused. An override header or a `_method` query parameter is judged
/// as the method it claims; a route that lists GET covers HEAD, which every framework
/// answers with its GET handler.
#[tokio::test]
async fn a_description_is_read_one_way_and_judged_whole() {
    let w = world(true).await;
    let nginx = |url: &'static str, method: &'static str| {
        vec![("x-original-url", url), ("x-original-method", method)]
    };
    for url in [
        "http://127.0.0.1#@evil.example/admin/x",
        "http://127.0.0.1/public#/../admin/x",
        "http://127.0.0.1:80x/admin/x",
        "http://127.0.0.1:/admin/x",
        "http://127.0.0.1:99999/admin/x",
    ] {
        let (status, code) = w
            .ask("/auth/validate/auth-request", true, &nginx(url, "GET"))
            .await;
        assert_eq!((status, code.as_str()), (400, "INVALID_REQUEST"), "{url}");
    }
    for host in ["127.0.0.1#", "127.0.0.1:8o", "a b"] {
        let (status, _) = w
            .ask(
                "/auth/validate/forward-auth",
                true,
                &[
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-host", host),
                    ("x-forwarded-uri", "/app/x"),
                ],
            )
            .await;
        assert_eq!(status, 400, "{host}");
    }
    // The control: a well-formed description of a page the customer may see.
    let (status, _) = w
        .ask(
            "/auth/validate/auth-request",
            true,
            &nginx("http://127.0.0.1:8443/app/x", "GET"),
        )
        .await;
    assert_eq!(status, 200);

    // `_method=DELETE` on a POST is the DELETE that only admins may send.
    for (door, headers) in [
        (
            "/auth/validate/auth-request",
            nginx("http://127.0.0.1/api/admin/x?_method=DELETE", "POST"),
        ),
        (
            "/auth/validate/forward-auth",
            vec![
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/api/admin/x?a=1&_method=delete"),
            ],
        ),
    ] {
        let (status, _) = w.ask(door, true, &headers).await;
        assert_eq!(status, 403, "{door} {headers:?}");
    }
    let (status, _) = w
        .ask(
            "/auth/validate/auth-request",
            true,
            &nginx("http://127.0.0.1/api/admin/x?_method=PATCH", "POST"),
        )
        .await;
    assert_eq!(status, 200, "a method no rule names passes as before");

    // HEAD of a GET-only admin route is judged by that route, not by the public `/`.
    for method in ["GET", "HEAD"] {
        let (status, _) = w
            .ask(
                "/auth/validate/forward-auth",
                true,
                &[
                    ("x-forwarded-method", method),
                    ("x-forwarded-uri", "/reports/q3"),
                ],
            )
            .await;
        assert_eq!(status, 403, "{method}");
    }
    w.gw.stop().await;
}

/// nginx drops header names with underscores, Apache's CGI and PHP-FPM read `X_Auth_User_Id`
/// as `X-Auth-User-Id`, and no front proxy's rules remove what they do not see: a look-alike
/// of an identity or override header is refused at every door rather than waved through.
#[tokio::test]
async fn underscore_look_alikes_of_identity_and_override_headers_are_refused() {
    let w = world(true).await;
    for name in [
        "x_auth_user_id",
        "X_Auth_User_Roles",
        "x-auth-user_email",
        "x_http_method_override",
        "x_original_url",
        "x_rewrite_url",
    ] {
        for door in DOORS {
            let (status, code) = w
                .ask(
                    door,
                    true,
                    &[
                        ("x-forwarded-method", "GET"),
                        ("x-forwarded-uri", "/app/x"),
                        ("x-original-method", "GET"),
                        ("x-original-uri", "/app/x"),
                        (name, "1"),
                    ],
                )
                .await;
            assert_eq!(
                (status, code.as_str()),
                (400, "INVALID_REQUEST"),
                "{door} {name}"
            );
        }
    }
    // Underscores elsewhere are the application's business.
    let (status, _) = w
        .ask(
            "/auth/validate/forward-auth",
            true,
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/app/x"),
                ("x_app_trace", "1"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    w.gw.stop().await;
}

/// Traefik's forwardAuth, as its `forward_auth.go` (`writeHeader`) builds the request to the
/// auth server: every client header copied, then X-Forwarded-Method/-Proto/-Host/-Uri taken
/// from the client's own headers when `trustForwardHeader` is true, else from the request
/// Traefik received.
fn traefik_forward_request(
    client: &[(&str, &str)],
    method: &str,
    host: &str,
    request_uri: &str,
    trust_forward_header: bool,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in client {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let mut set = |name: &'static str, from_request: &str| {
        let trusted = h.get(name).cloned().filter(|_| trust_forward_header);
        let value = trusted.unwrap_or_else(|| from_request.parse().unwrap());
        h.insert(name, value);
    };
    set("x-forwarded-method", method);
    set("x-forwarded-proto", "https");
    set("x-forwarded-host", host);
    set("x-forwarded-uri", request_uri);
    h
}

#[tokio::test]
async fn traefik_forward_auth_contract_with_and_without_trust_forward_header() {
    let w = world(true).await;
    // An anonymous client asks Traefik for /app/page, naming a public path of its own.
    let client = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
        ("x-original-uri", "/public/x"),
    ];
    let ask = |headers: HeaderMap| {
        let mut r = w.gw.client.get(w.gw.url("/auth/validate/forward-auth"));
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // README's setting: Traefik writes what it received, and the client's claim is gone.
    let sent = traefik_forward_request(&client, "GET", "127.0.0.1", "/app/page", false);
    assert_eq!(sent["x-forwarded-uri"], "/app/page");
    assert_eq!(ask(sent).await, 401);
    // trustForwardHeader: true hands the client's own values on, indistinguishable from
    // Traefik's: the reason README's snippet says false.
    let sent = traefik_forward_request(&client, "GET", "127.0.0.1", "/app/page", true);
    assert_eq!(sent["x-forwarded-uri"], "/public/x");
    assert_eq!(
        ask(sent).await,
        200,
        "what trustForwardHeader: true would allow"
    );
    w.gw.stop().await;
}
