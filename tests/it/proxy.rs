//! The reverse proxy through real TLS: protocols, streaming, upgrades, header rewriting,
//! path normalization and upstream failures.

use crate::harness::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;

fn routes(up: &Upstream) -> String {
    format!(
        r#"
        [[routes]]
        name = "public"
        path_prefix = "/"
        upstream = "{u}"
        access = "public"

        [[routes]]
        name = "admin"
        path_prefix = "/admin"
        upstream = "{u}"
        access = "authenticated"
        "#,
        u = up.url()
    )
}

#[tokio::test]
async fn h1_and_h2_through_tls_reach_the_upstream_as_h1() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up)).await;
    for (client, want) in [
        (
            gw.client_builder().http1_only().build().unwrap(),
            reqwest::Version::HTTP_11,
        ),
        (
            gw.client_builder().build().unwrap(),
            reqwest::Version::HTTP_2,
        ),
    ] {
        let resp = client.get(gw.url("/hello?x=1")).send().await.unwrap();
        assert_eq!(resp.version(), want, "ALPN picks the client's protocol");
        assert_eq!(resp.status(), 200);
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["path"], "/hello?x=1");
        assert_eq!(
            echo["version"], "HTTP/1.1",
            "upstream is spoken to in HTTP/1.1"
        );
    }
    gw.stop().await;
}

