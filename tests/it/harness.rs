//! Test harness: boots the real gateway in-process on 127.0.0.1:0 with a temporary directory,
//! and a real upstream HTTP server (echo, streaming, slow, WebSocket) beside it.

#![allow(dead_code)]

use authgate::clock::ManualClock;
use authgate::config::{Config, MapSource};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running gateway with its temp dir and a client that trusts its certificate.
pub struct Gateway {
    pub running: Option<authgate::Running>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub cert_pem: Vec<u8>,
    pub tls: bool,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway from TOML; the harness sets the listen address, certificate and store
    /// paths (a test's own `[server]` keys stay, bar `listen`).
    pub async fn start(toml: &str) -> Gateway {
        Self::start_with(toml, None, None).await
    }

    /// With a real SMTP receiver for the mail, and/or a manual clock.
    pub async fn start_with(
        toml: &str,
        smtp: Option<&crate::mail::Smtp>,
        clock: Option<&ManualClock>,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, toml, smtp, clock).await
    }

    /// Starts on an existing directory (a restart on the same store).
    pub async fn start_in(
        dir: tempfile::TempDir,
        toml: &str,
        smtp: Option<&crate::mail::Smtp>,
        clock: Option<&ManualClock>,
    ) -> Gateway {
        match Self::try_start_in(dir, toml, smtp, clock).await {
            Ok(gw) => gw,
            Err((e, _)) => panic!("gateway starts: {e}"),
        }
    }

    /// [`Gateway::start_in`], handing back the error (a chosen port may be taken).
    pub async fn try_start_in(
        dir: tempfile::TempDir,
        toml: &str,
        smtp: Option<&crate::mail::Smtp>,
        clock: Option<&ManualClock>,
    ) -> Result<Gateway, (authgate::StartError, tempfile::TempDir)> {
        let mut config = Config::from_toml(toml, &MapSource::default()).expect("test config");
        // Port 0 unless the test chose one (to name it in public_url, for redirects).
        if config.server.listen.port() == 8443 {
            config.server.listen = "127.0.0.1:0".parse().unwrap();
        }
        config.store.path = dir.path().join("db");
        // A test that names a keys directory (instances sharing keys) keeps it.
        if config.tokens.keys_dir == std::path::Path::new("data/keys") {
            config.tokens.keys_dir = dir.path().join("keys");
        }
        // Tests run side by side on few cores: hashing threads at SCHED_IDLE would starve behind
        // the other tests and answer 503 after max_wait, which is the isolation the gateway
        // wants in production but noise here. Tests that mean to exercise either keep theirs.
        let defaults = authgate::config::PasswordsConfig::default();
        if config.passwords.priority == defaults.priority {
            config.passwords.priority = authgate::config::HashPriority::Normal;
        }
        if config.passwords.max_wait == defaults.max_wait {
            config.passwords.max_wait = Duration::from_secs(10);
        }
        config.mail.outbox_dir = dir.path().join("outbox");
        // Tests read the metrics where a development run has them; a test about the
        // default says so.
        if !toml.contains("metrics_on_main_listener") && config.server.metrics_listen.is_none() {
            config.server.metrics_on_main_listener = true;
        }
        if let Some(smtp) = smtp {
            config.mail.smtp_url = Some(
                format!("smtp://127.0.0.1:{}", smtp.addr.port())
                    .parse()
                    .unwrap(),
            );
            config.mail.starttls = authgate::config::StartTls::Required;
            config.mail.smtp_ca = Some(smtp.cert_path.clone());
            config.mail.timeout = Duration::from_secs(5);
        }
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        authgate::tls::ensure_dev_certificate(&cert, &key).unwrap();
        if config.server.tls_cert.is_none() {
            config.server.tls_cert = Some(cert.clone());
            config.server.tls_key = Some(key);
        }
        let tls = config.server.tls;
        let deps = match clock {
            Some(c) => authgate::Deps {
                clock: std::sync::Arc::new(c.clone()),
            },
            None => authgate::Deps::default(),
        };
        let running = match authgate::start_with(config, deps).await {
            Ok(r) => r,
            Err(e) => return Err((e, dir)),
        };
        let addr = running.addr;
        let cert_pem = std::fs::read(&cert).unwrap();
        let client = client_builder(&cert_pem).build().unwrap();
        Ok(Gateway {
            running: Some(running),
            addr,
            dir,
            cert_pem,
            tls,
            client,
        })
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    /// A fresh client builder trusting the gateway's certificate.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        client_builder(&self.cert_pem)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
    }

    /// Stops the gateway and hands back its directory (to restart on the same store).
    pub async fn stop_keep_dir(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
        // sled releases its directory lock when the last handle goes; give spawned tasks a beat.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.dir
    }

    /// POST JSON to a gateway path; returns status and the JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A request with a Bearer token; returns status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

