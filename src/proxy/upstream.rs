//! Keep-alive HTTP/1.1 connections to the upstreams (TLS for `https://`), pooled per serving
//! thread and per upstream.
//!
//! Built on hyper's connection API rather than hyper-util's pooled client: the gateway knows
//! at start-up every upstream it will ever call and which thread is calling, so a pool is a
//! list indexed by (thread, upstream), never a hash of the URI's scheme and authority, and a
//! connection goes back to its list when the response body ends, with no task spawned to
//! watch it. On the proxy's hot path that halved the client's share of the instructions.

use super::ProxyError;
use crate::config::ProxyConfig;
use crate::tls::{self, TlsError};
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// Every upstream's connections, one set per serving thread.
#[derive(Debug)]
pub struct Upstreams {
    connector: HttpsConnector<HttpConnector>,
    /// Scheme and authority of each upstream, indexed by `Route::upstream`.
    origins: Vec<Uri>,
    /// Indexed by serving thread; never empty.
    threads: Vec<Arc<ThreadPool>>,
    /// Connections each upstream may have open, across threads (`proxy.max_connections_per_upstream`):
    /// clients that hold requests open (uploads that never come) cannot make the gateway
    /// open sockets to an upstream without bound.
    open: Vec<Arc<tokio::sync::Semaphore>>,
    /// How long a request waits for a connection to be allowed (`proxy.connect_timeout`).
    wait: Duration,
}

/// One serving thread's idle connections. Only that thread takes and returns them, so the
/// lock is never contended; it is there because the pool is shared through the app.
#[derive(Debug)]
struct ThreadPool {
    /// Indexed by upstream; the most recently returned connection is at the end.
    idle: Mutex<Vec<Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// How long a request body may go on after its response has ended
    /// (`proxy.response_timeout`): past it the connection is closed.
    upload_after_answer: Duration,
}

/// One connection to an upstream: what sends on it, and its I/O task, to end it early.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Incoming>,
    task: tokio::task::AbortHandle,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl Upstreams {
    pub fn new(cfg: &ProxyConfig, threads: usize, origins: Vec<Uri>) -> Result<Self, TlsError> {
        let tls = tls::client_config(cfg.upstream_ca.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let threads = (0..threads.max(1))
            .map(|_| {
                Arc::new(ThreadPool {
                    idle: Mutex::new(origins.iter().map(|_| Vec::new()).collect()),
                    max_idle: cfg.pool_max_idle_per_host,
                    idle_timeout: cfg.pool_idle_timeout,
                    upload_after_answer: cfg.response_timeout,
                })
            })
            .collect();
        let open = origins
            .iter()
            .map(|_| {
                Arc::new(tokio::sync::Semaphore::new(
                    cfg.max_connections_per_upstream.get(),
                ))
            })
            .collect();
        Ok(Upstreams {
            connector,
            origins,
            threads,
            open,
            wait: cfg.connect_timeout,
        })
    }

    /// Sends `req` (origin-form URI, Host set) to upstream `upstream` from serving thread
    /// `worker`, on an idle connection when there is one. A request that an idle connection
    /// could not take (closed by the upstream meanwhile) comes back unsent and goes on the
    /// next one, or on a new connection. Upgrade requests always get a connection of their
    /// own, which the upgrade then owns.
    pub async fn send(
        &self,
        worker: usize,
        upstream: usize,
        mut req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<ReturnOnEnd>, ProxyError> {
        let pool = self.thread(worker).ok_or(ProxyError::Connect)?;
        if !upgrade {
            while let Some(mut conn) = pool.checkout(upstream) {
                match conn.sender.try_send_request(req).await {
                    Ok(resp) => return Ok(pool.return_on_end(resp, conn, upstream)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(ProxyError::Protocol),
                    },
                }
            }
        }
        // Boxed: a connection being set up (TLS state included) is kilobytes, and inline it
        // would grow every proxied request's future by as much.
        let mut conn = Box::pin(self.connect(upstream)).await?;
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|_| ProxyError::Protocol)?;
        Ok(if upgrade {
            resp.map(ReturnOnEnd::last)
        } else {
            pool.return_on_end(resp, conn, upstream)
        })
    }

    /// A new connection, its I/O driven by a task on the calling (serving) thread.
    async fn connect(&self, upstream: usize) -> Result<Conn, ProxyError> {
        let origin = self.origins.get(upstream).ok_or(ProxyError::Connect)?;
        let open = self.open.get(upstream).ok_or(ProxyError::Connect)?.clone();
        // The connection holds its place until it closes (the task below ends).
        let place = tokio::time::timeout(self.wait, open.acquire_owned())
            .await
            .map_err(|_| ProxyError::Busy)?
            .map_err(|_| ProxyError::Busy)?;
        let io = self
            .connector
            .clone()
            .call(origin.clone())
            .await
            .map_err(|e| {
                if is_timeout(&*e) {
                    ProxyError::Timeout
                } else {
                    ProxyError::Connect
                }
            })?;
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|_| ProxyError::Connect)?;
        let task = tokio::spawn(async move {
            let _place = place;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }

    fn thread(&self, worker: usize) -> Option<&Arc<ThreadPool>> {
        // `threads` is never empty (see `new`).
        self.threads.get(worker).or_else(|| self.threads.first())
    }

    /// Closes thread `worker`'s connections idle past `pool_idle_timeout`, every half of it,
    /// so a quiet upstream does not keep sockets open forever. Runs on that thread.
    pub async fn sweep_forever(self: Arc<Self>, worker: usize) {
        let Some(pool) = self.thread(worker) else {
            return;
        };
        let period = (pool.idle_timeout / 2).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            pool.sweep(crate::clock::monotonic());
        }
    }

    /// Idle connections held across all threads (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.lock().iter().map(Vec::len).sum::<usize>())
            .sum()
    }
}

