//! What a connection may hold of the gateway: a cap per client address, and a watchdog that
//! closes a connection that has stopped asking for anything. Without them a client that
//! completes the handshake and then stays silent, or keeps an HTTP/2 connection alive by
//! answering PINGs, holds a slot forever, and enough of them lock everyone else out.

use dashmap::DashMap;
use hyper::service::Service;
use pin_project_lite::pin_project;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Open connections per client address, and the cap on them.
#[derive(Debug)]
pub struct PerIp {
    open: DashMap<IpAddr, usize>,
    cap: usize,
}

/// One connection's place under [`PerIp`]'s cap, given back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerIp {
            open: DashMap::new(),
            cap,
        })
    }

    /// A slot for a connection from `ip`, or `None` when that address already holds `cap`.
    /// IPv6 addresses count per /64, which one host usually owns whole.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = per_host(ip);
        let mut n = self.open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        drop(n);
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Addresses holding a connection now (for tests).
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.owner.open.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// What a client connection holds of the gateway (its place under `server.max_connections`
/// and under its address's cap), shared by the connection and, once it has switched to a
/// WebSocket, by the tunnel that carries on with its socket: an upgraded connection counts
/// until the tunnel ends.
#[derive(Debug)]
pub struct Hold {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _slot: Option<IpSlot>,
}

impl Hold {
    pub fn new(
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        slot: Option<IpSlot>,
    ) -> Arc<Self> {
        Arc::new(Hold {
            _permit: permit,
            _slot: slot,
        })
    }
}

pin_project! {
    /// An I/O object that notes, in milliseconds after `start`, when bytes last crossed it.
    #[derive(Debug)]
    pub struct Touched<T> {
        #[pin]
        io: T,
        moved: Arc<AtomicU64>,
        start: Instant,
    }
}

impl<T> Touched<T> {
    pub fn new(io: T, moved: Arc<AtomicU64>, start: Instant) -> Self {
        Touched { io, moved, start }
    }
}

fn touch(moved: &AtomicU64, start: Instant) {
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    moved.store(ms, Ordering::Relaxed);
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Touched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            touch(this.moved, *this.start);
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Touched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            touch(this.moved, *this.start);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

fn per_host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// How busy one connection is: requests waiting for their response head, responses still
/// streaming their body, when it last became idle, and when a response last moved. Written
/// by the service and the bodies (a few atomic operations per request), read by the
/// watchdog.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Requests whose response head is not ready yet.
    heads: AtomicUsize,
    /// Responses whose body has not ended.
    bodies: AtomicUsize,
    started: AtomicUsize,
    /// Milliseconds after `base` when nothing was left in flight.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `base` when a response last moved (its head, a frame of its body).
    moved_ms: AtomicU64,
}

/// What the watchdog finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Look again at this time.
    LookAt(Instant),
    /// Nothing asked for past its deadline: close gracefully.
    Idle,
    /// Responses under way that have not moved for `send_timeout` (a client that reads
    /// nothing, an HTTP/2 window never opened): close now.
    Stalled,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            base: crate::clock::timer_now(),
            heads: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            moved_ms: AtomicU64::new(0),
        })
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn moved(&self) {
        self.moved_ms.store(self.ms(), Ordering::Relaxed);
    }

    fn begin(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.moved();
    }

    /// A response head is ready: its body is under way now (counted first, so that the
    /// connection never looks idle in between).
    fn head_done(&self) {
        self.bodies.fetch_add(1, Ordering::Relaxed);
        self.heads.fetch_sub(1, Ordering::Relaxed);
        self.moved();
    }

    fn head_dropped(&self) {
        self.heads.fetch_sub(1, Ordering::Relaxed);
        self.maybe_idle();
    }

    fn body_done(&self) {
        self.bodies.fetch_sub(1, Ordering::Relaxed);
        self.maybe_idle();
    }

    fn maybe_idle(&self) {
        if self.heads.load(Ordering::Relaxed) + self.bodies.load(Ordering::Relaxed) == 0 {
            self.idle_since_ms.store(self.ms(), Ordering::Relaxed);
        }
    }

    /// Before its first request, a connection has `first` after it began (the handshake is
    /// over by then); idle, `idle` after its last response ended; with responses streaming
    /// and none waiting for its head, `send` after a response last moved.
    fn verdict(&self, d: &Deadlines) -> Verdict {
        let now = crate::clock::timer_now();
        let (heads, bodies) = (
            self.heads.load(Ordering::Relaxed),
            self.bodies.load(Ordering::Relaxed),
        );
        if heads > 0 {
            // Waiting on an upstream, which proxy.response_timeout bounds.
            return Verdict::LookAt(now + d.idle);
        }
        if bodies > 0 {
            let due =
                self.base + Duration::from_millis(self.moved_ms.load(Ordering::Relaxed)) + d.send;
            return if due <= now {
                Verdict::Stalled
            } else {
                Verdict::LookAt(due)
            };
        }
        let due = if self.started.load(Ordering::Relaxed) == 0 {
            self.base + d.first
        } else {
            self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)) + d.idle
        };
        if due <= now {
            Verdict::Idle
        } else {
            Verdict::LookAt(due)
        }
    }
}

/// The service of one connection, counting its requests and their responses into an
/// [`Activity`].
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Counted { inner, activity }
    }
}

