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

/// How busy one connection is: requests in flight, requests begun, and when it last became
/// idle. Written by the service (two atomic operations per request), read by the watchdog.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    started: AtomicUsize,
    /// Milliseconds after `base` when `in_flight` last dropped to zero.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn begin(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.idle_since_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// When the connection must have done something by, or `None` while a request is in
    /// flight. Before its first request: `first` after the connection began (the handshake
    /// is over by then); after: `idle` after its last request ended.
    fn deadline(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if self.started.load(Ordering::Relaxed) == 0 {
            return Some(self.base + first);
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.base + since + idle)
    }
}

/// The service of one connection, counting its requests into an [`Activity`].
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

impl<S, R> Service<R> for Counted<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        self.activity.begin();
        CountedFuture {
            inner: self.inner.call(req),
            guard: InFlight(self.activity.clone()),
        }
    }
}

/// Ends its request's count however the request ends (answered, or dropped unanswered).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project! {
    /// A request's future under [`Counted`].
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        guard: InFlight,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// Deadlines of a connection's watchdog.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the first request to begin (`server.header_read_timeout`).
    pub first: Duration,
    /// With no request in flight (`server.idle_timeout`).
    pub idle: Duration,
}

/// Drives `conn` until it ends, starting its graceful shutdown (`stop`) when `shutdown` is
/// cancelled or the connection has been idle past its deadline. A connection that is shut
/// down finishes the requests it has; an idle one closes at once.
pub async fn drive<C, E>(
    conn: C,
    stop: impl Fn(Pin<&mut C>),
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: &tokio_util::sync::CancellationToken,
    mut on_idle: impl FnMut(),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    // Woken once per deadline, not per request: a busy connection is looked at again one idle
    // period later.
    let mut next = Instant::now() + deadlines.first;
    loop {
        tokio::select! {
            biased;
            done = conn.as_mut() => return done,
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop(conn.as_mut());
            }
            () = tokio::time::sleep_until(next), if !stopping => {
                match activity.deadline(deadlines.first, deadlines.idle) {
                    Some(due) if due <= Instant::now() => {
                        stopping = true;
                        on_idle();
                        stop(conn.as_mut());
                    }
                    Some(due) => next = due,
                    None => next = Instant::now() + deadlines.idle,
                }
            }
        }
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
    fn deadlines_follow_activity() {
        let a = Activity::new();
        let d = |a: &Activity| a.deadline(Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(
            d(&a),
            Some(a.base + Duration::from_secs(10)),
            "first request"
        );
        a.begin();
        a.begin();
        assert_eq!(d(&a), None, "busy");
        a.end();
        assert_eq!(d(&a), None, "one still in flight");
        a.end();
        let due = d(&a).unwrap();
        assert!(
            due >= a.base + Duration::from_secs(60),
            "idle after the last one"
        );
        assert!(due <= Instant::now() + Duration::from_secs(60));
    }
}
