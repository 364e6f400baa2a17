//! The admin command line on the same store as the gateway.

use crate::harness::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

fn admin(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(bin_path())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn admin_cli_manages_users_sessions_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = Binary::write_config(dir.path(), 1, "");
    let pw = "an admin passphrase of some length";
    let (ok, out) = admin(
        &config,
        &[
            "user",
            "create",
            "--email",
            "Root@Example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{pw}\n")),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("root@example.com") && out.contains("admin"),
        "{out}"
    );
    let (ok, out) = admin(
        &config,
        &["user", "create", "--email", "root@example.com"],
        None,
    );
    assert!(!ok && out.contains("already"), "duplicate refused: {out}");
    let (ok, out) = admin(
        &config,
        &["user", "create", "--email", "plain@example.com"],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = admin(&config, &["user", "list"], None);
    assert!(
        ok && out.contains("root@example.com") && out.contains("plain@example.com"),
        "{out}"
    );
    let (ok, out) = admin(
        &config,
        &[
            "user",
            "set-roles",
            "plain@example.com",
            "customer",
            "vendor",
        ],
        None,
    );
    assert!(ok && out.contains("customer,vendor"), "{out}");
    let (ok, out) = admin(&config, &["user", "block", "plain@example.com"], None);
    assert!(ok, "{out}");
    let (ok, out) = admin(&config, &["user", "block", "ghost@example.com"], None);
    assert!(!ok && out.contains("no account"), "{out}");
    let (ok, out) = admin(&config, &["keys", "rotate"], None);
    assert!(ok && out.contains("signing key"), "{out}");

    // The gateway on the same store: the admin signs in and has the role; plain is blocked.
    let gw = Binary::start(dir.path(), "").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"login": "root@example.com", "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"]["user"]["roles"], json!(["admin"]));
    let token = v["data"]["access_token"].as_str().unwrap();
    let r = client
        .get(format!("{base}/auth/admin/users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let plain = v["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "plain@example.com")
        .unwrap()
        .clone();
    assert_eq!(plain["blocked"], true);
    assert_eq!(plain["roles"], json!(["customer", "vendor"]));

    // While it runs, the store is locked: the CLI says why instead of corrupting anything.
    let (ok, out) = admin(&config, &["user", "list"], None);
    assert!(!ok && out.contains("running"), "{out}");
}
