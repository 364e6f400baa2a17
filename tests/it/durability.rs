//! Acknowledged writes survive `kill -9`: the real binary is killed the instant after a 201.

use crate::harness::*;
use serde_json::json;

const CONFIG: &str = "[otp]\nresend_cooldown = \"0\"\n";

#[tokio::test]
async fn registration_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), CONFIG).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "durable@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: serde_json::Value = r.json().await.unwrap();
    gw.signal("-KILL");
    let mut gw = gw;
    let status = gw.child.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited");

    // The account is in the store; the mail queue is memory and may have died with the
    // process, so ask for a new code (no cooldown in this config), verify, sign in.
    let gw = Binary::start(dir.path(), CONFIG).await;
    let base = format!("http://{}", gw.addr);
    let outbox = dir.path().join("outbox");
    let names = || -> std::collections::HashSet<std::path::PathBuf> {
        std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let before = names();
    let r = client
        .post(format!("{base}/auth/verify/resend"))
        .json(&json!({"email": "durable@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut code = None;
    // The code of the mail that the resend wrote (not one the killed process may have left).
    for _ in 0..250 {
        code = names().difference(&before).find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?.replace("=\r\n", "");
            text.lines()
                .map(str::trim)
                .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_string)
        });
        if code.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let code = code.expect("verification mail in the outbox: the account survived");
    let r = client
        .post(format!("{base}/auth/verify"))
        .json(&json!({"email": "durable@example.com", "code": code, "signup_token": reg["data"]["signup_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"login": "durable@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
