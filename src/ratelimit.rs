//! Rate limits (governor): keyed GCRA limiters per client IP and per account or recipient, one
//! set per endpoint class, each with one or more buckets (a burst and a slower sustained rate).
//! Time comes from the injected clock, so tests move it instead of sleeping.
//!
//! Memory is bounded: idle keys are purged periodically (`retain_recent`), IPv6 clients are
//! keyed by their /64 (one host gets a /64, so per-address keys would be free to mint), and a
//! limiter that holds `max_keys` keys takes no new key: keys it already tracks are served as
//! before, and new ones share a coarser bucket (their network, or a hash of the account)
//! with ten times the quota until a purge makes room. A flood of distinct clients then
//! slows newcomers; it no longer locks everyone out.

use crate::clock::SharedClock;
use crate::config::{Rate, RateLimitConfig};
use crate::metrics::Metrics;
use governor::clock::Clock as _;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// governor's view of our clock: time since the limiter set was made.
#[derive(Debug, Clone)]
struct GovClock {
    clock: SharedClock,
    epoch: OffsetDateTime,
}

impl governor::clock::Clock for GovClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::try_from(self.clock.now() - self.epoch).unwrap_or(Duration::ZERO)
    }
}

type Limiter<K> = RateLimiter<K, Tracked<K>, GovClock, StateInformationMiddleware>;

/// governor's DashMap state store, shared with us so that we can ask whether a key is known
/// (governor has no such call): a full limiter still serves the keys it tracks.
struct Tracked<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for Tracked<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        StateStore::measure_and_replace(&*self.0, key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Tracked<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The coarser key a new key shares a bucket under while its limiter is full: bounded in
/// number (at most 2^17), so the overflow buckets cannot grow without bound either.
trait Coarse {
    fn coarse(&self) -> u32;
}

impl Coarse for IpAddr {
    /// An IPv4 client's /16, an IPv6 client's /32 folded into 2^16 values.
    fn coarse(&self) -> u32 {
        match self {
            IpAddr::V4(v4) => u32::from(v4.octets()[0]) << 8 | u32::from(v4.octets()[1]),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                (1 << 16) | (u32::from(s[0] ^ s[1]))
            }
        }
    }
}

impl Coarse for String {
    fn coarse(&self) -> u32 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(self);
        (h & 0xffff) as u32
    }
}

/// The endpoint classes with their own quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Login,
    CodeVerify,
    CodeSend,
    Refresh,
    Proxy,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Login => "login",
            Class::CodeVerify => "code_verify",
            Class::CodeSend => "code_send",
            Class::Refresh => "refresh",
            Class::Proxy => "proxy",
        }
    }
}

/// A refusal: what the client is told in `Retry-After` and the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub class: Class,
    pub limit: u32,
    pub retry_after: Duration,
}

struct Bucket<K: Hash + Eq + Clone> {
    rate: Rate,
    limiter: Limiter<K>,
    /// The limiter's keys, to tell a known one from a new one.
    known: Arc<DashMapStateStore<K>>,
    /// New keys while the limiter is full, by their coarser key.
    overflow: Limiter<u32>,
}

/// One class's limiters for one kind of key, each a bucket.
struct Buckets<K: Hash + Eq + Clone> {
    buckets: Vec<Bucket<K>>,
    max_keys: usize,
    last_purge: AtomicI64,
    clock: SharedClock,
}

/// A limiter of `quota` over the store `known`.
fn limiter<K: Hash + Eq + Clone>(
    quota: Quota,
    known: &Arc<DashMapStateStore<K>>,
    clock: &GovClock,
) -> Limiter<K> {
    RateLimiter::<K, _, _, governor::middleware::NoOpMiddleware<Duration>>::new(
        quota,
        Tracked(known.clone()),
        clock.clone(),
    )
    .with_middleware::<StateInformationMiddleware>()
}

/// How much more a coarser overflow bucket allows than one key's.
const OVERFLOW_FACTOR: u32 = 10;

