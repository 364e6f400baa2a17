//! Listeners: accept loop, TLS handshake with a deadline, connection cap, HTTP/1.1 + HTTP/2
//! by ALPN (see [`Protocols`]), and graceful drain on shutdown. What they serve is
//! wired in [`crate::wiring`]; what runs beside them, in [`crate::upkeep`].

use crate::config::Config;
use crate::connections::{Activity, Counted, Deadlines, PerIp};
use crate::http::{self as gw, App, ConnInfo};
use crate::metrics::Metrics;
use crate::tls;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::upkeep::spawn_upkeep;
use crate::wiring::serving_threads;
pub use crate::wiring::{Deps, StartError, build_app, open_store};

/// A started gateway: its bound addresses, and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub redirect_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Begins a graceful shutdown: stop accepting, let in-flight requests finish.
    pub fn shutdown(&self) {
        self.app.start_draining();
        self.shutdown.cancel();
    }

    /// A token that, when cancelled, shuts the gateway down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every listener has stopped and drained (or its grace period ran out).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// How long a connection closed for idleness may take to finish what it has, before it is
/// cut (a client can keep a graceful close from ever completing).
const IDLE_DRAIN: Duration = Duration::from_secs(10);

/// Knobs shared by the accept loops.
#[derive(Debug, Clone)]
struct Limits {
    handshake_timeout: Duration,
    grace: Duration,
    connections: Arc<Semaphore>,
    /// Connections per client address (trusted proxies are not counted).
    per_ip: Arc<PerIp>,
    trusted: crate::http::client_ip::TrustedProxies,
    deadlines: Deadlines,
}

/// Binds every listener and starts serving. Returns once the sockets are bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, Deps::default()).await
}

/// [`start`] with injected dependencies.
pub async fn start_with(mut config: Config, deps: Deps) -> Result<Running, StartError> {
    if config.server.demo_upstream && config.routes.is_empty() {
        let addr = crate::demo::start(config.server.auth_prefix.to_string())
            .await
            .map_err(|source| StartError::Bind {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            })?;
        let upstream =
            url::Url::parse(&format!("http://{addr}/")).map_err(|e| StartError::Bind {
                addr,
                source: std::io::Error::other(e.to_string()),
            })?;
        config.routes.push(crate::config::RouteConfig {
            name: Some("demo".into()),
            host: None,
            path_prefix: "/".into(),
            upstream,
            // Protected, so that opening the gateway's address shows its login page first.
            access: crate::config::Access::Authenticated,
            roles: Vec::new(),
            mfa: false,
            methods: Vec::new(),
            strip_prefix: false,
            preserve_host: true,
        });
        tracing::info!(%addr, "no routes configured: serving the bundled demo application at /");
    }
    let config = Arc::new(config);
    let s = &config.server;
    let acceptor = if s.tls {
        let (cert, key, may_generate) = s.tls_files();
        if may_generate && tls::ensure_dev_certificate(&cert, &key)? {
            tracing::warn!(cert = %cert.display(), "made a self-signed development certificate; configure server.tls_cert and server.tls_key for production");
        }
        Some(TlsAcceptor::from(tls::server_config(&cert, &key)?))
    } else {
        None
    };
    let metrics = Metrics::new();
    let app = build_app(config.clone(), &deps, &metrics).await?;

    let shutdown = CancellationToken::new();
    if app.accounts.store().is_shared() && app.config.rate_limit.instances <= 1 {
        tracing::warn!(
            "store.backend is postgres and rate_limit.instances is 1: with several instances \
             each enforces the whole quota, so the deployment allows that many times more; set \
             rate_limit.instances to the number of instances"
        );
    }
    spawn_upkeep(app.clone(), shutdown.clone());
    let limits = Limits {
        handshake_timeout: s.handshake_timeout,
        grace: s.shutdown_grace,
        connections: Arc::new(Semaphore::new(s.max_connections.get())),
        per_ip: PerIp::new(s.max_connections_per_ip.get()),
        trusted: app.trusted.clone(),
        deadlines: Deadlines {
            first: s.header_read_timeout,
            idle: s.idle_timeout,
            send: s.send_timeout,
            drain: IDLE_DRAIN,
        },
    };
    let builder = Arc::new(Protocols::new(&config));
    let mut tasks = JoinSet::new();

    // Thread per core: each serving thread has a current-thread runtime, its own listener on
    // the shared port (SO_REUSEPORT: the kernel spreads connections) and its own upstream
    // pool, so a request never changes threads. The first socket picks the port (0 = any).
    let first = bind_reuseport(s.listen)?;
    let addr = first.local_addr().map_err(|source| StartError::Bind {
        addr: s.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..serving_threads() {
        listeners.push(bind_reuseport(addr)?);
    }
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    for (worker, listener) in listeners.into_iter().enumerate() {
        let upstreams = app.proxy.upstreams().clone();
        let app = app.clone();
        let make = move |conn: ConnInfo| {
            let app = app.clone();
            service_fn(move |req| {
                let app = app.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(gw::handle(app, conn, req).await) }
            })
        };
        let (acceptor, builder, limits, shutdown, metrics) = (
            acceptor.clone(),
            builder.clone(),
            limits.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        tasks.spawn(spawn_worker(worker, listener, move |listener| {
            tokio::spawn(upstreams.sweep_forever(worker));
            accept_loop(
                listener, acceptor, scheme, worker, builder, make, limits, shutdown, metrics,
            )
        })?);
    }
    tracing::info!(%addr, scheme, "listening");
    tracing::info!(
        "open {}/ in a browser (public_url)",
        config.server.public_url.as_str().trim_end_matches('/')
    );

    let metrics_addr = match s.metrics_listen {
        Some(want) => {
            let listener = bind(want).await?;
            let bound = local_addr(&listener, want)?;
            let m = metrics.clone();
            let make = move |_conn: ConnInfo| {
                let m = m.clone();
                service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let resp = if req.uri().path() == "/metrics" {
                        gw::ops_metrics(&m)
                    } else {
                        crate::http::error::ApiError::not_found().into_response()
                    };
                    async move { Ok::<_, Infallible>(resp) }
                })
            };
            tasks.spawn(accept_loop(
                listener,
                None,
                "http",
                0,
                builder.clone(),
                make,
                limits.clone(),
                shutdown.clone(),
                metrics.clone(),
            ));
            tracing::info!(addr = %bound, "metrics listening");
            Some(bound)
        }
        None => None,
    };

    let redirect_addr = match s.redirect_http_listen {
        Some(want) => {
            let listener = bind(want).await?;
            let bound = local_addr(&listener, want)?;
            let public = s.public_url.clone();
            let make = move |_conn: ConnInfo| {
                let public = public.clone();
                service_fn(move |req| {
                    let resp = gw::redirect_to_https(&public, &req);
                    async move { Ok::<_, Infallible>(resp) }
                })
            };
            tasks.spawn(accept_loop(
                listener,
                None,
                "http",
                0,
                builder.clone(),
                make,
                limits.clone(),
                shutdown.clone(),
                metrics.clone(),
            ));
            tracing::info!(addr = %bound, to = %s.public_url, "redirecting plain HTTP");
            Some(bound)
        }
        None => None,
    };

    // Draining starts with the token, whoever cancels it (signal handler or a test).
    {
        let app = app.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            app.start_draining();
        });
    }

    Ok(Running {
        addr,
        metrics_addr,
        redirect_addr,
        app,
        shutdown,
        tasks,
    })
}

