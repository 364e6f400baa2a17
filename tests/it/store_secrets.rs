//! What a copy of the store gives away: nothing usable. The store's files are its user's
//! alone, and the keys that protect its codes and tokens live outside it (keys_dir, or
//! tokens.secret_key), so a backup of the store or a dump of its database yields no code,
//! no refresh token and no signing key.

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use serde_json::json;

const PW: &str = "correct horse battery staple";

/// Copies a directory tree (a store backup).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The audit decrypted a live refresh token from a copy of the sled files, with the seal key
/// kept beside it. A gateway started on a copy of the store, without the keys, can use none
/// of the victim's tokens; the original, with its keys, still can.
#[tokio::test]
async fn a_copy_of_the_store_alone_yields_no_usable_token() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "v@example.com", "password": PW}),
    )
    .await;
    let first = login(&gw, "v@example.com", PW).await;
    // One rotation: the store now also holds the next token, sealed, for the grace window.
    let (status, v) = gw
        .post(
            "/auth/token/refresh",
            json!({"refresh_token": first["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let refresh = v["data"]["refresh_token"].as_str().unwrap().to_string();
    let access = v["data"]["access_token"].as_str().unwrap().to_string();
    let dir = gw.stop_keep_dir().await;

    // The backup: the store only.
    let stolen = tempfile::tempdir().unwrap();
    copy_tree(&dir.path().join("db"), &stolen.path().join("db"));
    // No key of any kind is in it.
    let store = authgate::store::Store::open(&stolen.path().join("db"), 8 << 20).unwrap();
    let export = store.export().await.unwrap();
    assert!(export.signing_keys.is_empty());
    let sealed = export
        .sessions
        .iter()
        .find_map(|s| s.refresh.as_ref()?.next_sealed.clone())
        .expect("the grace-window copy is in the store");
    assert!(
        !String::from_utf8_lossy(&sealed).contains(&refresh),
        "not in the clear"
    );
    drop((store, export));
    let thief = Gateway::start_in(stolen, "", Some(&smtp), None).await;
    let (status, _) = thief
        .post("/auth/token/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401, "the copied session's refresh token");
    let (status, _) = thief
        .call(reqwest::Method::GET, "/auth/me", &access, None)
        .await;
    assert_eq!(status, 401, "the access token");
    thief.stop().await;

    // With its keys, the deployment itself goes on.
    let gw = Gateway::start_in(dir, "", Some(&smtp), None).await;
    let (status, v) = gw
        .post("/auth/token/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 200, "{v}");
    gw.stop().await;
}

/// The binary keeps the store, the outbox and the keys to its own user: directories 0700,
/// files 0600.
#[cfg(unix)]
#[tokio::test]
async fn the_store_outbox_and_keys_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), "").await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/auth/register", gw.addr))
        .json(&json!({"email": "modes@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The mail is written off the request path: wait for it.
    let outbox = dir.path().join("outbox");
    for _ in 0..200 {
        if std::fs::read_dir(&outbox).is_ok_and(|d| d.count() > 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(gw);
    fn check(path: &std::path::Path, bad: &mut Vec<String>) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode & 0o077 != 0 || (meta.is_file() && mode != want) {
            bad.push(format!("{} {mode:o}", path.display()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(path).unwrap() {
                check(&e.unwrap().path(), bad);
            }
        }
    }
    let mut bad = Vec::new();
    for sub in ["db", "outbox", "keys"] {
        check(&dir.path().join(sub), &mut bad);
    }
    assert!(bad.is_empty(), "readable by others: {bad:?}");
    assert!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count()
            >= 1,
        "a mail was written"
    );
    assert!(dir.path().join("keys/secrets.key").exists());
}

/// A store written by a build that kept its secrets inside it loses them on the first start
/// of this one (codes sent just before the upgrade must be asked for again).
#[tokio::test]
async fn an_upgrade_takes_the_old_secrets_out_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = sled::open(&path).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(b"schema_version", &1u32.to_be_bytes()).unwrap();
        meta.insert(b"secret:otp-hmac", &[7u8; 32]).unwrap();
        meta.insert(b"secret:refresh-seal", &[8u8; 32]).unwrap();
        db.flush().unwrap();
    }
    // sled's flusher thread lets go of the file lock a moment after the last handle drops:
    // each open waits for it, as a restarted process would find it free.
    let store = until_unlocked(|| authgate::store::Store::open(&path, 8 << 20)).await;
    drop(store);
    let db = until_unlocked(|| sled::open(&path)).await;
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(meta.scan_prefix(b"secret:").count(), 0);
    assert!(meta.get(b"schema_version").unwrap().is_some());
}
