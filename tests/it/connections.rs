//! Connections that hold a slot without asking for anything: silent after the handshake,
//! idle HTTP/2 kept alive by PINGs, many from one address. Each must be closed or refused,
//! or a few clients lock everyone else out.

use crate::harness::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until the peer closes; how long that took (panics after `limit`).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Duration {
    let start = authgate::clock::monotonic();
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

    // Plain HTTP/1.1 only, and with h2c beside it (the listener that sniffs).
    for h2c in [false, true] {
        let plain = Gateway::start(&format!(
            "[server]\ntls = false\nh2c = {h2c}\n{TIMEOUTS}{route}"
        ))
        .await;
        let mut tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
        closed_within(&mut tcp, Duration::from_secs(15)).await;
        // A prefix of the HTTP/2 preface, then silence: the sniffing that waits for the rest
        // is bounded too.
        let mut tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
        tcp.write_all(b"PRI * HT").await.unwrap();
        closed_within(&mut tcp, Duration::from_secs(15)).await;
        plain.stop().await;
    }
}

/// A plain listener speaks HTTP/2 with prior knowledge (h2c) only when `server.h2c` says so;
/// otherwise it is an HTTP/1.1 server, which refuses the preface as a bad request line.
#[tokio::test]
async fn h2c_on_a_plain_listener_only_when_switched_on() {
    let up = Upstream::start().await;
    let route = format!(
        "[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    );
    for h2c in [false, true] {
        let gw = Gateway::start(&format!("[server]\ntls = false\nh2c = {h2c}\n{route}")).await;
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let answered = h2.get(gw.url("/over-h2c")).send().await;
        if h2c {
            let r = answered.expect("served over h2c");
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 200);
        } else {
            assert!(
                answered.is_err(),
                "HTTP/2 on a plain HTTP/1.1 listener: {answered:?}"
            );
        }
        // HTTP/1.1 works on both.
        let r = reqwest::get(gw.url("/over-h1")).await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.status(), 200);
        gw.stop().await;
    }
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
    let start = authgate::clock::monotonic();
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

const SEND: &str = "header_read_timeout = \"1s\"\nidle_timeout = \"2s\"\nsend_timeout = \"2s\"\n";

/// More than any socket buffer holds.
const BIG: u64 = 1 << 30;

fn public_route(up: &Upstream) -> String {
    format!(
        "[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    )
}

/// A client that stops reading a response (its TCP window, or its HTTP/2 window, stays shut)
/// held the connection, its task and an upstream connection for as long as it liked: it is
/// cut once the response has not moved for `send_timeout`. A response that keeps moving,
/// however slowly and for however long, is not cut.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_a_slow_stream_is_not() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\n{SEND}{}",
        public_route(&up)
    ))
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(format!("GET /stream?bytes={BIG} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Read nothing past the send timeout, then whatever the buffers hold.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await {
            Err(_) => panic!("the stalled connection is still open"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n as u64,
        }
    }
    assert!(got < BIG, "the whole response was sent: {got} bytes");
    let metrics = raw_get(gw.addr, "/metrics", "").await;
    assert!(
        metrics
            .body
            .contains("authgate_connections_closed_total{reason=\"stalled\"} 1"),
        "{}",
        metrics.body
    );

    // Ten bytes over four seconds, twice the idle and the send timeouts: delivered whole.
    let r = gw
        .client
        .get(gw.url("/drip?ms=400&chunks=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "..........");
    gw.stop().await;

    // HTTP/2: the client never opens its window again.
    let gw = Gateway::start(&format!("[server]\n{SEND}{}", public_route(&up))).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(rustls_client(&gw.cert_pem, &[b"h2"]))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(300))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!(
        "https://127.0.0.1:{}/stream?bytes={BIG}",
        gw.addr.port()
    ))
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is kept and never read: its window stays shut.
    let _unread = resp;
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "a stalled HTTP/2 connection is still open");
    gw.stop().await;
}

