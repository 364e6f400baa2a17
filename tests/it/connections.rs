//! Connections that hold a slot without asking for anything: silent after the handshake,
//! idle HTTP/2 kept alive by PINGs, many from one address. Each must be closed or refused,
//! or a few clients lock everyone else out.

use crate::harness::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until the peer closes; how long that took (panics after `limit`).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

const TIMEOUTS: &str = "header_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n";

/// A client that completes the TLS handshake and then says nothing is closed once the first
/// request's deadline (`header_read_timeout`, from the end of the handshake) has passed;
/// plain HTTP counts from accept. Before, the protocol sniffing waited for ever.
#[tokio::test]
async fn a_connection_silent_after_the_handshake_is_closed() {
    let up = Upstream::start().await;
    let route = format!(
        "[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    );
    let gw = Gateway::start(&format!("[server]\n{TIMEOUTS}{route}")).await;
    for alpn in [&b"h2"[..], b"http/1.1", b""] {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let protocols: Vec<&[u8]> = if alpn.is_empty() { vec![] } else { vec![alpn] };
        let mut tls = tokio_rustls::TlsConnector::from(rustls_client(&gw.cert_pem, &protocols))
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .expect("handshake");
        let took = closed_within(&mut tls, Duration::from_secs(15)).await;
        assert!(
            took >= Duration::from_millis(500),
            "closed too early: {took:?}"
        );
    }
    gw.stop().await;

    let plain = Gateway::start(&format!("[server]\ntls = false\n{TIMEOUTS}{route}")).await;
    let mut tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    closed_within(&mut tcp, Duration::from_secs(15)).await;
    // A prefix of the HTTP/2 preface, then silence: the sniffing that waits for the rest is
    // bounded too.
    let mut tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    tcp.write_all(b"PRI * HT").await.unwrap();
    closed_within(&mut tcp, Duration::from_secs(15)).await;
    plain.stop().await;
}

/// An HTTP/2 connection with no open stream is closed after `idle_timeout`, though its
/// client answers every PING; one with a request in flight is not.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_though_it_answers_pings() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[server]\n{TIMEOUTS}[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(rustls_client(&gw.cert_pem, &[b"h2"]))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            // The client pings too, and answers the server's: the connection is never silent.
            .keep_alive_interval(Duration::from_millis(300))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // A request that lasts longer than the idle timeout keeps the connection.
    let req = http::Request::get(format!("https://127.0.0.1:{}/slow?ms=3000", gw.addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .expect("a slow request in flight is not cut");
    assert_eq!(resp.status(), 200);
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(
        ended.is_ok(),
        "idle HTTP/2 connection still open after 15 s"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "closed before its idle timeout"
    );
    gw.stop().await;
}

/// One address may hold `max_connections_per_ip` connections; more are closed at once, and
/// a freed slot can be used again. Trusted proxies are not counted.
#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let up = Upstream::start().await;
    let route = format!(
        "[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    );
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\nmax_connections_per_ip = 3\n{route}"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    // Give the accept loop the three first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let took = closed_within(&mut fourth, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_millis(900),
        "refused at once, not after a timeout: {took:?}"
    );
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = raw_get(gw.addr, "/x", "").await;
    assert_eq!(r.status, 200, "a freed slot serves again");
    gw.stop().await;

    let gw = Gateway::start(&format!(
        "[server]\ntls = false\nmax_connections_per_ip = 3\ntrusted_proxies = [\"127.0.0.1/32\"]\n{route}"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = raw_get(gw.addr, "/x", "").await;
    assert_eq!(r.status, 200, "a trusted proxy is not capped");
    gw.stop().await;
}
