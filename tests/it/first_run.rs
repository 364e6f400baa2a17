//! The first run: the binary with no configuration file makes its certificate, store and demo
//! application, prints codes in its log, and a newcomer signs in and sees the demo greet them.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The binary on its built-in defaults in a fresh directory (only the port moved off 8443,
/// since tests never use fixed ports), its log collected line by line.
struct Defaults {
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
    port: u16,
    addr: std::net::SocketAddr,
    cert: Vec<u8>,
    client: reqwest::Client,
    base: String,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Defaults {
    async fn start() -> Defaults {
        let dir = tempfile::tempdir().unwrap();
        let port = dead_addr().await.port();
        let mut child = tokio::process::Command::new(bin_path())
            .current_dir(dir.path())
            .env("AUTHGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "AUTHGATE_SERVER__PUBLIC_URL",
                format!("https://localhost:{port}"),
            )
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Collect the log to find the code in it.
        let (tx, log) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cert = std::fs::read(dir.path().join("certs/dev-cert.pem")).unwrap();
        let client = client_builder(&cert)
            .resolve("localhost", addr)
            .build()
            .unwrap();
        Defaults {
            _child: child,
            dir,
            port,
            addr,
            cert,
            client,
            base: format!("https://localhost:{port}"),
            log,
        }
    }

    /// The next one-time code the log prints (development mode).
    async fn next_code(&mut self) -> String {
        let deadline = authgate::clock::timer_now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.log.recv())
                .await
                .expect("code in the log")
                .unwrap();
            eprintln!("log: {line}");
            if line.contains("one-time code") {
                if let Some(c) = line.split("code=").nth(1) {
                    return c
                        .trim_start_matches('"')
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                }
            }
        }
    }

    /// Registers `email` with `pw`, verifies it with the logged code; the sign-in's answer.
    async fn sign_up_and_in(&mut self, email: &str, pw: &str) -> serde_json::Value {
        let base = self.base.clone();
        let r = self
            .client
            .post(format!("{base}/auth/register"))
            .json(&json!({"email": email, "password": pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let reg: serde_json::Value = r.json().await.unwrap();
        let code = self.next_code().await;
        assert_eq!(code.len(), 6);
        let mut verify = json!({"email": email, "code": code});
        if let Some(t) = reg["data"]["signup_token"].as_str() {
            verify["signup_token"] = json!(t);
        }
        let r = self
            .client
            .post(format!("{base}/auth/verify"))
            .json(&verify)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = self
            .client
            .post(format!("{base}/auth/login"))
            .json(&json!({"login": email, "password": pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "sign-in");
        r.json().await.unwrap()
    }
}

#[tokio::test]
async fn no_config_runs_the_demo_end_to_end() {
    let mut d = Defaults::start().await;
    assert!(
        d.dir.path().join("certs/dev-cert.pem").exists(),
        "development certificate made under certs/"
    );
    let (port, addr, cert) = (d.port, d.addr, d.cert.clone());
    let (client, base, dir) = (d.client.clone(), d.base.clone(), d.dir.path().to_path_buf());

    // The demo is protected: an API call gets 401, a browser the login page.
    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        &format!("https://localhost:{port}/auth/login?rd=%2F"),
        "the login page, coming back to / after"
    );

    let pw = "correct horse battery staple";
    let v = d.sign_up_and_in("new@example.com", pw).await;
    let token = v["data"]["access_token"].as_str().unwrap();
    let page = client
        .get(format!("{base}/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Hello, new@example.com"), "{page}");
    assert!(page.contains("x-auth-user-id"), "{page}");

    // The same as a person does it: open the address, get the login page, sign in there, and
    // land on the demo's greeting.
    let browser = client_builder(&cert)
        .resolve("localhost", addr)
        .cookie_store(true)
        .build()
        .unwrap();
    let r = browser
        .get(format!("{base}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let login = r.headers()["location"].to_str().unwrap().to_string();
    let form = browser
        .get(&login)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(form.contains("<h1>Sign in</h1>"), "{form}");
    let csrf = crate::pages::input_value(&form, "csrf").unwrap();
    let rd = crate::pages::input_value(&form, "rd").unwrap();
    let r = browser
        .post(format!("{base}/auth/ui/login"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("rd", rd.as_str()),
            ("login", "new@example.com"),
            ("password", pw),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let page = browser
        .get(format!("{base}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Hello, new@example.com"), "{page}");
    assert!(page.contains("/auth/ui/devices"), "{page}");
    assert!(dir.join("data/authgate.db").exists(), "store under data/");
    assert!(
        std::fs::read_dir(dir.join("data/outbox")).unwrap().count() >= 1,
        "mail in the outbox"
    );

    // The audit trail: a failed sign-in is logged with the request's id, client IP and user
    // agent, counted in /metrics, and no password appears anywhere in the log.
    let wrong = "a wrong but memorable guess";
    let r = client
        .post(format!("{base}/auth/login"))
        .header("user-agent", "audit-test-agent/1.0")
        .json(&json!({"login": "new@example.com", "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_audit_events_total{event=\"login_failed\"} 1"),
        "{metrics}"
    );
    assert!(
        // Two sign-ins: the API's and the login page's.
        metrics.contains("authgate_audit_events_total{event=\"login\"} 2"),
        "{metrics}"
    );
    let mut log = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), d.log.recv()).await
    {
        log.push(line);
    }
    let failed = log
        .iter()
        .find(|l| l.contains("login_failed"))
        .expect("audit line for the failed login");
    for want in ["audit", "client=127.0.0.1", "audit-test-agent/1.0", "id="] {
        assert!(failed.contains(want), "{want} missing in: {failed}");
    }
    assert!(
        !log.iter().any(|l| l.contains(pw) || l.contains(wrong)),
        "a password reached the log"
    );
}

/// A neighbour that keeps every core busy (the application on the same machine, a backup, a
/// build) once starved the SCHED_IDLE hashing threads completely: every sign-in ended in 503.
/// On defaults, sign-ins now still go through beside one.
#[tokio::test]
async fn sign_ins_on_defaults_go_through_beside_a_busy_neighbour() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _busy: Vec<tokio::process::Child> = (0..cores)
        .map(|_| {
            tokio::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut d = Defaults::start().await;
    for i in 0..3 {
        let v = d
            .sign_up_and_in(
                &format!("busy{i}@example.com"),
                "correct horse battery staple",
            )
            .await;
        assert!(v["data"]["access_token"].is_string(), "{v}");
    }
}