pub fn client_builder(cert_pem: &[u8]) -> reqwest::ClientBuilder {
    authgate::tls::install_provider();
    let cert = reqwest::Certificate::from_pem(cert_pem).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
}

/// Builds a TLS client config trusting `cert_pem`, for raw TLS streams (WebSocket tests).
pub fn rustls_client(cert_pem: &[u8], alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    authgate::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(cfg)
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

type UpBody = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A real upstream HTTP/1.1 server on 127.0.0.1:0.
///
/// - any path: JSON echo of method, path+query, version and headers
/// - `/stream?bytes=N`: N bytes streamed in 64 KiB chunks
/// - `/upload`: counts the request body, answers `{"bytes": n}`
/// - `/slow?ms=N`: answers after N ms
/// - `/drip?ms=N&chunks=K`: a body of K one-byte chunks, one every N ms
/// - `/hop`: answers with hop-by-hop headers that must not reach the client
/// - `/cookies`: sets the gateway's own cookie names, and one of its own
/// - `/close`: answers, then closes the connection (`Connection: close`)
/// - `/early`: answers at once, then reads the request body to its end (a server that
///   refuses or accepts an upload before it has arrived)
/// - `/ws`: WebSocket echo
pub struct Upstream {
    pub addr: SocketAddr,
    /// Connections accepted so far: tells whether the gateway reuses its connections.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(upstream_handle);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn upstream_handle(mut req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/ws" && req.headers().contains_key(hyper::header::UPGRADE) {
        let key = req.headers().get("sec-websocket-key").cloned().unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                } else if msg.is_close() {
                    break;
                }
            }
        });
        let resp = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(full(""))
            .unwrap();
        return Ok(resp);
    }
    let resp = match path.as_str() {
        "/stream" => {
            let total = query_num(&req, "bytes");
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    Some((
                        Ok::<_, std::io::Error>(Frame::data(chunk.slice(..n as usize))),
                        left - n,
                    ))
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/drip" => {
            let every = Duration::from_millis(query_num(&req, "ms"));
            let stream =
                futures_util::stream::unfold(query_num(&req, "chunks"), move |left| async move {
                    if left == 0 {
                        return None;
                    }
                    tokio::time::sleep(every).await;
                    Some((
                        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"."))),
                        left - 1,
                    ))
                });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    n += data.len() as u64;
                }
            }
            Response::new(full(format!("{{\"bytes\":{n}}}")))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            Response::new(full("slow done"))
        }
        "/early" => {
            let mut body = req.into_body();
            tokio::spawn(async move { while body.frame().await.is_some() {} });
            Response::new(full("early"))
        }
        "/close" => Response::builder()
            .header("connection", "close")
            .body(full("closing"))
            .unwrap(),
        "/cookies" => Response::builder()
            .header(
                "set-cookie",
                "__Host-authgate-access=planted; Path=/; Secure; HttpOnly",
            )
            .header(
                "set-cookie",
                "__secure-authgate-refresh=planted; Path=/auth; Secure",
            )
            .header("set-cookie", "__Host-authgate-csrf=planted; Path=/; Secure")
            .header("set-cookie", "app_session=kept; Path=/")
            .body(full("cookies"))
            .unwrap(),
        "/hop" => Response::builder()
            .header("connection", "x-up-hop")
            .header("x-up-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-up-kept", "yes")
            .body(full("hop"))
            .unwrap(),
        _ => {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let entry = headers
                    .entry(k.as_str().to_string())
                    .or_insert_with(|| serde_json::json!([]));
                entry
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!(v.to_str().unwrap_or("<binary>")));
            }
            let echo = serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full(echo.to_string()))
                .unwrap()
        }
    };
    Ok(resp)
}

