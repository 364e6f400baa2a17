//! Real nginx (auth_request) and Caddy (forward_auth) in front of a real upstream, asking
//! authgate's /auth/validate, configured with the snippets the README documents.

use crate::external::{free_port, require, wait_port};
use crate::harness::*;
use crate::mail::Smtp;
use serde_json::json;

const PW: &str = "correct horse battery staple";

/// authgate with the rules the front proxies ask about: /public open, /admin for admins,
/// /api/admin's DELETE for admins, everything else signed in. The front proxy (on loopback)
/// is trusted, as README tells.
async fn gateway(up: &Upstream, smtp: &Smtp) -> Gateway {
    let toml = format!(
        r#"
        [server]
        tls = false
        allowed_redirect_hosts = ["127.0.0.1"]
        trusted_proxies = ["127.0.0.1/32"]
        [[routes]]
        path_prefix = "/"
        upstream = "{u}"
        [[routes]]
        path_prefix = "/public"
        upstream = "{u}"
        access = "public"
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
        path_prefix = "/vault"
        upstream = "{u}"
        mfa = true
        "#,
        u = up.url()
    );
    Gateway::start_with(&toml, Some(smtp), None).await
}

/// The fenced block of `lang` in README.md that contains `marker`, exactly as printed.
pub fn readme_block(lang: &str, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{lang}\n");
    readme
        .split(fence.as_str())
        .skip(1)
        .filter_map(|rest| rest.split("\n```").next())
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("README has no {lang} block with {marker:?}"))
        .to_string()
}

/// Replaces `from` in `text`, insisting that it is there (so a README edit cannot silently
/// make the test run something else).
fn fill(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "README snippet lost {from:?}");
    text.replace(from, to)
}

/// The README's nginx snippet, with ports filled in, inside the file nginx needs around it.
pub fn nginx_conf(dir: &std::path::Path, listen: u16, authgate: u16, upstream: u16) -> String {
    let d = dir.display();
    let snippet = readme_block("nginx", "auth_request");
    let snippet = fill(
        &snippet,
        "server 127.0.0.1:8443;",
        &format!("server 127.0.0.1:{authgate};"),
    );
    let snippet = fill(
        &snippet,
        "server 127.0.0.1:8080;",
        &format!("server 127.0.0.1:{upstream};"),
    );
    let snippet = fill(
        &snippet,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{listen};"),
    );
    format!(
        r#"
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{snippet}
}}
"#
    )
}

/// The README's Caddy snippet, with ports filled in.
pub fn caddyfile(listen: u16, authgate: u16, upstream: u16) -> String {
    let snippet = readme_block("caddy", "forward_auth");
    let snippet = fill(
        &snippet,
        "app.example.com {",
        &format!("http://127.0.0.1:{listen} {{"),
    );
    let snippet = fill(&snippet, "127.0.0.1:8443", &format!("127.0.0.1:{authgate}"));
    let snippet = fill(&snippet, "127.0.0.1:8080", &format!("127.0.0.1:{upstream}"));
    format!(
        r#"{{
    admin off
    auto_https off
}}
{snippet}
"#
    )
}

