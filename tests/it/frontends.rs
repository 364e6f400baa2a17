//! Real nginx (auth_request) and Caddy (forward_auth) in front of a real upstream, asking
//! authgate's /auth/validate, configured with the snippets the README documents.

use crate::external::{free_port, require, wait_port};
use crate::harness::*;
use crate::mail::Smtp;
use serde_json::json;

const PW: &str = "correct horse battery staple";

/// authgate with the rules the front proxies ask about: /public open, /admin for admins,
/// everything else signed in.
async fn gateway(up: &Upstream, smtp: &Smtp) -> Gateway {
    let toml = format!(
        r#"
        [server]
        tls = false
        allowed_redirect_hosts = ["127.0.0.1"]
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
        "#,
        u = up.url()
    );
    Gateway::start_with(&toml, Some(smtp), None).await
}

/// The README's nginx snippet, with ports filled in.
pub fn nginx_conf(dir: &std::path::Path, listen: u16, authgate: u16, upstream: u16) -> String {
    let d = dir.display();
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

    upstream app      {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    upstream authgate {{ server 127.0.0.1:{authgate}; keepalive 16; }}

    server {{
        listen 127.0.0.1:{listen};

        # authgate's own endpoints (sign-in, tokens, pages) go straight to it.
        location /auth/ {{
            proxy_pass http://authgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}

        # The subrequest: authgate decides from the original method, host and URI.
        location = /_authgate {{
            internal;
            proxy_pass http://authgate/auth/validate;
            # HEAD: nginx keeps a connection only when the answer has no body to discard.
            proxy_method HEAD;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $http_host;   # with the port, if any
            proxy_set_header X-Forwarded-Proto $scheme;
        }}

        location / {{
            auth_request /_authgate;
            # Identity from authgate's answer; these replace anything the client sent
            # under the same names (an empty value drops the header).
            auth_request_set $auth_user_id    $upstream_http_x_auth_user_id;
            auth_request_set $auth_user_email $upstream_http_x_auth_user_email;
            auth_request_set $auth_user_name  $upstream_http_x_auth_user_name;
            auth_request_set $auth_user_roles $upstream_http_x_auth_user_roles;
            auth_request_set $auth_session_id $upstream_http_x_auth_session_id;
            proxy_set_header X-Auth-User-Id    $auth_user_id;
            proxy_set_header X-Auth-User-Email $auth_user_email;
            proxy_set_header X-Auth-User-Name  $auth_user_name;
            proxy_set_header X-Auth-User-Roles $auth_user_roles;
            proxy_set_header X-Auth-Session-Id $auth_session_id;
            proxy_set_header Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
            # Not signed in: a browser goes to the login page that authgate named (with the
            # return URL encoded in it); an API client keeps its 401.
            auth_request_set $auth_location $upstream_http_location;
            error_page 401 = @login;
        }}
        location @login {{
            if ($http_accept ~* "text/html") {{
                return 302 $auth_location;
            }}
            return 401;
        }}
    }}
}}
"#
    )
}

/// The README's Caddy snippet, with ports filled in.
pub fn caddyfile(listen: u16, authgate: u16, upstream: u16) -> String {
    format!(
        r#"{{
    admin off
    auto_https off
}}
http://127.0.0.1:{listen} {{
    route {{
        # Nothing the client sends under the identity names reaches the app.
        request_header -X-Auth-User-Id
        request_header -X-Auth-User-Email
        request_header -X-Auth-User-Name
        request_header -X-Auth-User-Roles
        request_header -X-Auth-Session-Id
        reverse_proxy /auth/* 127.0.0.1:{authgate}
        forward_auth 127.0.0.1:{authgate} {{
            uri /auth/validate
            copy_headers X-Auth-User-Id X-Auth-User-Email X-Auth-User-Name X-Auth-User-Roles X-Auth-Session-Id
        }}
        reverse_proxy 127.0.0.1:{upstream}
    }}
}}
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
    let code = smtp.code("front@example.com", 1).await;
    let r = client
        .post(format!("{base}/auth/verify"))
        .json(&json!({"email": "front@example.com", "code": code}))
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

#[tokio::test]
async fn nginx_auth_request_in_front() {
    let Some(nginx) = require("nginx", "nginx_auth_request_in_front") else {
        return;
    };
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &smtp).await;
    let dir = tempfile::tempdir().unwrap();
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(dir.path(), port, gw.addr.port(), up.addr.port()),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(&nginx)
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
    let log = dir.path().join("error.log");
    let checked = tokio::spawn(async move { check_front(port, &smtp, true).await }).await;
    if let Err(e) = checked {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("{e}\nnginx error.log:\n{log}");
    }
    child.kill().await.ok();
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
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, caddyfile(port, gw.addr.port(), up.addr.port())).unwrap();
    let mut child = tokio::process::Command::new(&caddy)
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
    check_front(port, &smtp, true).await;
    child.kill().await.ok();
    gw.stop().await;
}
