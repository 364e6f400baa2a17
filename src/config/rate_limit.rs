//! `[rate_limit]`: the per-class quotas.

use super::*;

/// "10/1m": at most 10 at once, one more every 6 s (a GCRA bucket: burst 10, refilled over 1m).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (n, per) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected COUNT/PERIOD such as \"10/1m\""))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a count"))?;
        let per = duration::parse(per)?;
        if count == 0 || per.is_zero() {
            return Err(format!("{s:?}: count and period must be greater than zero"));
        }
        Ok(Rate { count, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn rates(list: &[&str]) -> Vec<Rate> {
    list.iter().filter_map(|r| r.parse().ok()).collect()
}

/// Per-class quotas. Each list holds buckets that all apply (a burst and a sustained rate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub login_per_ip: Vec<Rate>,
    pub login_per_account: Vec<Rate>,
    pub code_verify_per_ip: Vec<Rate>,
    pub code_verify_per_account: Vec<Rate>,
    pub code_send_per_ip: Vec<Rate>,
    pub code_send_per_recipient: Vec<Rate>,
    pub refresh_per_ip: Vec<Rate>,
    /// Proxied requests per client IP (none by default).
    pub proxy_per_ip: Vec<Rate>,
    /// Keys one limiter holds at most; beyond, new keys are refused until a purge makes room.
    pub max_keys: usize,
    /// Instances sharing one store behind a load balancer: each enforces 1/instances of every
    /// quota in its own memory (no database round trip per request), so the whole deployment
    /// allows about the configured rate.
    pub instances: u32,
    /// How long the account endpoints hold a 429 or 503 before answering it (never longer
    /// than its Retry-After): a client retrying at once is slowed to one try per delay per
    /// connection, and a flood costs a timer instead of CPU. Applies with `enabled = false`
    /// too (a full hashing queue, a code resent too soon).
    #[serde(with = "duration::serde_str")]
    pub refusal_delay: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            login_per_ip: rates(&["20/1m", "200/1h"]),
            login_per_account: rates(&["10/1m", "50/1h"]),
            code_verify_per_ip: rates(&["30/1m", "300/1h"]),
            code_verify_per_account: rates(&["10/1m", "60/1h"]),
            code_send_per_ip: rates(&["10/1m", "100/1h"]),
            code_send_per_recipient: rates(&["5/10m", "20/1d"]),
            refresh_per_ip: rates(&["120/1m"]),
            proxy_per_ip: Vec::new(),
            max_keys: 100_000,
            instances: 1,
            refusal_delay: Duration::from_secs(1),
        }
    }
}

impl RateLimitConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.refusal_delay > Duration::from_secs(10) {
            return Err(ConfigError::key(
                "rate_limit.refusal_delay",
                "must be at most 10s (clients time out)",
            ));
        }
        Ok(())
    }
}
