//! An oversized request body is answered 413 with the envelope, and the client reads that
//! answer: the connection is not closed under a client that is still sending (the kernel
//! would reset it, and the client would see no answer at all).

use crate::external::{require, require_python_module};
use crate::harness::*;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// 2 MiB of JSON for a 64 KiB limit.
fn big_json() -> Vec<u8> {
    let mut b = br#"{"email":"big@example.com","password":""#.to_vec();
    b.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    b.extend(br#""}"#);
    b
}

/// Writes the whole request first, then reads the answer, as Python's requests and curl
/// `--data-binary` do; `chunked` sends the body without a Content-Length.
async fn send_all_then_read<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, chunked: bool) -> String {
    let body = big_json();
    let head = if chunked {
        "POST /auth/register HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!(
            "POST /auth/register HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    s.write_all(head.as_bytes()).await.expect("head sent");
    if chunked {
        for piece in body.chunks(16 * 1024) {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await
                .expect("the whole body is taken");
            s.write_all(piece).await.expect("the whole body is taken");
            s.write_all(b"\r\n").await.expect("the whole body is taken");
        }
        s.write_all(b"0\r\n\r\n")
            .await
            .expect("the whole body is taken");
    } else {
        s.write_all(&body).await.expect("the whole body is taken");
    }
    s.flush().await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("an answer within 20 s")
        .expect("an answer, not a reset");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn is_413_envelope(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
}

#[tokio::test]
async fn an_oversized_body_sent_in_full_gets_its_413() {
    let plain = Gateway::start("[server]\ntls = false\n").await;
    for chunked in [false, true] {
        let tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
        is_413_envelope(&send_all_then_read(tcp, chunked).await);
    }
    // The same connection keeps serving once the rest is read.
    let mut tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    let answer = send_all_then_read(&mut tcp, false).await;
    is_413_envelope(&answer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    plain.stop().await;

    let tls = Gateway::start("").await;
    let tcp = tokio::net::TcpStream::connect(tls.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(rustls_client(&tls.cert_pem, &[b"http/1.1"]))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    is_413_envelope(&send_all_then_read(stream, false).await);

    // curl --data-binary (without `Expect: 100-continue`, which would let it wait instead).
    if let Some(curl) = require("curl", "an_oversized_body_sent_in_full_gets_its_413") {
        let file = tls.dir.path().join("big.json");
        std::fs::write(&file, big_json()).unwrap();
        let out = tokio::process::Command::new(curl)
            .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-H", "Expect:"])
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(tls.url("/auth/register"))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.ends_with("\n413"), "curl: {text}");
        assert!(text.contains("PAYLOAD_TOO_LARGE"), "curl: {text}");
    }
    // Python's requests.
    if let Some(python) =
        require_python_module("requests", "an_oversized_body_sent_in_full_gets_its_413")
    {
        let script = format!(
            "import requests, sys\nr = requests.post('{}', data=b'{{\"email\": \"' + b'x' * (2 * 1024 * 1024) + b'\"}}', headers={{'content-type': 'application/json'}}, verify=False)\nprint(r.status_code, r.json()['code'])\n",
            tls.url("/auth/register")
        );
        let out = tokio::process::Command::new(python)
            .args(["-W", "ignore", "-c", &script])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            text.trim(),
            "413 PAYLOAD_TOO_LARGE",
            "python requests: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tls.stop().await;
}