/// Runs until `signal` resolves, then shuts down gracefully.
pub async fn run_until(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// How each connection is served. Where the protocol is already known (ALPN on TLS; a plain
/// listener without `server.h2c`), hyper's own HTTP/1 or HTTP/2 connection serves it:
/// hyper-util's auto builder reads the first bytes to sniff the protocol and then reads
/// through a rewind wrapper for the connection's whole life, which cost 2.7% of the
/// instructions of a proxied request. It serves only where both protocols must be told apart
/// (h2c beside HTTP/1.1 on a plain listener).
#[derive(Debug)]
pub(crate) struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
    h2c: bool,
}

/// Why a connection ended early, whichever connection type served it.
type ConnError = Box<dyn std::error::Error + Send + Sync>;

impl Protocols {
    fn new(config: &Config) -> Self {
        let s = &config.server;
        // hyper's own read-buffer cap is a backstop above our header limit (which answers
        // 431 with the envelope); hyper refuses a value under 8 KiB.
        let hard_cap = (s.max_header_bytes + 8 * 1024).max(8 * 1024 + 1);
        let max_headers = s.max_headers.get() + 16;
        let header_list = u32::try_from(hard_cap).unwrap_or(u32::MAX);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_buf_size(hard_cap)
            .max_headers(max_headers)
            .keep_alive(true);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(s.h2_max_concurrent_streams)
            .max_header_list_size(header_list)
            // Guards against rapid-reset (CVE-2023-44487) style floods.
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        // The same settings, for the one case that sniffs.
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_buf_size(hard_cap)
            .max_headers(max_headers)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(s.h2_max_concurrent_streams)
            .max_header_list_size(header_list)
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols {
            http1,
            http2,
            auto,
            h2c: s.h2c,
        }
    }