impl<S, R, B> Service<R> for Counted<S>
where
    S: Service<R, Response = http::Response<B>>,
{
    type Response = http::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        self.activity.begin();
        CountedFuture {
            inner: self.inner.call(req),
            guard: Some(HeadPending(Some(self.activity.clone()))),
        }
    }
}

/// A request waiting for its response head; dropped unanswered, it is no longer counted.
#[derive(Debug)]
struct HeadPending(Option<Arc<Activity>>);

impl HeadPending {
    /// The head is ready: the count moves to the body.
    fn into_body(mut self) -> Option<BodyPending> {
        let a = self.0.take()?;
        a.head_done();
        Some(BodyPending(a))
    }
}

impl Drop for HeadPending {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.head_dropped();
        }
    }
}

/// A response body under way.
#[derive(Debug)]
struct BodyPending(Arc<Activity>);

impl Drop for BodyPending {
    fn drop(&mut self) {
        self.0.body_done();
    }
}

pin_project! {
    /// A request's future under [`Counted`].
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<HeadPending>,
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(out.map(|resp| {
            resp.map(|body| Tracked {
                body,
                guard: guard.and_then(HeadPending::into_body),
            })
        }))
    }
}

pin_project! {
    /// A response body that tells its connection's [`Activity`] when it moves and when it
    /// ends.
    #[derive(Debug)]
    pub struct Tracked<B> {
        #[pin]
        body: B,
        guard: Option<BodyPending>,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(g) = this.guard {
                    g.0.moved();
                }
            }
            // Ended (or failed): counted out now, not when hyper drops it.
            Poll::Ready(_) => drop(this.guard.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Deadlines of a connection's watchdog.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the first request to begin (`server.header_read_timeout`).
    pub first: Duration,
    /// With nothing in flight (`server.idle_timeout`).
    pub idle: Duration,
    /// For a response under way to move (`server.send_timeout`).
    pub send: Duration,
    /// For a connection told to close gracefully to finish, before it is cut.
    pub drain: Duration,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Idle,
    Stalled,
}

/// Drives `conn` until it ends. Its graceful shutdown (`stop`) starts when `shutdown` is
/// cancelled or it has been idle past its deadline, and it is cut `drain` later if it has
/// not finished by then (a client can hold a graceful close open for ever); a connection
/// whose responses have stopped moving is cut at once.
pub async fn drive<C, E>(
    conn: C,
    stop: impl Fn(Pin<&mut C>),
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: &tokio_util::sync::CancellationToken,
    mut closed: impl FnMut(Closed),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    let mut cut_at = None;
    // Woken once per deadline, not per request: a busy connection is looked at again one idle
    // period later.
    let mut next = crate::clock::timer_now() + deadlines.first;
    loop {
        tokio::select! {
            biased;
            done = conn.as_mut() => return done,
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop(conn.as_mut());
            }
            () = sleep_until_opt(cut_at), if cut_at.is_some() => return Ok(()),
            () = tokio::time::sleep_until(next), if !stopping => {
                match activity.verdict(&deadlines) {
                    Verdict::LookAt(at) => next = at,
                    Verdict::Idle => {
                        stopping = true;
                        closed(Closed::Idle);
                        stop(conn.as_mut());
                        cut_at = Some(crate::clock::timer_now() + deadlines.drain);
                    }
                    Verdict::Stalled => {
                        closed(Closed::Stalled);
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_and_release() {
        let p = PerIp::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = p.acquire(ip).unwrap();
        let b = p.acquire(ip).unwrap();
        assert!(p.acquire(ip).is_none(), "third refused");
        assert!(p.acquire("192.0.2.2".parse().unwrap()).is_some());
        drop(a);
        let c = p.acquire(ip).unwrap();
        drop((b, c));
        assert_eq!(p.addresses(), 0, "released addresses are forgotten");
        // One /64 is one host.
        let _x = p.acquire("2001:db8::1".parse().unwrap()).unwrap();
        let _y = p.acquire("2001:db8::2".parse().unwrap()).unwrap();
        assert!(p.acquire("2001:db8::3".parse().unwrap()).is_none());
    }

    #[test]
    fn verdicts_follow_activity() {
        let d = Deadlines {
            first: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            send: Duration::from_secs(30),
            drain: Duration::from_secs(5),
        };
        let a = Activity::new();
        assert_eq!(
            a.verdict(&d),
            Verdict::LookAt(a.base + d.first),
            "first request"
        );
        a.begin();
        a.begin();
        assert!(
            matches!(a.verdict(&d), Verdict::LookAt(_)),
            "waiting on heads"
        );
        a.head_done();
        a.head_dropped();
        // One body streaming: it must move within `send`.
        match a.verdict(&d) {
            Verdict::LookAt(at) => assert!(at <= crate::clock::timer_now() + d.send),
            other => panic!("{other:?}"),
        }
        a.body_done();
        match a.verdict(&d) {
            Verdict::LookAt(at) => assert!(at >= a.base + d.idle),
            other => panic!("{other:?}"),
        }
        let zero = Deadlines {
            send: Duration::ZERO,
            idle: Duration::ZERO,
            ..d
        };
        a.begin();
        a.head_done();
        assert_eq!(a.verdict(&zero), Verdict::Stalled);
        a.body_done();
        assert_eq!(a.verdict(&zero), Verdict::Idle);
    }
}