impl<K: Hash + Eq + Clone + Coarse> Buckets<K> {
    fn new(rates: &[Rate], clock: &GovClock, max_keys: usize) -> Self {
        let buckets = rates
            .iter()
            .filter_map(|r| {
                let burst = NonZeroU32::new(r.count)?;
                let quota = Quota::with_period(r.per / r.count)?.allow_burst(burst);
                let wide = NonZeroU32::new(r.count.saturating_mul(OVERFLOW_FACTOR))?;
                let wide = Quota::with_period(r.per / wide.get())?.allow_burst(wide);
                let known = Arc::new(DashMapStateStore::default());
                Some(Bucket {
                    rate: *r,
                    limiter: limiter(quota, &known, clock),
                    known,
                    overflow: limiter(wide, &Arc::new(DashMapStateStore::default()), clock),
                })
            })
            .collect();
        Buckets {
            buckets,
            max_keys,
            last_purge: AtomicI64::new(0),
            clock: clock.clock.clone(),
        }
    }

    fn check(&self, class: Class, key: &K) -> Result<(), Refused> {
        let mut refused: Option<Refused> = None;
        for b in &self.buckets {
            let mut full = b.limiter.len() >= self.max_keys && !b.known.contains_key(key);
            if full {
                self.purge_soon();
                full = b.limiter.len() >= self.max_keys;
            }
            // Full of recently active keys (a flood of distinct clients): a new key does not
            // grow the table, it shares its coarser key's bucket until a purge makes room.
            let verdict = if full {
                b.overflow.check_key(&key.coarse()).map(drop)
            } else {
                b.limiter.check_key(key).map(drop)
            };
            if let Err(not_until) = verdict {
                let wait = not_until.wait_time_from(b.limiter.clock().now());
                let r = Refused {
                    class,
                    limit: b.rate.count,
                    retry_after: wait,
                };
                refused = Some(match refused {
                    Some(prev) if prev.retry_after >= wait => prev,
                    _ => r,
                });
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Purges at most once a second when called from the request path.
    fn purge_soon(&self) {
        let now = self.clock.now().unix_timestamp();
        let last = self.last_purge.load(Ordering::Relaxed);
        if now > last
            && self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.purge();
        }
    }

    fn purge(&self) {
        for b in &self.buckets {
            b.limiter.retain_recent();
            b.limiter.shrink_to_fit();
            b.overflow.retain_recent();
            b.overflow.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.limiter.len()).sum()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

/// Every limiter of the gateway.
pub struct RateLimits {
    enabled: bool,
    login_ip: Buckets<IpAddr>,
    login_account: Buckets<String>,
    verify_ip: Buckets<IpAddr>,
    verify_account: Buckets<String>,
    send_ip: Buckets<IpAddr>,
    send_recipient: Buckets<String>,
    refresh_ip: Buckets<IpAddr>,
    proxy_ip: Buckets<IpAddr>,
    tripped: Family<ClassLabel, Counter>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.enabled)
            .field("keys", &self.key_count())
            .finish()
    }
}

/// IPv6 clients are limited per /64: a single host usually owns a whole /64.
fn ip_key(ip: IpAddr) -> IpAddr {
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

/// The per-account key: normalized, and bounded so a 64 KiB "email" cannot make a 64 KiB key
/// (real emails are at most 254 bytes; longer ones are refused later anyway).
fn account_key(account: &str) -> String {
    let a = account.trim();
    let mut end = a.len().min(256);
    while !a.is_char_boundary(end) {
        end -= 1;
    }
    a.get(..end).unwrap_or("").to_lowercase()
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig, clock: SharedClock, metrics: &Metrics) -> Self {
        let gclock = GovClock {
            epoch: clock.now(),
            clock,
        };
        let m = cfg.max_keys;
        // Each of N instances enforces its share of every quota.
        let n = cfg.instances.max(1);
        let share = |rates: &[Rate]| -> Vec<Rate> {
            rates
                .iter()
                .map(|r| Rate {
                    count: (r.count / n).max(1),
                    per: r.per,
                })
                .collect()
        };
        let tripped = Family::<ClassLabel, Counter>::default();
        metrics.register(
            "rate_limited",
            "Requests refused by a rate limit, by endpoint class",
            tripped.clone(),
        );
        RateLimits {
            enabled: cfg.enabled,
            login_ip: Buckets::new(&share(&cfg.login_per_ip), &gclock, m),
            login_account: Buckets::new(&share(&cfg.login_per_account), &gclock, m),
            verify_ip: Buckets::new(&share(&cfg.code_verify_per_ip), &gclock, m),
            verify_account: Buckets::new(&share(&cfg.code_verify_per_account), &gclock, m),
            send_ip: Buckets::new(&share(&cfg.code_send_per_ip), &gclock, m),
            send_recipient: Buckets::new(&share(&cfg.code_send_per_recipient), &gclock, m),
            refresh_ip: Buckets::new(&share(&cfg.refresh_per_ip), &gclock, m),
            proxy_ip: Buckets::new(&share(&cfg.proxy_per_ip), &gclock, m),
            tripped,
        }
    }

    fn record(&self, r: Result<(), Refused>, ip: IpAddr) -> Result<(), Refused> {
        if let Err(refused) = &r {
            self.tripped
                .get_or_create(&ClassLabel {
                    class: refused.class.as_str(),
                })
                .inc();
            tracing::warn!(target: "audit", event = "rate_limited", class = refused.class.as_str(), client_ip = %ip, "rate limit refused a request");
        }
        r
    }

    /// Checks the per-IP limiters, then (when given) the per-account or per-recipient ones.
    pub fn check(&self, class: Class, ip: IpAddr, account: Option<&str>) -> Result<(), Refused> {
        if !self.enabled {
            return Ok(());
        }
        let (by_ip, by_account) = match class {
            Class::Login => (&self.login_ip, Some(&self.login_account)),
            Class::CodeVerify => (&self.verify_ip, Some(&self.verify_account)),
            Class::CodeSend => (&self.send_ip, Some(&self.send_recipient)),
            Class::Refresh => (&self.refresh_ip, None),
            Class::Proxy => (&self.proxy_ip, None),
        };
        let mut result = by_ip.check(class, &ip_key(ip));
        if let (Ok(()), Some(limiters), Some(account)) = (&result, by_account, account) {
            result = limiters.check(class, &account_key(account));
        }
        self.record(result, ip)
    }

    /// The per-IP limiters of `class` alone.
    pub fn check_ip(&self, class: Class, ip: IpAddr) -> Result<(), Refused> {
        self.check(class, ip, None)
    }

    /// The per-account (or per-recipient) limiters of `class` alone, for `key`: an account,
    /// an account's device, a login without an account, an address.
    pub fn check_key(&self, class: Class, ip: IpAddr, key: &str) -> Result<(), Refused> {
        if !self.enabled {
            return Ok(());
        }
        let by_key = match class {
            Class::Login => &self.login_account,
            Class::CodeVerify => &self.verify_account,
            Class::CodeSend => &self.send_recipient,
            Class::Refresh | Class::Proxy => return Ok(()),
        };
        self.record(by_key.check(class, &account_key(key)), ip)
    }

    /// The proxy's per-IP check: nothing to do (and no allocation) when no quota is set.
    pub fn check_proxy(&self, ip: IpAddr) -> Result<(), Refused> {
        if !self.enabled || self.proxy_ip.buckets.is_empty() {
            return Ok(());
        }
        self.check(Class::Proxy, ip, None)
    }

    /// Drops keys whose state is back to fresh (run periodically).
    pub fn purge(&self) {
        self.login_ip.purge();
        self.login_account.purge();
        self.verify_ip.purge();
        self.verify_account.purge();
        self.send_ip.purge();
        self.send_recipient.purge();
        self.refresh_ip.purge();
        self.proxy_ip.purge();
    }

    /// Keys held across every limiter (for tests and metrics).
    pub fn key_count(&self) -> usize {
        self.login_ip.len()
            + self.login_account.len()
            + self.verify_ip.len()
            + self.verify_account.len()
            + self.send_ip.len()
            + self.send_recipient.len()
            + self.refresh_ip.len()
            + self.proxy_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    fn limits(cfg: RateLimitConfig) -> (RateLimits, ManualClock) {
        let clock = ManualClock::starting_now();
        (
            RateLimits::new(&cfg, Arc::new(clock.clone()), &Metrics::new()),
            clock,
        )
    }

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    #[test]
    fn burst_then_refusal_then_recovery() {
        let (l, clock) = limits(RateLimitConfig {
            login_per_ip: vec![rate(3, 60)],
            login_per_account: vec![],
            ..Default::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(Class::Login, ip, None).is_ok());
        }
        let r = l.check(Class::Login, ip, None).unwrap_err();
        assert_eq!(r.limit, 3);
        assert!(
            r.retry_after > Duration::from_secs(19) && r.retry_after <= Duration::from_secs(20),
            "{r:?}"
        );
        // Another client is not affected.
        assert!(
            l.check(Class::Login, "192.0.2.2".parse().unwrap(), None)
                .is_ok()
        );
        clock.advance(Duration::from_secs(20));
        assert!(
            l.check(Class::Login, ip, None).is_ok(),
            "one cell back after 60s/3"
        );
    }

    #[test]
    fn account_keys_are_bounded() {
        assert_eq!(account_key(" A@X.com "), "a@x.com");
        assert_eq!(account_key(&"é".repeat(1000)).len(), 256);
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let (l, _) = limits(RateLimitConfig {
            refresh_per_ip: vec![rate(2, 60)],
            ..Default::default()
        });
        assert!(
            l.check(Class::Refresh, "2001:db8::1".parse().unwrap(), None)
                .is_ok()
        );
        assert!(
            l.check(Class::Refresh, "2001:db8::2".parse().unwrap(), None)
                .is_ok()
        );
        assert!(
            l.check(Class::Refresh, "2001:db8::ffff:3".parse().unwrap(), None)
                .is_err()
        );
        assert!(
            l.check(Class::Refresh, "2001:db8:0:1::1".parse().unwrap(), None)
                .is_ok(),
            "another /64"
        );
    }

    #[test]
    fn accounts_are_case_insensitive_and_separate_from_ips() {
        let (l, _) = limits(RateLimitConfig {
            login_per_ip: vec![rate(100, 60)],
            login_per_account: vec![rate(2, 60)],
            ..Default::default()
        });
        assert!(
            l.check(Class::Login, "192.0.2.1".parse().unwrap(), Some("A@x.com"))
                .is_ok()
        );
        assert!(
            l.check(Class::Login, "192.0.2.2".parse().unwrap(), Some("a@x.com"))
                .is_ok()
        );
        assert!(
            l.check(Class::Login, "192.0.2.3".parse().unwrap(), Some("a@X.com "))
                .is_err(),
            "per account, across IPs"
        );
    }

    #[test]
    fn instances_share_each_quota() {
        let (l, _clock) = limits(RateLimitConfig {
            login_per_ip: vec![rate(10, 60)],
            instances: 3,
            ..Default::default()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let allowed = (0..10)
            .filter(|_| l.check(Class::Login, ip, None).is_ok())
            .count();
        assert_eq!(allowed, 3, "10 per minute over 3 instances: 3 here");
    }

    #[test]
    fn a_full_limiter_serves_known_keys_and_shares_new_ones_coarsely() {
        let (l, clock) = limits(RateLimitConfig {
            refresh_per_ip: vec![rate(10, 60)],
            max_keys: 50_000,
            ..Default::default()
        });
        let ip = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        // A flood of distinct clients fills the table...
        for i in 0..100_000u32 {
            let _ = l.check(Class::Refresh, ip(i), None);
        }
        assert!(l.key_count() <= 50_000 + 2, "bounded: {}", l.key_count());
        // ...a client it already tracks is served as before...
        assert!(l.check(Class::Refresh, ip(7), None).is_ok(), "a known key");
        // ...and a newcomer shares its /16's bucket (ten times a key's quota), rather than
        // being refused outright.
        let newcomer = |i: u32| IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, (i % 250) as u8));
        let served = (0..200)
            .filter(|i| l.check(Class::Refresh, newcomer(*i), None).is_ok())
            .count();
        assert_eq!(served, 100, "the coarse bucket's burst");
        assert!(l.key_count() <= 50_000 + 3);
        // Idle keys are purged, and a newcomer has its own bucket again.
        clock.advance(Duration::from_secs(61));
        l.purge();
        assert_eq!(l.key_count(), 0, "idle keys are dropped");
        let served = (0..20)
            .filter(|_| l.check(Class::Refresh, newcomer(1), None).is_ok())
            .count();
        assert_eq!(served, 10);
    }
}