/// What every front proxy must show: 401 (or a redirect) without a token, 200 with identity
/// headers at the upstream, 403 on a role rule, spoofed identity headers removed.
async fn check_front(front: u16, smtp: &Smtp, redirects: bool) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{front}");
    // Sign up and in through the front proxy itself.
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "front@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: serde_json::Value = r.json().await.unwrap();
    let code = smtp.code("front@example.com", 1).await;
    let r = client
        .post(format!("{base}/auth/verify"))
        .json(&json!({"email": "front@example.com", "code": code, "signup_token": reg["data"]["signup_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"login": "front@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let token = v["data"]["access_token"].as_str().unwrap().to_string();

    // No token.
    let r = client.get(format!("{base}/app/page")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    if redirects {
        let r = client
            .get(format!("{base}/app/page"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap();
        assert!(
            loc.contains("/auth/login?rd=http%3A%2F%2F127.0.0.1%3A"),
            "{loc}"
        );
        assert!(loc.contains("%2Fapp%2Fpage"), "{loc}");
    }
    // A token: identity reaches the upstream; the client's spoofs do not.
    let r = client
        .get(format!("{base}/app/page?x=1"))
        .bearer_auth(&token)
        .header("x-auth-user-email", "admin@evil.example")
        .header("x-auth-user-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/app/page?x=1");
    assert_eq!(
        echo["headers"]["x-auth-user-email"],
        json!(["front@example.com"]),
        "{echo}"
    );
    assert_eq!(echo["headers"]["x-auth-user-roles"], json!(["customer"]));
    assert!(echo["headers"]["x-auth-user-id"][0].is_string());
    // The role rule.
    let r = client
        .get(format!("{base}/admin/panel"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A public path without a token: allowed, and still no spoofed identity.
    let r = client
        .get(format!("{base}/public/x"))
        .header("x-auth-user-id", "spoof")
        .header("x-auth-user-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    // Caddy 2.6 (Debian 12) copies a name authgate did not answer as its literal placeholder
    // text; what matters is that no client-chosen value gets through.
    let client_chosen = |x: &serde_json::Value| {
        let s = x.as_str().unwrap_or("");
        !s.is_empty() && !s.starts_with("{http.reverse_proxy.header.")
    };
    let leaked: Vec<_> = echo["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| k.starts_with("x-auth") && v.as_array().unwrap().iter().any(client_chosen))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    assert!(
        leaked.is_empty(),
        "spoofed identity reached the upstream: {leaked:?}"
    );
    // Logout through the front: the token stops working there too.
    let r = client
        .post(format!("{base}/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client
            .get(format!("{base}/app/page"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// A front proxy process, killed when dropped.
pub struct Front {
    pub port: u16,
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl Front {
    /// nginx with README's snippet in front of `gw` and `up`.
    pub async fn nginx(nginx: &std::path::Path, gw: &Gateway, up: &Upstream) -> Front {
        Front::nginx_to(nginx, gw, up.addr.port()).await
    }

    /// nginx with README's snippet in front of `gw` and the app on `app_port`.
    pub async fn nginx_to(nginx: &std::path::Path, gw: &Gateway, app_port: u16) -> Front {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            nginx_conf(dir.path(), port, gw.addr.port(), app_port),
        )
        .unwrap();
        let child = tokio::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // One process, so killing it leaves no orphaned worker behind.
            .args(["-g", "daemon off; master_process off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_port(port, "nginx").await;
        Front { port, child, dir }
    }

    /// Caddy with README's snippet in front of `gw` and `up`.
    pub async fn caddy(caddy: &std::path::Path, gw: &Gateway, up: &Upstream) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, caddyfile(port, gw.addr.port(), up.addr.port())).unwrap();
        let child = tokio::process::Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_port(port, "caddy").await;
        Front { port, child, dir }
    }

    /// nginx's error log (empty for Caddy), for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        self.child.kill().await.ok();
    }
}

/// Runs `check` against `front`, showing nginx's error log if it fails.
async fn with_log<F: std::future::Future<Output = ()> + Send + 'static>(front: &Front, check: F) {
    if let Err(e) = tokio::spawn(check).await {
        panic!("{e}\nfront proxy's error.log:\n{}", front.log());
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front() {
    let Some(nginx) = require("nginx", "nginx_auth_request_in_front") else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let front = Front::nginx(&nginx, &gw, &up).await;
    let port = front.port;
    with_log(&front, async move { check_front(port, &smtp, true).await }).await;
    front.stop().await;
    gw.stop().await;
}

/// A route with `mfa = true` behind nginx: a one-factor session is refused with nginx's 401,
/// and a browser is sent to the step-up page the 401's `Location` names; stepped up through
/// the front, the same session passes.
#[tokio::test]
async fn nginx_sends_a_one_factor_session_to_the_step_up_page() {
    let Some(nginx) = require(
        "nginx",
        "nginx_sends_a_one_factor_session_to_the_step_up_page",
    ) else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let front = Front::nginx(&nginx, &gw, &up).await;
    let port = front.port;
    with_log(&front, async move {
        let base = format!("http://127.0.0.1:{port}");
        let token = customer_through(port, &smtp, "vault@example.com").await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let get = |path: &str, token: &str, html: bool| {
            let mut r = client.get(format!("{base}{path}")).bearer_auth(token);
            if html {
                r = r.header("accept", "text/html");
            }
            r.send()
        };
        assert_eq!(get("/app/page", &token, false).await.unwrap().status(), 200);
        assert_eq!(get("/vault/x", &token, false).await.unwrap().status(), 401);
        let r = get("/vault/x", &token, true).await.unwrap();
        assert_eq!(r.status(), 302);
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert!(to.contains("/auth/ui/step-up?rd="), "{to}");
        // An authenticator, set up and shown through the front.
        let now = || authgate::clock::Clock::unix_now(&authgate::clock::SystemClock);
        let r = client
            .post(format!("{base}/auth/mfa/totp"))
            .bearer_auth(&token)
            .json(&json!({"current_password": PW}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        let secret = v["data"]["secret"].as_str().unwrap().to_string();
        let code = crate::second_factors::totp(&secret, now());
        let r = client
            .post(format!("{base}/auth/mfa/totp/confirm"))
            .bearer_auth(&token)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A code of the next step (the confirming one is spent).
        let r = client
            .post(format!("{base}/auth/mfa/verify"))
            .bearer_auth(&token)
            .json(&json!({"code": crate::second_factors::totp(&secret, now() + 30)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        let stepped = v["data"]["access_token"].as_str().unwrap().to_string();
        let r = get("/vault/x", &stepped, false).await.unwrap();
        assert_eq!(r.status(), 200);
        let echo: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            echo["headers"]["x-auth-user-email"],
            json!(["vault@example.com"])
        );
    })
    .await;
    front.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn caddy_forward_auth_in_front() {
    let Some(caddy) = require("caddy", "caddy_forward_auth_in_front") else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let front = Front::caddy(&caddy, &gw, &up).await;
    check_front(front.port, &smtp, true).await;
    front.stop().await;
    gw.stop().await;
}

/// Signs `email` up and in through the front; returns the access token.
async fn customer_through(front: u16, smtp: &Smtp, email: &str) -> String {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{front}");
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": email, "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: serde_json::Value = r.json().await.unwrap();
    let code = smtp.code(email, 1).await;
    let mut verify = json!({"email": email, "code": code});
    if let Some(t) = reg["data"]["signup_token"].as_str() {
        verify["signup_token"] = json!(t);
    }
    let r = client
        .post(format!("{base}/auth/verify"))
        .json(&verify)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"login": email, "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["data"]["access_token"].as_str().unwrap().to_string()
}

/// What a client may say about its own request to a front proxy, none of which may change
/// the verdict: the other family's description of the path or method, a method override,
/// a method in lower case.
async fn spoofing_the_original_request_changes_nothing(front: u16, smtp: &Smtp) -> String {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{front}");
    let status = |r: reqwest::Response| r.status().as_u16();
    // Anonymous: naming a public path for a protected one.
    for (name, value) in [
        ("x-forwarded-uri", "/public/x".to_string()),
        ("x-original-uri", "/public/x".to_string()),
        ("x-original-url", format!("{base}/public/x")),
        ("x-forwarded-host", "elsewhere.test".to_string()),
    ] {
        let r = client
            .get(format!("{base}/app/page"))
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 401, "anonymous with {name}: {value}");
    }
    let token = customer_through(front, smtp, "spoof@example.com").await;
    // A customer: a GET for a DELETE-only admin rule, another path for /admin.
    for (method, path, name, value) in [
        ("DELETE", "/api/admin/x", "x-forwarded-method", "GET"),
        ("DELETE", "/api/admin/x", "x-original-method", "GET"),
        ("GET", "/admin/panel", "x-forwarded-uri", "/app"),
        ("GET", "/admin/panel", "x-original-uri", "/app"),
    ] {
        let r = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}{path}"),
            )
            .bearer_auth(&token)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            status(r),
            403,
            "customer {method} {path} with {name}: {value}"
        );
    }
    // A method override naming the admin rule's method: refused (nginx asks about it), or
    // removed before the application could obey it (Caddy removes it first).
    for (method, name) in [
        ("GET", "x-http-method-override"),
        ("POST", "x-method-override"),
    ] {
        let r = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}/api/admin/x"),
            )
            .bearer_auth(&token)
            .header(name, "DELETE")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            403 => {}
            200 => {
                let echo: serde_json::Value = r.json().await.unwrap();
                assert!(
                    echo["headers"][name].is_null(),
                    "{name} reached the application: {echo}"
                );
            }
            other => panic!("customer {method} with {name}: DELETE answered {other}"),
        }
    }
    // The controls: the same requests without the spoof.
    let r = client
        .get(format!("{base}/api/admin/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 200, "GET is not the admin rule's method");
    let r = client
        .delete(format!("{base}/api/admin/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 403);
    // A method in lower case never reaches the application as the method it spells.
    let r = client
        .request(
            reqwest::Method::from_bytes(b"delete").unwrap(),
            format!("{base}/api/admin/x"),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let code = status(r);
    assert!(
        code == 400 || code == 403 || code == 405,
        "lower-case delete: {code}"
    );
    // Override headers naming a protected path: refused (nginx asks about them), or removed
    // before the application could obey them (Caddy removes them first).
    let r = client
        .get(format!("{base}/public/x"))
        .header("x-http-method-override", "DELETE")
        .header("x-rewrite-url", "/admin")
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        401 | 403 => {}
        200 => {
            let echo: serde_json::Value = r.json().await.unwrap();
            for h in ["x-http-method-override", "x-rewrite-url", "x-original-url"] {
                let sent = echo["headers"][h]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| !x.as_str().unwrap_or("").is_empty()));
                assert!(!sent, "{h} reached the application: {echo}");
            }
        }
        other => panic!("overrides on a public path: {other}"),
    }
    // Harmless ones on a public path reach a public answer, and never the application.
    let r = client
        .get(format!("{base}/public/x"))
        .header("x-http-method-override", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    let sent = echo["headers"]["x-http-method-override"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| !x.as_str().unwrap_or("").is_empty()));
    assert!(!sent, "the override reached the application: {echo}");
    token
}

/// nginx (`proxy_pass` without a URI) and Caddy forward the path as the client wrote it: a
/// `/admin/..` that authgate judged as `/` (public) would reach an application that does not
/// resolve `..` (Flask's `<path:>`, Express routers) as its `/admin`, and a `//x/admin`
/// judged as `/x/admin` would reach a Node application that parses it with `new URL` as
/// `/admin`. The door refuses a described path with dot or empty segments, so nothing
/// reaches the application.
async fn dot_segments_never_reach_the_app(front: u16, up: &Upstream) {
    let before = up.accepted();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    for path in [
        "/admin/..",
        "/admin/%2e%2e",
        "/app/./..",
        "/admin/x/../..",
        "/admin/.%2E/",
    ] {
        let r = raw_request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_ne!(r.status, 200, "{path}: {}", r.head);
    }
    assert_eq!(up.accepted(), before, "nothing reached the application");
}

/// Behind README's snippets the application gets who is calling, not the caller's
/// credentials for authgate: no Bearer token authgate accepted, and (Caddy, which can rewrite
/// a header) none of authgate's cookies; and the client's address as the front proxy saw it,
/// never one the client wrote.
async fn credentials_and_forged_addresses_stay_out_of_the_app(
    front: u16,
    token: &str,
    strips_cookies: bool,
) {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{front}/app/page"))
        .bearer_auth(token)
        .header(
            "cookie",
            "__Host-authgate-device=d; app_session=kept; __Host-authgate-csrf=c",
        )
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    let values = |name: &str| -> Vec<String> {
        echo["headers"][name]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str())
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        values("x-auth-user-email"),
        vec!["spoof@example.com".to_string()]
    );
    assert!(values("authorization").is_empty(), "{echo}");
    for name in ["x-forwarded-for", "x-real-ip", "forwarded"] {
        assert!(
            values(name).iter().all(|v| !v.contains("6.6.6.6")),
            "{name}: {echo}"
        );
    }
    let cookies = values("cookie").join("; ");
    assert!(cookies.contains("app_session=kept"), "{echo}");
    if strips_cookies {
        assert!(!cookies.contains("authgate"), "{echo}");
    }
    // A Bearer token authgate did not accept, on a public route, stays the app's.
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{front}/public/x"))
        .bearer_auth("the-apps-own-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    if !strips_cookies {
        assert_eq!(
            echo["headers"]["authorization"][0], "Bearer the-apps-own-token",
            "{echo}"
        );
    }
}

#[tokio::test]
async fn nginx_front_ignores_what_the_client_says_about_its_request() {
    let Some(nginx) = require(
        "nginx",
        "nginx_front_ignores_what_the_client_says_about_its_request",
    ) else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let front = Front::nginx(&nginx, &gw, &up).await;
    let port = front.port;
    with_log(&front, async move {
        let token = spoofing_the_original_request_changes_nothing(port, &smtp).await;
        credentials_and_forged_addresses_stay_out_of_the_app(port, &token, false).await;
        dot_segments_never_reach_the_app(port, &up).await;
    })
    .await;
    front.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn caddy_front_ignores_what_the_client_says_about_its_request() {
    let Some(caddy) = require(
        "caddy",
        "caddy_front_ignores_what_the_client_says_about_its_request",
    ) else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let front = Front::caddy(&caddy, &gw, &up).await;
    let token = spoofing_the_original_request_changes_nothing(front.port, &smtp).await;
    credentials_and_forged_addresses_stay_out_of_the_app(front.port, &token, true).await;
    dot_segments_never_reach_the_app(front.port, &up).await;
    front.stop().await;
    gw.stop().await;
}

/// Behind README's nginx snippet, a forged X-Forwarded-For buys no quota of its own and is
/// not what the devices list records: the client is the address nginx saw.
#[tokio::test]
async fn nginx_front_forged_forwarded_for_gets_no_quota_of_its_own() {
    let Some(nginx) = require(
        "nginx",
        "nginx_front_forged_forwarded_for_gets_no_quota_of_its_own",
    ) else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let front = Front::nginx(&nginx, &gw, &up).await;
    let port = front.port;
    with_log(&front, async move {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let token = customer_through(port, &smtp, "xff@example.com").await;
        let mut limited = 0;
        // login_per_ip is 20 a minute: one client, forty forged addresses.
        for i in 0..40 {
            let r = client
                .post(format!("{base}/auth/login"))
                .header("x-forwarded-for", format!("198.51.100.{i}"))
                .json(&json!({"login": format!("nobody{i}@example.com"), "password": "wrong password here"}))
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                limited += 1;
            }
        }
        assert!(limited >= 15, "forged addresses each got a quota: {limited} refusals of 40");
        let r = client
            .get(format!("{base}/auth/sessions"))
            .bearer_auth(&token)
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"][0]["ip"], "127.0.0.1", "{v}");
    })
    .await;
    front.stop().await;
    gw.stop().await;
}

/// An absolute-form request line names one host and the Host header another: nginx serves
/// (and tells the app) the request line's, so README's snippet must describe that one to
/// authgate, or a customer reaches an admin-only host by naming a public one in Host.
#[tokio::test]
async fn nginx_front_judges_the_host_the_app_serves() {
    let Some(nginx) = require("nginx", "nginx_front_judges_the_host_the_app_serves") else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &format!(
            r#"
            [server]
            tls = false
            trusted_proxies = ["127.0.0.1/32"]
            [[routes]]
            path_prefix = "/"
            upstream = "{u}"
            [[routes]]
            host = "admin.test"
            path_prefix = "/"
            upstream = "{u}"
            roles = ["admin"]
            "#,
            u = up.url()
        ),
        Some(&smtp),
        None,
    )
    .await;
    crate::seeds::register_verified(
        &gw,
        &smtp,
        json!({"email": "h@example.com", "password": PW}),
    )
    .await;
    let token = crate::seeds::login(&gw, "h@example.com", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let front = Front::nginx(&nginx, &gw, &up).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", front.port).parse().unwrap();
    let ask = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
    };
    for (target, host) in [
        ("http://admin.test/users", "www.test"),
        ("/users", "admin.test"),
        ("http://ADMIN.test/users", "www.test"),
    ] {
        let r = raw_request(addr, &ask(target, host)).await;
        assert_eq!(
            r.status,
            403,
            "{target} Host: {host}\n{}\n{}",
            r.head,
            front.log()
        );
    }
    // The other way round: the app serves www.test, and that is what was judged.
    let r = raw_request(addr, &ask("http://www.test/users", "admin.test")).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, front.log());
    assert_eq!(r.json()["headers"]["host"], json!(["www.test"]));
    front.stop().await;
    gw.stop().await;
}