/// A raw HTTP/1.1 exchange over plain TCP, for requests a URL library would "fix" first.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

pub async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("response within 20 s")
        .unwrap();
    parse_raw(&buf)
}

pub fn parse_raw(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    RawResponse {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// GET `path` over raw TCP with `Connection: close`.
pub async fn raw_get(addr: SocketAddr, path: &str, extra_headers: &str) -> RawResponse {
    raw_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{extra_headers}\r\n"
        ),
    )
    .await
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_authgate"))
}

/// The built binary, started as its own process on a free port in `dir` (plain HTTP).
pub struct Binary {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Binary {
    /// Writes `extra` (TOML) after a `[server]` section that sets listen and tls = false, with
    /// the store, keys and outbox inside `dir`, and waits until the port accepts connections.
    pub async fn start(dir: &std::path::Path, extra: &str) -> Binary {
        Self::start_env(dir, extra, &[]).await
    }

    /// As [`Binary::start`], with environment variables set after the defaults (so they
    /// win over them): warnings only, no access log, hashing at normal priority.
    pub async fn start_env(dir: &std::path::Path, extra: &str, env: &[(&str, &str)]) -> Binary {
        let port = dead_addr().await.port();
        let file = Self::write_config(dir, port, extra);
        let child = tokio::process::Command::new(bin_path())
            .args(["serve", "--config"])
            .arg(&file)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .env("AUTHGATE_LOG__ACCESS", "false")
            // As for in-process gateways: no SCHED_IDLE starvation behind the other tests.
            .env("AUTHGATE_PASSWORDS__PRIORITY", "normal")
            .env("AUTHGATE_PASSWORDS__MAX_WAIT", "10s")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = authgate::clock::monotonic() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            assert!(
                authgate::clock::monotonic() < deadline,
                "binary did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Binary { child, addr }
    }

    /// The config file the binary runs with (also used by the admin CLI tests).
    pub fn write_config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
        let file = dir.join("authgate.toml");
        let d = dir.display();
        std::fs::write(
            &file,
            format!(
                "[server]\ntls = false\nlisten = \"127.0.0.1:{port}\"\n[store]\npath = \"{d}/db\"\ncache_mb = 16\n\
                 [tokens]\nkeys_dir = \"{d}/keys\"\n[mail]\noutbox_dir = \"{d}/outbox\"\n{extra}"
            ),
        )
        .unwrap();
        file
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// A /proc/<pid>/status field in bytes (VmRSS, VmHWM).
    pub fn mem(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

/// The code in the newest .eml of an outbox directory that was sent to `to`.
pub fn outbox_code(dir: &std::path::Path, to: &str) -> Option<String> {
    let mut mails: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.metadata().ok()?.modified().ok()?, text))
        })
        .filter(|(_, t)| t.contains(to))
        .collect();
    mails.sort_by_key(|(t, _)| *t);
    let text = mails.last()?.1.replace("=\r\n", "");
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

/// `open()`, again while the store's file lock is still held by a handle being dropped (at
/// most 10 s).
pub async fn until_unlocked<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = authgate::clock::monotonic() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e)
                if authgate::clock::monotonic() < deadline && format!("{e:?}").contains("lock") =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot open the store: {e:?}"),
        }
    }
}