/// Runs the real binary as its own process, so its memory is measured alone (VmHWM: the
/// peak resident set), while 256 MiB go up and 256 MiB come down through it.
#[tokio::test]
async fn streamed_upload_and_download_keep_memory_bounded() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(
        dir.path(),
        &format!(
            "[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
            up.url()
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    // Warm up: connection pools, first allocations, and the start-up work (the dummy
    // password hash, which an unknown sign-in waits for).
    assert_eq!(
        client
            .get(format!("{base}/warm"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"login": "nobody@example.com", "password": "not a real one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Peaks compared: what streaming adds on top of the highest the gateway had reached.
    let before = gw.mem("VmHWM");

    let chunk = bytes::Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = client
        .post(format!("{base}/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["bytes"], SIZE, "every byte reached the upstream");

    let mut resp = client
        .get(format!("{base}/stream?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got: u64 = 0;
    while let Some(c) = resp.chunk().await.unwrap() {
        got += c.len() as u64;
    }
    assert_eq!(got, SIZE);

    let peak = gw.mem("VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "streamed 2 x {} MiB; gateway peak RSS {} KiB before, {} KiB after",
        SIZE >> 20,
        before / 1024,
        peak / 1024
    );
    // Buffering either transfer whole would add 256 MiB; streaming adds a few buffers.
    assert!(
        growth < 16 * 1024 * 1024,
        "gateway peak RSS grew by {} MiB",
        growth / (1024 * 1024)
    );
}

#[tokio::test]
async fn websocket_is_tunnelled() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(rustls_client(&gw.cert_pem, &[b"http/1.1"]))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/ws", gw.addr.port());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("ping {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!("[server]\ntls = false\n{}", routes(&up))).await;
    let r = raw_request(
        gw.addr,
        "GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close, X-Hop-Secret\r\nX-Hop-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    for gone in ["x-hop-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["x-kept"][0], "yes");

    let r = raw_get(gw.addr, "/hop", "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-up-hop").is_none(),
        "upstream's Connection-named header leaked: {}",
        r.head
    );
    assert!(r.header("keep-alive").is_none(), "{}", r.head);
    assert_eq!(r.header("x-up-kept"), Some("yes"));
    gw.stop().await;
}

#[tokio::test]
async fn forwarding_headers_are_set_and_spoofs_replaced() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up)).await;
    let resp = gw
        .client
        .get(gw.url("/echo"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-host", "evil.example")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "forged-id")
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let echo: serde_json::Value = resp.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!([format!("127.0.0.1:{}", gw.addr.port())])
    );
    assert_eq!(h["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert!(h.get("forwarded").is_none());
    assert_ne!(
        rid, "forged-id",
        "an untrusted client cannot choose the request id"
    );
    assert_eq!(
        h["x-request-id"],
        serde_json::json!([rid]),
        "upstream and client see the same id"
    );
    gw.stop().await;
}

#[tokio::test]
async fn trusted_proxy_forwarding_is_kept() {
    let up = Upstream::start().await;
    let toml = format!(
        "[server]\ntls = false\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
        routes(&up)
    );
    let gw = Gateway::start(&toml).await;
    let r = raw_get(
        gw.addr,
        "/echo",
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Request-Id: front-42\r\n",
    )
    .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-real-ip"][0], "203.0.113.7");
    assert_eq!(h["x-forwarded-proto"][0], "https");
    assert_eq!(h["x-request-id"][0], "front-42");
    gw.stop().await;
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let toml = format!(
        "[identity_headers]\naccess_token = \"X-Auth-Token\"\n{}",
        routes(&up)
    );
    let gw = Gateway::start(&toml).await;
    let mut req = gw.client.get(gw.url("/public/page"));
    for name in [
        "X-Auth-User-Id",
        "X-Auth-User-Email",
        "X-Auth-User-Name",
        "X-Auth-User-Roles",
        "X-Auth-Session-Id",
        "X-Auth-Token",
        "x-auth-user-id",
        "X_Auth_User_Id",
        "x_auth-user_roles",
    ] {
        req = req.header(name, "admin");
    }
    let echo: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    let h = echo["headers"].as_object().unwrap();
    let leaked: Vec<_> = h
        .keys()
        .filter(|k| k.starts_with("x-auth") || k.starts_with("x_auth"))
        .collect();
    assert!(
        leaked.is_empty(),
        "identity headers reached the upstream: {leaked:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn path_normalization_table() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!("[server]\ntls = false\n{}", routes(&up))).await;
    // (request target, status, path the upstream saw)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/a/b", 200, Some("/a/b")),
        ("/public/../x", 200, Some("/x")),
        ("/public/./x", 200, Some("/public/x")),
        ("//x//y", 200, Some("/x/y")),
        ("/x/", 200, Some("/x/")),
        ("/%61%62c", 200, Some("/abc")),
        ("/a%20b", 200, Some("/a%20b")),
        ("/a%3fb?q=1", 200, Some("/a%3Fb?q=1")),
        ("/x?a=/../admin", 200, Some("/x?a=/../admin")),
        ("/a;v=1", 400, None),
        ("/admin;x/panel", 400, None),
        ("/a%3bb", 200, Some("/a%3Bb")),
        ("/ADMIN/panel", 401, None),
        ("/admin", 401, None),
        ("/admin/", 401, None),
        ("/public/../admin", 401, None),
        ("/public/%2e%2e/admin", 401, None),
        ("/public/%2E%2E/admin/x", 401, None),
        ("//admin", 401, None),
        ("/./admin", 401, None),
        ("/%61dmin", 401, None),
        ("/adminx", 200, Some("/adminx")),
        ("/public/..;/admin", 400, None),
        ("/a%2fb", 400, None),
        ("/a%2Fadmin", 400, None),
        ("/a%5cb", 400, None),
        ("/..", 400, None),
        ("/../etc/passwd", 400, None),
        ("/%2e%2e/etc/passwd", 400, None),
        ("/a%00b", 400, None),
        ("/a%zz", 400, None),
        ("/a\\b", 400, None),
    ];
    for (target, status, seen) in cases {
        let r = raw_get(gw.addr, target, "").await;
        assert_eq!(r.status, *status, "{target}: {}", r.head);
        match seen {
            Some(p) => assert_eq!(r.json()["path"], *p, "{target}"),
            None if r.status != 400 || !r.body.is_empty() => {
                let v = r.json();
                assert_eq!(
                    v["status"], "error",
                    "{target}: envelope expected, got {}",
                    r.body
                );
            }
            None => {}
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn unmatched_path_is_404_envelope() {
    let up = Upstream::start().await;
    let toml = format!(
        "[[routes]]\npath_prefix = \"/app\"\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let resp = gw.client.get(gw.url("/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], "NOT_FOUND");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let up = Upstream::start().await;
    let dead = dead_addr().await;
    let toml = format!(
        r#"
        [proxy]
        response_timeout = "300ms"
        [[routes]]
        name = "dead"
        path_prefix = "/dead"
        upstream = "http://{dead}"
        access = "public"
        [[routes]]
        name = "slow"
        path_prefix = "/slow"
        upstream = "{u}"
        access = "public"
        "#,
        u = up.url()
    );
    let gw = Gateway::start(&toml).await;
    let resp = gw.client.get(gw.url("/dead/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "BAD_GATEWAY");

    let resp = gw.client.get(gw.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "GATEWAY_TIMEOUT");

    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"authgate_upstream_errors_total{route="dead",kind="connect"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"authgate_upstream_errors_total{route="slow",kind="timeout"} 1"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn authenticated_route_without_identity_is_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up)).await;
    let resp = gw.client.get(gw.url("/admin/panel")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "UNAUTHENTICATED");
    gw.stop().await;
}

#[tokio::test]
async fn strip_prefix_and_upstream_base_path() {
    let up = Upstream::start().await;
    let toml = format!(
        "[[routes]]\npath_prefix = \"/api\"\nupstream = \"{}/v2/\"\naccess = \"public\"\nstrip_prefix = true\npreserve_host = false\n",
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let echo: serde_json::Value = gw
        .client
        .get(gw.url("/api/items?id=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["path"], "/v2/items?id=3");
    assert_eq!(
        echo["headers"]["host"][0],
        up.addr.to_string(),
        "preserve_host = false sends the upstream's authority"
    );
    gw.stop().await;
}

/// One client connection lands on one serving thread, whose pool keeps one upstream
/// connection busy for every kind of response: sized, chunked, empty (HEAD). A connection
/// the upstream closes is replaced without the client seeing an error, and idle ones are
/// closed after `pool_idle_timeout`.
#[tokio::test]
async fn upstream_connections_are_reused_replaced_and_closed_when_idle() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[proxy]\npool_idle_timeout = \"2s\"\n{}",
        routes(&up)
    ))
    .await;
    let client = gw.client_builder().http1_only().build().unwrap();
    let upstreams = gw.running.as_ref().unwrap().app.proxy.upstreams().clone();
    for i in 0..10 {
        let r = client
            .get(gw.url(&format!("/echo/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let r = client
            .get(gw.url("/stream?bytes=200000"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.bytes().await.unwrap().len(),
            200_000,
            "chunked body whole"
        );
        let r = client.head(gw.url("/echo")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        up.accepted(),
        1,
        "30 sequential exchanges on one upstream connection"
    );
    assert_eq!(upstreams.idle_connections(), 1);

    // The upstream closes after answering: the next request goes on a new connection.
    for _ in 0..3 {
        let r = client.get(gw.url("/close")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "closing");
        let r = client.get(gw.url("/after-close")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "a closed pooled connection is never the client's error"
        );
    }
    assert_eq!(up.accepted(), 4);

    // Idle past pool_idle_timeout (2 s; swept every second): closed by the gateway.
    let deadline = authgate::clock::monotonic() + Duration::from_secs(10);
    while upstreams.idle_connections() > 0 {
        assert!(
            authgate::clock::monotonic() < deadline,
            "idle connection kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = client.get(gw.url("/again")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.accepted(), 5);
    gw.stop().await;
}

/// An upstream that answers before it has read the whole upload keeps its connection busy
/// until the upload ends: that connection must not serve the next request meanwhile.
#[tokio::test]
async fn a_connection_still_uploading_is_not_handed_to_the_next_request() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[proxy]\nresponse_timeout = \"1s\"\n{}",
        routes(&up)
    ))
    .await;
    // One HTTP/2 connection: both requests are served by the same thread, so by its pool.
    let client = gw.client_builder().build().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let upload = tokio::spawn({
        let client = client.clone();
        let url = gw.url("/early");
        async move {
            client
                .post(url)
                .body(reqwest::Body::wrap_stream(futures_util::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
                )))
                .send()
                .await
        }
    });
    tx.send(Ok(bytes::Bytes::from_static(b"first part")))
        .await
        .unwrap();
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "early");
    // The upload goes on for three seconds; the next request must not wait for it.
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx
                .send(Ok(bytes::Bytes::from_static(b"more")))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Waiting on the busy connection would outlast the 1 s response timeout: a 504.
    for i in 0..3 {
        let r = client
            .get(gw.url(&format!("/next/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    trickle.await.unwrap();
    gw.stop().await;
}
