//! The listener: limits, timeouts, graceful shutdown, ops endpoints, redirects, config errors.

use crate::harness::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn public_route(up: &Upstream) -> String {
    format!(
        "[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    )
}

#[tokio::test]
async fn oversized_and_too_many_headers_get_431_envelope() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public_route(&up)).await;
    let big = "a".repeat(33 * 1024);
    let resp = gw
        .client
        .get(gw.url("/x"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "HEADERS_TOO_LARGE");

    let mut req = gw.client.get(gw.url("/x"));
    for i in 0..101 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 431);

    // The gateway keeps serving.
    assert_eq!(
        gw.client.get(gw.url("/x")).send().await.unwrap().status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn slow_header_client_is_dropped_after_the_header_timeout() {
    let up = Upstream::start().await;
    let toml = format!(
        "[server]\ntls = false\nheader_read_timeout = \"1s\"\n{}",
        public_route(&up)
    );
    let gw = Gateway::start(&toml).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = authgate::clock::monotonic();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Trickle a header one byte at a time, slower than the timeout allows in total.
    let trickle = async {
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "connection still open");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "closed only after {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        !text.contains("200 OK"),
        "the slow request must not be served: {text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn silent_tls_client_is_dropped_after_the_handshake_timeout() {
    let up = Upstream::start().await;
    let toml = format!(
        "[server]\nhandshake_timeout = \"500ms\"\n{}",
        public_route(&up)
    );
    let gw = Gateway::start(&toml).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "expected the gateway to close: {r:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public_route(&up)).await;
    let client = gw.client.clone();
    let url = gw.url("/slow?ms=1500");
    let in_flight =
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = gw.addr;
    let started = authgate::clock::monotonic();
    gw.stop().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight request completed"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn ops_endpoints() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public_route(&up)).await;
    let r = gw.client.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.client.get(gw.url("/some/page")).send().await.unwrap();
    let m = gw.client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(
        text.contains("authgate_http_requests_total{route=\"/\",class=\"2xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("authgate_open_connections"), "{text}");
    assert!(
        text.contains("authgate_http_request_duration_seconds_bucket"),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn readyz_is_503_without_routes() {
    let gw = Gateway::start("").await;
    let r = gw.client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    gw.stop().await;
}

#[tokio::test]
async fn metrics_on_their_own_listener() {
    let up = Upstream::start().await;
    let toml = format!(
        "[server]\nmetrics_listen = \"127.0.0.1:0\"\n{}",
        public_route(&up)
    );
    let gw = Gateway::start(&toml).await;
    let maddr = gw.running.as_ref().unwrap().metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{maddr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("authgate_connections_total"), "{text}");
    // Not on the main listener then: it goes to the route table like any path.
    let echo: serde_json::Value = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["path"], "/metrics");
    gw.stop().await;
}

#[tokio::test]
async fn plain_http_listener_redirects_to_https() {
    let toml = "[server]\nredirect_http_listen = \"127.0.0.1:0\"\npublic_url = \"https://gate.example:8443\"\n";
    let gw = Gateway::start(toml).await;
    let raddr = gw.running.as_ref().unwrap().redirect_addr.unwrap();
    let r = raw_get(raddr, "/some/path?q=1", "").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://gate.example:8443/some/path?q=1")
    );
    gw.stop().await;
}

#[tokio::test]
async fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let out = std::process::Command::new(bin_path())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");

    std::fs::write(&file, "[proxy]\nconect_timeout = \"1s\"\n").unwrap();
    let out = std::process::Command::new(bin_path())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxy.conect_timeout"));

    std::fs::write(&file, "[server]\ntls = false\n").unwrap();
    let out = std::process::Command::new(bin_path())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn binary_serves_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let port = dead_addr().await.port();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\ntls = false\nlisten = \"127.0.0.1:{port}\"\n{}",
            public_route(&up)
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(bin_path())
        .args(["serve", "--config"])
        .arg(&file)
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = authgate::clock::monotonic() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            authgate::clock::monotonic() < deadline,
            "binary did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(raw_get(addr, "/healthz", "").await.status, 200);
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
