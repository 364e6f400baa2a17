//! Memory the gateway gives back: a hashing thread's argon2 memory (~19 MiB) is returned to
//! the allocator once sign-ins stop for `passwords.release_memory_after`, in the real binary.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn argon2_memory_is_given_back_after_a_quiet_spell() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start_env(
        dir.path(),
        "",
        // One hashing thread, so the memory one sign-up takes is all there is to give back.
        &[
            ("AUTHGATE_PASSWORDS__WORKERS", "1"),
            ("AUTHGATE_PASSWORDS__PRIORITY", "normal"),
            ("AUTHGATE_PASSWORDS__RELEASE_MEMORY_AFTER", "2s"),
            // mimalloc hands freed memory to the OS once its purge delay has passed and a
            // later operation of its arena runs; an idle process makes none. At 0 it purges
            // on the free itself, so what the gateway gives back shows in its RSS.
            ("MIMALLOC_PURGE_DELAY", "0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    // The start-up hash (the dummy for unknown logins) has been given back by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = gw.mem("VmRSS");
    // A few hashes back to back: the thread takes its memory and keeps it.
    for i in 0..3 {
        let r = client
            .post(format!("{base}/auth/register"))
            .json(&json!({"email": format!("m{i}@example.com"), "password": "correct horse battery staple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let busy = gw.mem("VmRSS");
    assert!(
        busy >= idle + 15 * MIB,
        "hashing holds its memory: idle {} MiB, busy {} MiB",
        idle / MIB,
        busy / MIB
    );
    // Quiet: the memory goes back.
    let deadline = authgate::clock::monotonic() + Duration::from_secs(20);
    loop {
        let now = gw.mem("VmRSS");
        if now + 15 * MIB <= busy {
            eprintln!(
                "RSS idle {} MiB, hashing {} MiB, quiet again {} MiB",
                idle / MIB,
                busy / MIB,
                now / MIB
            );
            break;
        }
        assert!(
            authgate::clock::monotonic() < deadline,
            "memory not given back: busy {} MiB, now {} MiB",
            busy / MIB,
            now / MIB
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
