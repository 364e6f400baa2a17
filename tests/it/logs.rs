//! The log as deployed: the real binary writes its access log to a file (whatever the level),
//! never a query string or a credential, opens the file again on SIGHUP (logrotate), writes
//! out what it holds when it stops, and counts dropped access lines.

use crate::harness::*;
use std::path::Path;
use std::time::Duration;

/// Waits until the file at `path` holds `needle`, and answers its text.
async fn until_logged(path: &Path, needle: &str) -> String {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{needle:?} not in {}: {:?}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

fn access_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains(" access: ")).collect()
}

#[tokio::test]
async fn the_access_log_goes_to_its_file_and_moves_to_a_new_one_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("authgate.log");
    let extra = format!("[log]\nfile = \"{}\"\n", live.display());
    // The level at "warn" (as the harness sets it) does not turn the access log off.
    let gw = Binary::start_env(
        dir.path(),
        &extra,
        &[
            ("AUTHGATE_LOG__ACCESS", "true"),
            ("AUTHGATE_SERVER__METRICS_ON_MAIN_LISTENER", "true"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let r = client
        .get(format!("{base}/auth/me?code=123456&token=hunter2"))
        .header("authorization", "Bearer not-a-real-token-but-secret")
        .header("cookie", "__Host-authgate_access=cookie-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = until_logged(&live, "path=\"/auth/me\"").await;
    let lines = access_lines(&text);
    assert_eq!(lines.len(), 1, "one line per request: {text}");
    assert!(lines[0].contains("status=401"), "{}", lines[0]);
    assert!(lines[0].contains("method=GET"), "{}", lines[0]);
    assert!(lines[0].contains("client=127.0.0.1"), "{}", lines[0]);
    for secret in ["123456", "hunter2", "not-a-real-token", "cookie-secret"] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }

    // The dropped-lines counter is exposed (nothing dropped at this pace).
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_log_dropped_total 0"),
        "{metrics}"
    );

    // logrotate: the file is moved away, then SIGHUP. Lines until the signal stay in the
    // moved file; lines after it go to a new file of the old name.
    let rotated = dir.path().join("authgate.log.1");
    std::fs::rename(&live, &rotated).unwrap();
    client
        .get(format!("{base}/auth/me?before-hup"))
        .send()
        .await
        .unwrap();
    for _ in 0..200 {
        if access_lines(&std::fs::read_to_string(&rotated).unwrap()).len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    gw.signal("-HUP");
    let deadline = authgate::clock::monotonic() + Duration::from_secs(10);
    while !live.exists() {
        assert!(
            authgate::clock::monotonic() < deadline,
            "no new file after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = client
        .get(format!("{base}/after-rotation"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error() || r.status().is_redirection());
    let fresh = until_logged(&live, "path=\"/after-rotation\"").await;
    assert!(!fresh.contains("/metrics"), "old lines stay old: {fresh}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("/after-rotation"), "{old}");
    assert_eq!(access_lines(&old).len(), 3, "{old}");

    // The lines a stopping gateway still holds are written before it exits.
    client
        .get(format!("{base}/just-before-sigterm"))
        .send()
        .await
        .unwrap();
    gw.signal("-TERM");
    let mut gw = gw;
    let status = tokio::time::timeout(Duration::from_secs(30), gw.child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let last = std::fs::read_to_string(&live).unwrap();
    assert!(last.contains("path=\"/just-before-sigterm\""), "{last}");
}

#[tokio::test]
async fn with_the_access_log_off_warnings_are_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("authgate.log");
    // An unreachable upstream makes a warning for every request.
    let extra = format!(
        "[log]\nfile = \"{}\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{}\"\naccess = \"public\"\n",
        live.display(),
        dead_addr().await
    );
    let gw = Binary::start(dir.path(), &extra).await;
    let r = reqwest::get(format!("http://{}/app", gw.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = until_logged(&live, "upstream exchange failed").await;
    assert!(access_lines(&text).is_empty(), "{text}");
}

#[tokio::test]
async fn json_access_lines_are_json_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("authgate.log");
    let extra = format!("[log]\nformat = \"json\"\nfile = \"{}\"\n", live.display());
    let _gw = Binary::start_env(dir.path(), &extra, &[("AUTHGATE_LOG__ACCESS", "true")]).await;
    let base = format!("http://{}", _gw.addr);
    let r = reqwest::Client::new()
        .get(format!("{base}/auth/me?code=654321"))
        .header("user-agent", "quote\" and \\ backslash")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = until_logged(&live, "\"target\":\"access\"").await;
    let line = text
        .lines()
        .find(|l| l.contains("\"target\":\"access\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/auth/me");
    assert_eq!(v["status"], 401);
    assert_eq!(v["route"], "_auth");
    assert!(v["micros"].is_u64());
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["span"]["id"], id.as_str());
    assert_eq!(v["span"]["client"], "127.0.0.1");
    assert_eq!(v["span"]["ua"], "quote\" and \\ backslash");
    assert!(!text.contains("654321"));

    // A long path is cut in the line (the queue's lines stay small).
    let long = format!("/auth/{}", "x".repeat(5000));
    reqwest::get(format!("{base}{long}")).await.unwrap();
    let text = until_logged(&live, "/auth/xx").await;
    let line = text.lines().find(|l| l.contains("/auth/xx")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let path = v["path"].as_str().unwrap();
    assert_eq!(path.len(), 1024);
    assert!(long.starts_with(path));
}
