//! Attacks on the built-in proxy door: smuggling a protocol past the rules (h2c, CONNECT,
//! another switch), methods and paths spelt so that the upstream reads something other than
//! what was matched, headers that make a framework act on another method or path, and an
//! upstream that would plant the gateway's own cookies or receive its token.

use crate::external::{free_port, require_python_module, wait_port};
use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PW: &str = "correct horse battery staple";

/// An ASGI app under hypercorn (an HTTP/1.1 server that accepts `Upgrade: h2c`), answering
/// every request with its method, path, HTTP version and headers.
pub struct Hypercorn {
    pub port: u16,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Hypercorn {
    pub async fn start(python: &std::path::Path) -> Hypercorn {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("echo_app.py"),
            r#"
import json
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({
        "path": scope["path"],
        "method": scope["method"],
        "http_version": scope["http_version"],
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"#,
        )
        .unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(python)
            .args(["-m", "hypercorn", "echo_app:app", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_port(port, "hypercorn").await;
        Hypercorn {
            port,
            _child: child,
            _dir: dir,
        }
    }
}

const H2C_SETTINGS: &str = "AAMAAABkAARAAAAAAAIAAAAA";

/// The first response head on a raw connection, then whatever follows within a moment.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    // The body, if any, follows quickly.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

/// `GET /public/x` asking to switch to h2c (the request smuggling of h2c upgrades: with the
/// 101, the client speaks raw HTTP/2 to the upstream, any path, no rule) is forwarded as a
/// plain request, in every spelling, and never answered 101.
#[tokio::test]
async fn h2c_upgrade_never_reaches_an_h2c_capable_upstream() {
    let Some(python) = require_python_module(
        "hypercorn",
        "h2c_upgrade_never_reaches_an_h2c_capable_upstream",
    ) else {
        return;
    };
    let hc = Hypercorn::start(&python).await;
    let upstream = format!("127.0.0.1:{}", hc.port);
    let smuggle = |extra: &str| format!("GET /public/x HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n");
    // The control: hypercorn itself switches.
    let direct = exchange(
        upstream.parse().unwrap(),
        &smuggle(&format!(
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        )),
    )
    .await;
    assert!(
        direct.starts_with("HTTP/1.1 101"),
        "hypercorn is h2c-capable: {direct}"
    );

    let gw = Gateway::start(&format!(
        "[server]\ntls = false\n[[routes]]\npath_prefix = \"/public\"\nupstream = \"http://{upstream}\"\naccess = \"public\"\n"
    ))
    .await;
    for extra in [
        format!(
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
        format!(
            "Connection: HTTP2-Settings, upgrade\r\nUpgrade: H2C\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
        format!(
            "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
        format!(
            "Connection: Upgrade\r\nUpgrade: h2c, websocket\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
        format!(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
        "Connection: Upgrade\r\nUpgrade: h2c\r\n".to_string(),
    ] {
        let answer = exchange(gw.addr, &smuggle(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{extra:?} => {answer}");
        let echo = parse_raw(answer.as_bytes()).json();
        assert_eq!(echo["http_version"], "1.1");
        for h in ["upgrade", "http2-settings"] {
            assert!(
                echo["headers"][h].is_null(),
                "{h} reached the upstream for {extra:?}: {echo}"
            );
        }
    }
    gw.stop().await;
}

/// Behind README's nginx snippet, as printed, the same smuggling reaches the application
/// (hypercorn, h2c-capable) as a plain HTTP/1.1 request: nginx forwards no `Upgrade` that a
/// location does not set, and the snippet sets none.
#[tokio::test]
async fn h2c_upgrade_through_readmes_nginx_never_reaches_the_app() {
    const NAME: &str = "h2c_upgrade_through_readmes_nginx_never_reaches_the_app";
    let Some(nginx) = crate::external::require("nginx", NAME) else {
        return;
    };
    let Some(python) = require_python_module("hypercorn", NAME) else {
        return;
    };
    let hc = Hypercorn::start(&python).await;
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [[routes]]\npath_prefix = \"/public\"\nupstream = \"http://127.0.0.1:{}\"\naccess = \"public\"\n",
        hc.port
    ))
    .await;
    let front = crate::frontends::Front::nginx_to(&nginx, &gw, hc.port).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", front.port).parse().unwrap();
    for extra in [
        format!(
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
        format!(
            "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: {H2C_SETTINGS}\r\n"
        ),
    ] {
        let got = exchange(
            addr,
            &format!("GET /public/x HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n"),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "{extra:?}: {got}\n{}",
            front.log()
        );
        let body = got.split("\r\n\r\n").nth(1).unwrap_or("");
        // nginx may send the body chunked: the JSON is what lies between the outer braces.
        let json = body
            .find('{')
            .and_then(|a| body.rfind('}').map(|b| &body[a..=b]))
            .unwrap_or("");
        let seen: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|_| panic!("{got}"));
        assert_eq!(seen["http_version"], "1.1", "{seen}");
        assert!(seen["headers"].get("upgrade").is_none(), "{seen}");
        assert!(seen["headers"].get("http2-settings").is_none(), "{seen}");
    }
    front.stop().await;
    gw.stop().await;
}

/// An upstream that answers a WebSocket request by switching to something else gets no
/// tunnel: the client is told the upstream answered badly.
#[tokio::test]
async fn an_upstream_switching_to_another_protocol_gets_no_tunnel() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\n[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{up}\"\naccess = \"public\"\n"
    ))
    .await;
    let answer = exchange(
        gw.addr,
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    gw.stop().await;
}

/// Registers `email` (verified) and signs it in: its access token.
async fn customer_token(gw: &Gateway, smtp: &Smtp, email: &str) -> String {
    register_verified(gw, smtp, json!({"email": email, "password": PW})).await;
    login(gw, email, PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn admin_routes(up: &Upstream) -> String {
    format!(
        r#"
        [[routes]]
        path_prefix = "/"
        upstream = "{u}"
        access = "public"
        [[routes]]
        path_prefix = "/api"
        upstream = "{u}"
        [[routes]]
        path_prefix = "/api/admin"
        methods = ["DELETE", "POST", "PUT"]
        roles = ["admin"]
        upstream = "{u}"
        "#,
        u = up.url()
    )
}

/// A customer's `delete`, `Delete` or `dELETE` matched no DELETE rule and was forwarded; a
/// framework that upper-cases it ran its DELETE handler. Now any method with a lower-case
/// letter is refused before routing, and nothing reaches the upstream.
#[tokio::test]
async fn lower_case_methods_are_refused_before_any_rule() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&admin_routes(&up), Some(&smtp), None).await;
    let token = customer_token(&gw, &smtp, "m@example.com").await;
    let before = up.accepted();
    for m in ["delete", "Delete", "dELETE", "post", "pUT"] {
        let r = gw
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                gw.url("/api/admin/users/1"),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{m}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "INVALID_REQUEST");
    }
    assert_eq!(up.accepted(), before, "nothing reached the upstream");
    // The upper-case method meets the rule.
    let (status, _) = gw
        .call(reqwest::Method::DELETE, "/api/admin/users/1", &token, None)
        .await;
    assert_eq!(status, 403);
    // Over HTTP/2 too.
    let h2 = gw.client_builder().http2_prior_knowledge().build().unwrap();
    let r = h2
        .request(
            reqwest::Method::from_bytes(b"delete").unwrap(),
            gw.url("/api/admin/users/1"),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    gw.stop().await;
}

/// X-HTTP-Method-Override and friends make Symfony, Laravel, Rails or IIS act on another
/// method or path than the request's: removed from proxied requests, unless configuration
/// keeps one by name.
#[tokio::test]
async fn method_and_url_override_headers_do_not_reach_the_upstream() {
    let up = Upstream::start().await;
    let headers = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-original-url", "/api/admin"),
        ("x-rewrite-url", "/api/admin"),
        ("x_http_method_override", "DELETE"),
    ];
    let echo_of = |gw: &Gateway| {
        let mut r = gw.client.get(gw.url("/x"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            r.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let gw = Gateway::start(&admin_routes(&up)).await;
    let echo = echo_of(&gw).await;
    for (k, _) in headers {
        assert!(
            echo["headers"][k].is_null(),
            "{k} reached the upstream: {echo}"
        );
    }
    gw.stop().await;
    let gw = Gateway::start(&format!(
        "[proxy]\nkeep_override_headers = [\"X-HTTP-Method-Override\"]\n{}",
        admin_routes(&up)
    ))
    .await;
    let echo = echo_of(&gw).await;
    assert_eq!(echo["headers"]["x-http-method-override"], json!(["DELETE"]));
    assert!(echo["headers"]["x-rewrite-url"].is_null());
    gw.stop().await;
}

/// An override the configuration keeps for the upstream, and a `_method` query parameter
/// (Laravel, Symfony, Rails, method-override middleware), make the application run another
/// method than the request's: the request must pass that method's rule as well.
#[tokio::test]
async fn kept_overrides_and_method_queries_are_judged_as_what_they_claim() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &format!(
            "[proxy]\nkeep_override_headers = [\"X-HTTP-Method-Override\"]\n{}",
            admin_routes(&up)
        ),
        Some(&smtp),
        None,
    )
    .await;
    let token = customer_token(&gw, &smtp, "o@example.com").await;
    let send = |path: &'static str, header: Option<&'static str>| {
        let mut r = gw.client.get(gw.url(path)).bearer_auth(&token);
        if let Some(m) = header {
            r = r.header("x-http-method-override", m);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let before = up.accepted();
    assert_eq!(send("/api/admin/users", Some("DELETE")).await, 403);
    assert_eq!(send("/api/admin/users", Some("delete")).await, 403);
    assert_eq!(send("/api/admin/users?_method=DELETE", None).await, 403);
    assert_eq!(send("/api/admin/users?x=1&_method=put", None).await, 403);
    // Spelt as frameworks decode it: an escaped letter, PHP's `.` for `_`.
    assert_eq!(send("/api/admin/users?_%6Dethod=DELETE", None).await, 403);
    assert_eq!(send("/api/admin/users?.method=DELETE", None).await, 403);
    // PHP's names end at a NUL and `_method[]` is `_method`; `;` splits pairs for some.
    assert_eq!(send("/api/admin/users?_method%00x=DELETE", None).await, 403);
    assert_eq!(send("/api/admin/users?_method[]=DELETE", None).await, 403);
    assert_eq!(send("/api/admin/users?x=1;_method=DELETE", None).await, 403);
    assert_eq!(up.accepted(), before, "nothing reached the upstream");
    // The request's own method, and an override no rule names, pass.
    assert_eq!(send("/api/admin/users", None).await, 200);
    assert_eq!(send("/api/admin/users", Some("PATCH")).await, 200);
    assert_eq!(send("/api/admin/users?_method=PATCH", None).await, 200);
    // A look-alike of the kept header (Rack and older gunicorn read it as the header
    // itself) does not reach the upstream.
    let echo: serde_json::Value = gw
        .client
        .get(gw.url("/api/x"))
        .bearer_auth(&token)
        .header("x_http_method_override", "DELETE")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        echo["headers"]["x_http_method_override"].is_null(),
        "{echo}"
    );
    // A public route stays public whatever method is claimed.
    let r = gw
        .client
        .get(gw.url("/x?_method=DELETE"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

/// CONNECT would turn the upstream into a tunnel to anywhere: never forwarded.
#[tokio::test]
async fn connect_is_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!("[server]\ntls = false\n{}", admin_routes(&up))).await;
    let before = up.accepted();
    for target in ["127.0.0.1:22", "/x"] {
        let r = raw_request(
            gw.addr,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            r.status == 400 || r.status == 405,
            "CONNECT {target}: {}",
            r.head
        );
    }
    assert_eq!(up.accepted(), before);
    gw.stop().await;
}

/// `Host: user@secure.example` skipped a host rule and was forwarded: userinfo is refused in
/// Host and in an absolute-form target alike.
#[tokio::test]
async fn userinfo_in_the_host_is_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\n[[routes]]\nhost = \"secure.example\"\npath_prefix = \"/\"\nupstream = \"{u}\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"{u}\"\naccess = \"public\"\n",
        u = up.url()
    ))
    .await;
    let before = up.accepted();
    for request in [
        "GET /x HTTP/1.1\r\nHost: user@secure.example\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: secure.example@evil.test\r\nConnection: close\r\n\r\n",
        "GET http://user@secure.example/x HTTP/1.1\r\nHost: secure.example\r\nConnection: close\r\n\r\n",
        // Two Host headers: readers disagree on which one counts.
        "GET /x HTTP/1.1\r\nHost: secure.example\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: other.example\r\nHost: secure.example\r\nConnection: close\r\n\r\n",
        // Empty labels: a run of trailing dots is a name some upstreams read as the same.
        "GET /x HTTP/1.1\r\nHost: secure.example...\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: secure.example..:80\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(gw.addr, request).await;
        assert_eq!(r.status, 400, "{request:?}: {}", r.head);
        assert_eq!(r.json()["code"], "INVALID_REQUEST");
    }
    assert_eq!(up.accepted(), before);
    // The host rule itself holds.
    let r = raw_get(gw.addr, "/x", "").await;
    assert_eq!(r.status, 200, "another host is public");
    let r = raw_request(
        gw.addr,
        "GET /x HTTP/1.1\r\nHost: secure.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    // One trailing dot is the same name, and meets its rule.
    let r = raw_request(
        gw.addr,
        "GET /x HTTP/1.1\r\nHost: secure.example.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    gw.stop().await;
}

/// An upstream that decodes the path once more must not find a traversal or a separator the
/// rules never saw, nor bytes that are not UTF-8 (an over-long `.`).
#[tokio::test]
async fn paths_that_decode_again_to_a_separator_are_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!("[server]\ntls = false\n{}", admin_routes(&up))).await;
    let before = up.accepted();
    for path in [
        "/public/%252e%252e/api/admin",
        "/public/%252e./api/admin",
        "/public%252fapi/admin",
        "/public%255capi/admin",
        "/public/%2500",
        "/public/%25252e%25252e/api",
        "/public/%C0%AE%C0%AE/api/admin",
        "/public/%E0%80%AE",
        "/public/%FF",
        // Windows aliases: IIS and Windows file systems drop a trailing dot or space and
        // read `::$DATA` as the file itself.
        "/api/admin./users",
        "/api/admin%20/users",
        "/api/admin%2e",
        "/api/admin::$DATA",
        "/api/admin%3A%3A%24DATA",
        // An 8.3 short name: IIS serves `ADMINI~1` as `administrator`.
        "/api/ADMINI~1/users",
        // Unicode that NFKC (Python applications, Windows best-fit) folds to `..`, `/`, `\`.
        "/public/%E2%80%A5/api/admin",
        "/public/%EF%BC%8E%EF%BC%8E/api/admin",
        "/public%EF%BC%8F..%EF%BC%8Fapi/admin",
        "/public%EF%BC%BCapi",
    ] {
        let r = raw_get(gw.addr, path, "").await;
        assert_eq!(r.status, 400, "{path}: {}", r.head);
    }
    assert_eq!(up.accepted(), before);
    let r = raw_get(gw.addr, "/caf%C3%A9/100%25", "").await;
    assert_eq!(r.status, 200, "UTF-8 and a plain percent pass");
    gw.stop().await;
}

/// Rails routes `/api/admin` as `/api/admin.json` too, Spring MVC (before 5.3) as
/// `/api/admin.anything`, and a case-insensitive Java server `/api/adm%C4%B1n` as
/// `/api/admin`: proxied under the `/api` route, such a path must pass the `/api/admin` rule
/// as well.
#[tokio::test]
async fn a_format_suffix_or_folded_case_cannot_walk_around_a_prefix_rule() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&admin_routes(&up), Some(&smtp), None).await;
    let token = customer_token(&gw, &smtp, "fmt@example.com").await;
    let send = |method: &'static str, path: &'static str| {
        let r = gw
            .client
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(&token);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let before = up.accepted();
    // And `ı`, `İ`, `ſ`, the Kelvin sign, which case-insensitive servers fold to ASCII.
    for path in [
        "/api/admin.json",
        "/api/admin%2ejson",
        "/api/admin.x.json",
        "/api/adm%C4%B1n/users",
        "/api/adm%C4%B0n",
        "/api/adm%C4%B1n.json",
        // And a fullwidth letter, which NFKC folds to ASCII.
        "/api/%EF%BD%81dmin/users",
    ] {
        assert_eq!(send("DELETE", path).await, 403, "{path}");
    }
    assert_eq!(up.accepted(), before, "nothing reached the upstream");
    // The `/api` rule's own requests still pass: another method, a file of the same name.
    assert_eq!(send("GET", "/api/admin.json").await, 200);
    assert_eq!(send("DELETE", "/api/style.css").await, 200);
    gw.stop().await;
}

/// The access token stays the gateway's: it does not reach the upstream in Authorization
/// (as its cookie does not in Cookie), unless `identity_headers.access_token` asks for it
/// under its own name. An upstream cannot set, replace or clear the gateway's cookies.
#[tokio::test]
async fn the_gateways_token_and_cookies_stay_its_own() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&admin_routes(&up), Some(&smtp), None).await;
    let token = customer_token(&gw, &smtp, "t@example.com").await;
    let (status, echo) = gw.call(reqwest::Method::GET, "/api/x", &token, None).await;
    assert_eq!(status, 200);
    assert!(echo["headers"]["authorization"].is_null(), "{echo}");
    // The shared-domain cookie name is one any sibling subdomain can set: without a
    // cookie domain the gateway never sets it, and does not believe it.
    let r = gw
        .client
        .get(gw.url("/api/x"))
        .header("cookie", format!("__Secure-authgate-access={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .client
        .get(gw.url("/api/x"))
        .header("cookie", format!("__Host-authgate-access={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(echo["headers"]["x-auth-user-id"][0].is_string());
    // Another scheme on a public route is the application's own business.
    let r = gw
        .client
        .get(gw.url("/x"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["authorization"],
        json!(["Basic dXNlcjpwYXNz"])
    );
    // The upstream's Set-Cookie for our names is dropped; its own cookie passes.
    let r = gw.client.get(gw.url("/cookies")).send().await.unwrap();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set, vec!["app_session=kept; Path=/".to_string()], "{set:?}");
    gw.stop().await;

    let gw = Gateway::start_with(
        &format!(
            "[identity_headers]\naccess_token = \"X-Access-Token\"\n{}",
            admin_routes(&up)
        ),
        Some(&smtp),
        None,
    )
    .await;
    let token = customer_token(&gw, &smtp, "t2@example.com").await;
    let (_, echo) = gw.call(reqwest::Method::GET, "/api/x", &token, None).await;
    assert_eq!(echo["headers"]["x-access-token"], json!([token]));
    assert!(echo["headers"]["authorization"].is_null());
    gw.stop().await;
}

/// /metrics is not on the main listener by default: behind a TLS-terminating front that
/// forwards every path, its requests would look like a local scrape. Switched on, it
/// answers loopback (and trusted proxies; the refusal of everyone else is a unit test of
/// `ops`, since a test may only speak from loopback).
#[tokio::test]
async fn metrics_are_not_on_the_main_listener_unless_asked() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\nmetrics_on_main_listener = false\n{}",
        admin_routes(&up)
    ))
    .await;
    let r = raw_get(gw.addr, "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains("authgate_"),
        "the application's /metrics: {}",
        r.body
    );
    gw.stop().await;
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\nmetrics_on_main_listener = true\n{}",
        admin_routes(&up)
    ))
    .await;
    let r = raw_get(gw.addr, "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("authgate_connections"), "{}", r.body);
    gw.stop().await;
}