    /// Serves one connection until it ends (see [`crate::connections::drive`]). `h2` says
    /// whether TLS chose HTTP/2 by ALPN; `None` is a plain connection.
    #[allow(clippy::too_many_arguments)]
    async fn serve<I, S>(
        &self,
        io: I,
        h2: Option<bool>,
        service: S,
        deadlines: Deadlines,
        shutdown: &CancellationToken,
        idle: impl FnMut(crate::connections::Closed),
    ) -> Result<(), ConnError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<gw::body::Body>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        use crate::connections::drive;
        let io = TokioIo::new(io);
        // Counted from here: for TLS, the first request's deadline starts after the handshake.
        let activity = Activity::new();
        let service = Counted::new(service, activity.clone());
        let activity = &*activity;
        match h2 {
            Some(true) => drive(
                self.http2.serve_connection(io, service),
                |c| c.graceful_shutdown(),
                activity,
                deadlines,
                shutdown,
                idle,
            )
            .await
            .map_err(Into::into),
            None if self.h2c => {
                drive(
                    self.auto.serve_connection_with_upgrades(io, service),
                    |c| c.graceful_shutdown(),
                    activity,
                    deadlines,
                    shutdown,
                    idle,
                )
                .await
            }
            Some(false) | None => drive(
                self.http1.serve_connection(io, service).with_upgrades(),
                |c| c.graceful_shutdown(),
                activity,
                deadlines,
                shutdown,
                idle,
            )
            .await
            .map_err(Into::into),
        }
    }
}

/// A listening socket that other sockets of this process may share the port with.
fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    #[cfg(unix)]
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    Ok(socket.into())
}

/// Starts serving thread `worker`: a current-thread runtime running `serve` on `listener`.
/// The returned future ends once the thread's runtime has stopped (so every connection and
/// every reference to the app it held is gone); dropping it unfinished (the [`Running`]
/// dropped, or its runtime gone) stops the thread's serving at once, as dropping the accept
/// task did when it ran on the caller's runtime.
fn spawn_worker<F, Fut>(
    worker: usize,
    listener: std::net::TcpListener,
    serve: F,
) -> Result<impl Future<Output = ()> + Send + 'static, StartError>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Worker)?;
    let listener = {
        let _enter = runtime.enter();
        let addr = listener.local_addr();
        TcpListener::from_std(listener).map_err(|source| StartError::Bind {
            addr: addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            source,
        })?
    };
    let abort = CancellationToken::new();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = abort.clone();
    std::thread::Builder::new()
        .name(format!("authgate-serve-{worker}"))
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(keep_a_timer_pending());
                tokio::select! {
                    () = serve(listener) => {},
                    () = stop.cancelled() => {},
                }
            });
            // Dropping the runtime ends whatever it still runs (upgraded tunnels, idle
            // upstream connections) before the waiter hears that the thread is done.
            drop(runtime);
            let _ = done_tx.send(());
        })
        .map_err(StartError::Worker)?;
    Ok(async move {
        let _abort = abort.drop_guard();
        let _ = done_rx.await;
    })
}

/// Keeps a timer pending on this serving thread. tokio wakes its own driver (an eventfd
/// write, then an extra trip through epoll) whenever a timer is registered earlier than the
/// driver's next wake, and with no timer pending that is every timer: between requests none
/// was, so each request's header-read timer cost two needless system calls. A near timer
/// that never stops makes every per-request timer (header read, upstream response: a
/// second or more) later than the next wake.
async fn keep_a_timer_pending() {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, want: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { addr: want, source })
}

/// Decrements the open-connections gauge however the connection task ends.
struct OpenConnection(Metrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections().dec();
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop<M, S>(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    scheme: &'static str,
    worker: usize,
    builder: Arc<Protocols>,
    make_service: M,
    limits: Limits,
    shutdown: CancellationToken,
    metrics: Metrics,
) where
    M: Fn(ConnInfo) -> S + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<gw::body::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        // Taking a permit before accepting means a full gateway stops accepting (the kernel
        // backlog holds the rest) instead of accepting and dropping.
        let permit = tokio::select! {
            p = limits.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // One address may not hold every slot; a trusted proxy speaks for many clients.
        let slot = if limits.trusted.contains(peer.ip()) {
            None
        } else {
            match limits.per_ip.acquire(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    metrics.connection_closed("per_ip");
                    tracing::debug!(%peer, "connection refused: server.max_connections_per_ip reached");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        metrics.connection_accepted();
        metrics.open_connections().inc();
        let hold = crate::connections::Hold::new(Some(permit), slot);
        let service = make_service(ConnInfo {
            peer,
            peer_ip: crate::proxy::headers::ip_value(peer.ip()),
            scheme,
            worker,
            hold: hold.clone(),
        });
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.handshake_timeout;
        let deadlines = limits.deadlines;
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _hold = hold;
            let _open = OpenConnection(metrics.clone());
            let idle = |why| {
                metrics.connection_closed(match why {
                    crate::connections::Closed::Idle => "idle",
                    crate::connections::Closed::Stalled => "stalled",
                })
            };
            let ended = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            metrics.tls_handshake_failed();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.tls_handshake_failed();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    builder
                        .serve(tls, Some(h2), service, deadlines, &shutdown, idle)
                        .await
                }
                None => {
                    builder
                        .serve(stream, None, service, deadlines, &shutdown, idle)
                        .await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.grace, "shutdown grace period ran out; closing the remaining connections");
    }
}