impl ThreadPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Idle>>> {
        // Nothing is left half-done under this lock: a poisoned list is still a list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used connection to `upstream` that can take a request now,
    /// dropping dead and stale ones.
    fn checkout(&self, upstream: usize) -> Option<Conn> {
        let mut idle = self.lock();
        let list = idle.get_mut(upstream)?;
        while let Some(c) = list.pop() {
            if c.conn.sender.is_ready() && c.since.elapsed() < self.idle_timeout {
                return Some(c.conn);
            }
        }
        None
    }

    /// Pools a connection whose response has been read. One still sending its request body
    /// (an upstream may answer before reading all of an upload) is pooled only once that
    /// ends, by a task that waits for it: pooled at once, it would hold the next request
    /// until the upload finished. The upload keeps the client's place (`held`) meanwhile,
    /// and gets `upload_after_answer` to finish; then the connection is closed, or a client
    /// trickling bodies after early answers would hold upstream connections for ever.
    fn put(
        self: &Arc<Self>,
        upstream: usize,
        mut conn: Conn,
        held: Option<crate::connections::IpSlot>,
    ) {
        if conn.sender.is_closed() {
            return;
        }
        if !conn.sender.is_ready() {
            // Dropped outside a runtime (at shutdown) there is nothing to wait on.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let pool = self.clone();
                rt.spawn(async move {
                    let _held = held;
                    let limit = pool.upload_after_answer;
                    match tokio::time::timeout(limit, conn.sender.ready()).await {
                        Ok(Ok(())) => pool.keep(upstream, conn),
                        Ok(Err(_)) => {}
                        Err(_) => {
                            tracing::debug!("an upload went on too long after its answer: closed");
                            conn.task.abort();
                        }
                    }
                });
            }
            return;
        }
        self.keep(upstream, conn);
    }

    fn keep(&self, upstream: usize, conn: Conn) {
        let mut idle = self.lock();
        if let Some(list) = idle.get_mut(upstream) {
            if list.len() < self.max_idle {
                list.push(Idle {
                    conn,
                    since: crate::clock::monotonic(),
                });
            }
        }
    }

    fn sweep(&self, now: Instant) {
        for list in self.lock().iter_mut() {
            list.retain(|c| !c.conn.sender.is_closed() && now - c.since < self.idle_timeout);
        }
    }

    fn return_on_end(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        conn: Conn,
        upstream: usize,
    ) -> Response<ReturnOnEnd> {
        resp.map(|body| ReturnOnEnd {
            body,
            back: Some(Back {
                pool: self.clone(),
                conn,
                upstream,
            }),
            held: None,
        })
    }
}

/// Has a connection error a timeout among its causes?
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// A proxied response body that gives its connection back to the pool once read to the
/// end. Dropped before the end (the client went away), it drops the connection instead:
/// hyper closes a connection whose response was not read out.
#[derive(Debug)]
pub struct ReturnOnEnd {
    body: Incoming,
    back: Option<Back>,
    /// The client's place under `proxy.max_requests_per_ip`, kept until the body has been
    /// sent and the request body has ended: either holds an upstream connection.
    held: Option<crate::connections::IpSlot>,
}

#[derive(Debug)]
struct Back {
    pool: Arc<ThreadPool>,
    conn: Conn,
    upstream: usize,
}

impl ReturnOnEnd {
    /// A body whose connection is not reused (an upgrade takes it over).
    fn last(body: Incoming) -> Self {
        ReturnOnEnd {
            body,
            back: None,
            held: None,
        }
    }

    /// Keeps `slot` until the body ends (or is dropped).
    pub fn holding(mut self, slot: crate::connections::IpSlot) -> Self {
        self.held = Some(slot);
        self
    }

    fn give_back(&mut self) {
        if let Some(b) = self.back.take() {
            b.pool.put(b.upstream, b.conn, self.held.take());
        }
    }
}

impl HttpBody for ReturnOnEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.give_back();
            self.held = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ReturnOnEnd {
    fn drop(&mut self) {
        // A body with a known length (or none) is often not polled past its last byte.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