/// A WebSocket tunnel counts under the connection limits while it lasts (it once gave its
/// place back at the upgrade), is closed when nothing crosses it for
/// `proxy.tunnel_idle_timeout`, and when the session that opened it ends.
#[tokio::test]
async fn a_tunnel_holds_its_place_and_closes_when_idle_or_signed_out() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let smtp = crate::mail::Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &format!(
            "[server]\ntls = false\nmax_connections_per_ip = 2\nidle_timeout = \"1s\"\n\
             [proxy]\ntunnel_idle_timeout = \"3s\"\n\
             [[routes]]\npath_prefix = \"/ws\"\nupstream = \"{u}\"\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"{u}\"\naccess = \"public\"\n",
            u = up.url()
        ),
        Some(&smtp),
        None,
    )
    .await;
    let pw = "correct horse battery staple";
    crate::seeds::register_verified(
        &gw,
        &smtp,
        serde_json::json!({"email": "ws@example.com", "password": pw}),
    )
    .await;
    let token = crate::seeds::login(&gw, "ws@example.com", pw).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let open = || async {
        let mut req = format!("ws://127.0.0.1:{}/ws", gw.addr.port())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        // The test client's pooled connections (from signing in) hold this address's places
        // until the gateway closes them for idleness: refused until then.
        let start = authgate::clock::monotonic();
        loop {
            let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            match tokio_tungstenite::client_async(req.clone(), tcp).await {
                Ok((ws, resp)) => {
                    assert_eq!(resp.status(), 101);
                    break ws;
                }
                Err(e) if start.elapsed() < Duration::from_secs(15) => {
                    eprintln!("websocket handshake refused ({e}); again");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("websocket handshake: {e}"),
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = open().await;
    ws.send(Message::text("hello")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(echo, Ok(Some(Ok(m))) if m.is_text()));
    // The tunnel and one more connection fill this address's two places.
    let second = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let took = closed_within(&mut third, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_millis(900),
        "refused at once: {took:?}"
    );
    drop(second);

    // Silent for the tunnel's idle timeout: closed.
    let start = authgate::clock::monotonic();
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => {}
                _ => break,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "an idle tunnel is still open");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "closed before its idle timeout: {:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        raw_get(gw.addr, "/x", "").await.status,
        200,
        "its place is free"
    );

    // Busy, but its session ends: closed.
    let mut ws = open().await;
    let r = gw
        .client
        .post(gw.url("/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let start = authgate::clock::monotonic();
    let mut open_for = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(15) {
        if ws.send(Message::text("still here")).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(m))) if m.is_text() => {}
            _ => break,
        }
        open_for = start.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the tunnel outlived its session"
    );
    eprintln!("tunnel closed {open_for:?} after its session ended");
    gw.stop().await;
}

/// One client cannot take every upstream connection: its requests under way are capped by
/// `proxy.max_requests_per_ip` (a trusted proxy's clients counted apart), an upstream's
/// connections by `proxy.max_connections_per_upstream`. Past either, 503 SERVICE_BUSY with
/// Retry-After; the places come back when the requests end.
#[tokio::test]
async fn one_client_cannot_hold_every_upstream_connection() {
    let up = Upstream::start().await;
    let slow = |gw: &Gateway, from: &'static str| {
        let r = gw
            .client
            .get(gw.url("/slow?ms=3000"))
            .header("x-forwarded-for", from)
            .send();
        async move { r.await.unwrap().status().as_u16() }
    };
    let busy = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 503, "{:?}", r.headers());
        assert!(r.headers().contains_key("retry-after"));
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "SERVICE_BUSY");
    };
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [proxy]\nmax_requests_per_ip = 2\n{}",
        public_route(&up)
    ))
    .await;
    let held = tokio::spawn({
        let (a, b) = (slow(&gw, "203.0.113.1"), slow(&gw, "203.0.113.1"));
        async move { tokio::join!(a, b) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let get = |from: &'static str| {
        gw.client
            .get(gw.url("/x"))
            .header("x-forwarded-for", from)
            .send()
    };
    busy(get("203.0.113.1").await.unwrap()).await;
    assert_eq!(
        get("203.0.113.2").await.unwrap().status(),
        200,
        "another client"
    );
    assert_eq!(held.await.unwrap(), (200, 200));
    assert_eq!(
        get("203.0.113.1").await.unwrap().status(),
        200,
        "places back"
    );
    gw.stop().await;

    let gw = Gateway::start(&format!(
        "[server]\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [proxy]\nmax_connections_per_upstream = 1\nconnect_timeout = \"1s\"\n{}",
        public_route(&up)
    ))
    .await;
    let held = tokio::spawn(slow(&gw, "203.0.113.1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = gw
        .client
        .get(gw.url("/x"))
        .header("x-forwarded-for", "203.0.113.2")
        .send()
        .await
        .unwrap();
    busy(r).await;
    assert_eq!(held.await.unwrap(), 200);
    let r = gw.client.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the connection is free again");
    gw.stop().await;

    // An upload that goes on after its answer (the upstream answered early and reads on)
    // keeps its place, and gets `response_timeout` to end before its connection is closed.
    let gw = Gateway::start(&format!(
        "[server]\ntls = false\n[proxy]\nmax_requests_per_ip = 1\nresponse_timeout = \"1s\"\n{}",
        public_route(&up)
    ))
    .await;
    let mut upload = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    upload
        .write_all(
            b"POST /early HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\nfirst bytes",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), upload.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    busy(gw.client.get(gw.url("/x")).send().await.unwrap()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = gw.client.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the stalled upload was ended");
    drop(upload);
    gw.stop().await;
}
