//! Rate limits and concurrency caps: is this client over its quota?
//!
//! A route names limits (`rate_limit = ["per-ip", "global"]`); every one must
//! admit the request. Each `[rate_limits.NAME]` has a key (client IP,
//! consumer, a header, a JWT claim, or the whole route) and a rate
//! (`limit` per `per`), a concurrency cap (`max_in_flight`), or both.
//!
//! Local rates use pingora-limits' [`Rate`]: two count-min sketches (current
//! and previous window), so memory is fixed whatever the number of distinct
//! clients. Admission uses the sliding-window estimate
//! `prev × (1 − elapsed fraction) + curr`, so a client cannot send twice its
//! limit across a window edge. Rejected requests are not counted (a client
//! over its limit gets back in as its window slides, instead of being locked
//! out for as long as it keeps trying). The sketch only over-counts: for a
//! sketch of width `w`, an estimate exceeds the true count by at most
//! `e / w × N` (N = requests of all keys in the window) with probability
//! `1 − e^(−depth)`; see [`estimator_error_bound`].
//!
//! `scope = "cluster"` limits are shared by every gateway through Redis
//! ([`cluster`]); they admit against a locally held view of the fleet-wide
//! count, synced in batches, so no request waits on Redis.
//!
//! The room takes plain data ([`LimitInput`]) and returns a
//! [`LimitDecision`]; the proxy turns a rejection into a 429 with
//! `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` headers.

pub mod cluster;

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;
use pingora_limits::inflight::{Guard, Inflight};
use pingora_limits::rate::Rate;

use crate::auth::Consumer;
use cluster::{ClusterAdmission, ClusterCounter};

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    Ip,
    Consumer,
    Header(HeaderName),
    Claim(String),
    /// One bucket for the whole route.
    Route,
}

impl LimitKey {
    /// Parses `ip | consumer | header:NAME | claim:NAME | route`.
    pub fn parse(s: &str) -> Result<LimitKey, String> {
        match s {
            "ip" => Ok(LimitKey::Ip),
            "consumer" => Ok(LimitKey::Consumer),
            "route" => Ok(LimitKey::Route),
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    HeaderName::from_bytes(h.as_bytes())
                        .map(LimitKey::Header)
                        .map_err(|_| format!("{h:?} is not a header name"))
                } else if let Some(c) = s.strip_prefix("claim:").filter(|c| !c.is_empty()) {
                    Ok(LimitKey::Claim(c.to_string()))
                } else {
                    Err(format!(
                        "{s:?} is not a limit key: use ip, consumer, header:NAME, claim:NAME or route"
                    ))
                }
            }
        }
    }
}

/// The value of a key for one request. Hashed into the sketch as is, so
/// building it allocates nothing.
#[derive(Debug, Hash, PartialEq, Eq)]
enum KeyValue<'a> {
    Ip(IpAddr),
    Text(&'a str),
    Route,
}

impl KeyValue<'_> {
    /// The key as text, for Redis.
    fn to_text(&self) -> String {
        match self {
            KeyValue::Ip(ip) => format!("ip:{ip}"),
            KeyValue::Text(t) => format!("k:{t}"),
            KeyValue::Route => "route".to_string(),
        }
    }
}

/// What a limit sees of a request.
pub struct LimitInput<'a> {
    pub client_ip: IpAddr,
    pub consumer: Option<&'a Consumer>,
    pub headers: &'a HeaderMap,
}

/// Shape of the count-min sketch behind a local rate.
#[derive(Debug, Clone, Copy)]
pub struct SketchSize {
    pub depth: usize,
    pub width: usize,
}

impl Default for SketchSize {
    fn default() -> Self {
        SketchSize {
            depth: 4,
            width: 4096,
        }
    }
}

/// The most an estimate can exceed the true count, as a fraction of all
/// requests counted in the window (`e / width`), holding with probability
/// `1 − e^(−depth)`.
pub fn estimator_error_bound(size: SketchSize) -> (f64, f64) {
    (
        std::f64::consts::E / size.width as f64,
        1.0 - (-(size.depth as f64)).exp(),
    )
}

/// A rate: `limit` requests per `per`.
pub struct RateRule {
    pub limit: u64,
    pub per: Duration,
    local: Rate,
    pub cluster: Option<Arc<ClusterCounter>>,
}

/// One compiled `[rate_limits.NAME]` block.
pub struct RateLimitPolicy {
    pub name: Arc<str>,
    pub key: LimitKey,
    pub rate: Option<RateRule>,
    max_in_flight: Option<(isize, Inflight)>,
}

/// Quota left under one rate limit, for the `RateLimit` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub policy: Arc<str>,
    pub limit: u64,
    pub window_secs: u64,
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset_secs: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Over the rate: 429.
    Rate { quota: Quota, retry_after_secs: u64 },
    /// Over `max_in_flight`: 429.
    InFlight { policy: Arc<str>, max: isize },
    /// A cluster limit with `on_redis_error = "deny"` while Redis is down: 503.
    StoreDown { policy: Arc<str> },
}

impl Refusal {
    pub fn policy(&self) -> &str {
        match self {
            Refusal::Rate { quota, .. } => &quota.policy,
            Refusal::InFlight { policy, .. } | Refusal::StoreDown { policy } => policy,
        }
    }
}

/// What admission took, to be released when the request ends.
#[derive(Default)]
pub struct Admission {
    /// In-flight slots; released on drop, on every path (success, error,
    /// client abort), because the request context is dropped on all of them.
    pub guards: Vec<Guard>,
    pub quotas: Vec<Quota>,
    /// Counted increments, undone if a later limit of the route refuses.
    undo: Vec<Undo>,
}

enum Undo {
    Local(Arc<RateLimitPolicy>, KeyOwned),
    Cluster(Arc<ClusterCounter>, String),
}

/// A key kept until the admission is settled.
enum KeyOwned {
    Ip(IpAddr),
    Text(String),
    Route,
}

impl KeyOwned {
    fn as_value(&self) -> KeyValue<'_> {
        match self {
            KeyOwned::Ip(ip) => KeyValue::Ip(*ip),
            KeyOwned::Text(t) => KeyValue::Text(t),
            KeyOwned::Route => KeyValue::Route,
        }
    }
}

impl RateLimitPolicy {
    pub fn new(
        name: &str,
        key: LimitKey,
        rate: Option<(u64, Duration, SketchSize, Option<Arc<ClusterCounter>>)>,
        max_in_flight: Option<u32>,
    ) -> RateLimitPolicy {
        RateLimitPolicy {
            name: name.into(),
            key,
            rate: rate.map(|(limit, per, size, cluster)| RateRule {
                limit,
                per,
                local: Rate::new_with_estimator_config(per, size.depth, size.width),
                cluster,
            }),
            max_in_flight: max_in_flight.map(|m| (m as isize, Inflight::new())),
        }
    }

    fn key_value<'a>(&self, input: &'a LimitInput<'a>) -> KeyValue<'a> {
        // A request without the key's source (no consumer, no header, no
        // claim) is counted by its client IP, so dropping a header cannot
        // move a client into a bucket of its own, nor into everyone's.
        let text = match &self.key {
            LimitKey::Ip => None,
            LimitKey::Route => return KeyValue::Route,
            LimitKey::Consumer => input.consumer.map(|c| c.name.as_str()),
            LimitKey::Header(h) => input.headers.get(h).and_then(|v| v.to_str().ok()),
            LimitKey::Claim(c) => input
                .consumer
                .and_then(|cons| cons.claims.get(c))
                .and_then(|v| v.as_str()),
        };
        match text {
            Some(t) => KeyValue::Text(t),
            None => KeyValue::Ip(input.client_ip),
        }
    }
}

/// The sliding-window estimate and what the headers say about it.
fn sliding(limit: u64, per: Duration, prev: f64, curr: f64, frac: f64) -> (f64, u64, u64) {
    let estimate = prev * (1.0 - frac) + curr;
    let per_s = per.as_secs_f64();
    let reset = ((1.0 - frac) * per_s).ceil().max(1.0) as u64;
    let remaining = (limit as f64 - estimate).floor().max(0.0) as u64;
    (estimate, remaining, reset)
}

/// Seconds until one more request fits under the sliding estimate
/// `prev × (1 − frac) + curr`, given that nothing else is admitted meanwhile.
fn retry_after(limit: u64, per: Duration, prev: f64, curr: f64, frac: f64) -> u64 {
    let per_s = per.as_secs_f64();
    let room = limit as f64 - 1.0;
    // Still in this window: the previous window's weight fades linearly.
    if prev > 0.0 && curr <= room {
        let x = (prev * (1.0 - frac) + curr - room) / prev;
        if x <= 1.0 - frac {
            return (x.max(0.0) * per_s).ceil().max(1.0) as u64;
        }
    }
    // In the next window, this window's count becomes the fading one.
    let f = if curr > 0.0 {
        (1.0 - room / curr).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (((1.0 - frac) + f) * per_s).ceil().max(1.0) as u64
}

impl RateRule {
    fn admit_local<K: Hash>(&self, name: &Arc<str>, key: &K) -> Result<Quota, Refusal> {
        let after = self.local.observe(key, 1) as f64;
        let (prev, frac) = self.local.rate_with(key, |c| {
            (c.prev_samples as f64, c.current_interval_fraction)
        });
        let (estimate, remaining, reset) = sliding(self.limit, self.per, prev, after, frac);
        let quota = Quota {
            policy: name.clone(),
            limit: self.limit,
            window_secs: self.per.as_secs().max(1),
            remaining,
            reset_secs: reset,
        };
        if estimate > self.limit as f64 {
            self.local.observe(key, -1);
            return Err(Refusal::Rate {
                retry_after_secs: retry_after(self.limit, self.per, prev, after - 1.0, frac),
                quota,
            });
        }
        Ok(quota)
    }
}

/// Runs every limit of a route; all must admit. On a refusal, what earlier
/// limits counted is undone and their in-flight slots released.
pub fn check(
    policies: &[Arc<RateLimitPolicy>],
    input: &LimitInput<'_>,
) -> Result<Admission, Refusal> {
    let mut admission = Admission::default();
    for policy in policies {
        let key = policy.key_value(input);
        if let Some((max, inflight)) = &policy.max_in_flight {
            let (guard, now) = inflight.incr(&key, 1);
            if now > *max {
                drop(guard);
                admission.rollback();
                return Err(Refusal::InFlight {
                    policy: policy.name.clone(),
                    max: *max,
                });
            }
            admission.guards.push(guard);
        }
        let Some(rate) = &policy.rate else {
            continue;
        };
        let owned = || match &key {
            KeyValue::Ip(ip) => KeyOwned::Ip(*ip),
            KeyValue::Text(t) => KeyOwned::Text(t.to_string()),
            KeyValue::Route => KeyOwned::Route,
        };
        let verdict = match &rate.cluster {
            Some(counter) => {
                let text = key.to_text();
                match counter.admit(&text, rate.limit) {
                    ClusterAdmission::Admitted(quota) => {
                        // The local sketch keeps counting too: it is the
                        // fallback while Redis is unreachable.
                        rate.local.observe(&key, 1);
                        admission.undo.push(Undo::Local(policy.clone(), owned()));
                        admission.undo.push(Undo::Cluster(counter.clone(), text));
                        Ok(quota)
                    }
                    ClusterAdmission::Refused {
                        quota,
                        retry_after_secs,
                    } => Err(Refusal::Rate {
                        quota,
                        retry_after_secs,
                    }),
                    ClusterAdmission::StoreDown(fallback) => match fallback {
                        cluster::Fallback::Local => rate
                            .admit_local(&policy.name, &key)
                            .inspect(|_| admission.undo.push(Undo::Local(policy.clone(), owned()))),
                        cluster::Fallback::Allow => Ok(Quota {
                            policy: policy.name.clone(),
                            limit: rate.limit,
                            window_secs: rate.per.as_secs().max(1),
                            remaining: rate.limit,
                            reset_secs: rate.per.as_secs().max(1),
                        }),
                        cluster::Fallback::Deny => Err(Refusal::StoreDown {
                            policy: policy.name.clone(),
                        }),
                    },
                }
            }
            None => rate
                .admit_local(&policy.name, &key)
                .inspect(|_| admission.undo.push(Undo::Local(policy.clone(), owned()))),
        };
        match verdict {
            Ok(q) => admission.quotas.push(q),
            Err(r) => {
                admission.rollback();
                return Err(r);
            }
        }
    }
    admission.undo.clear();
    Ok(admission)
}

impl Admission {
    fn rollback(&mut self) {
        for u in self.undo.drain(..) {
            match u {
                Undo::Local(policy, key) => {
                    if let Some(rate) = &policy.rate {
                        rate.local.observe(&key.as_value(), -1);
                    }
                }
                Undo::Cluster(counter, key) => counter.undo(&key),
            }
        }
        self.guards.clear();
    }
}

/// The `[server] max_requests_per_ip` flood guard: one local rate keyed by
/// client IP, checked before routing.
pub struct FloodGuard {
    rule: RateRule,
    name: Arc<str>,
    /// Its `RateLimit-Policy` value, built once.
    pub policy_header: Option<HeaderValue>,
}

impl FloodGuard {
    pub fn new(limit: u64, per: Duration, size: SketchSize) -> FloodGuard {
        FloodGuard {
            rule: RateRule {
                limit,
                per,
                local: Rate::new_with_estimator_config(per, size.depth, size.width),
                cluster: None,
            },
            name: "server.max_requests_per_ip".into(),
            policy_header: HeaderValue::from_str(&format!(
                "\"server.max_requests_per_ip\";q={limit};w={}",
                per.as_secs().max(1)
            ))
            .ok(),
        }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.rule
            .admit_local(&self.name, &KeyValue::Ip(ip))
            .map(|_| ())
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not itself a trusted
/// proxy (the left part of the header is whatever the client wrote).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let mut client = peer;
    for v in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(s) = v.to_str() else { return client };
        for part in s.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted.iter().any(|n| n.contains(&ip)) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// The `RateLimit-Policy` header value (a structured-field list,
/// draft-ietf-httpapi-ratelimit-headers) for these rate limits: the same for
/// every request, so it is built when the config is compiled.
pub fn policy_header(policies: &[Arc<RateLimitPolicy>]) -> Option<HeaderValue> {
    let items: Vec<String> = policies
        .iter()
        .filter_map(|p| {
            let r = p.rate.as_ref()?;
            Some(format!(
                "\"{}\";q={};w={}",
                p.name,
                r.limit,
                r.per.as_secs().max(1)
            ))
        })
        .collect();
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// The `RateLimit` header value: what is left of each quota, and when its
/// window ends.
pub fn state_header(quotas: &[Quota]) -> Option<HeaderValue> {
    if quotas.is_empty() {
        return None;
    }
    let mut text = String::with_capacity(quotas.len() * 32);
    for (i, q) in quotas.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!("\"{}\";r={};t={}", q.policy, q.remaining, q.reset_secs),
        );
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(ip: &str, headers: &'a HeaderMap) -> LimitInput<'a> {
        LimitInput {
            client_ip: ip.parse().unwrap(),
            consumer: None,
            headers,
        }
    }

    fn policy(key: LimitKey, limit: u64, per: u64) -> Arc<RateLimitPolicy> {
        Arc::new(RateLimitPolicy::new(
            "p",
            key,
            Some((limit, Duration::from_secs(per), SketchSize::default(), None)),
            None,
        ))
    }

    #[test]
    fn admits_up_to_the_limit_per_key() {
        let h = HeaderMap::new();
        let p = [policy(LimitKey::Ip, 5, 60)];
        for i in 0..5 {
            let a = check(&p, &input("10.0.0.1", &h)).expect("admitted");
            assert_eq!(a.quotas[0].remaining, 4 - i);
        }
        match check(&p, &input("10.0.0.1", &h)) {
            Err(Refusal::Rate {
                retry_after_secs, ..
            }) => assert!(retry_after_secs >= 1),
            _ => panic!("sixth request must be refused"),
        }
        // Another key has its own bucket; refusals were not counted.
        assert!(check(&p, &input("10.0.0.2", &h)).is_ok());
    }

    #[test]
    fn a_refusal_undoes_earlier_limits() {
        let h = HeaderMap::new();
        let generous = policy(LimitKey::Ip, 100, 60);
        let strict = policy(LimitKey::Route, 1, 60);
        let both = [generous.clone(), strict];
        assert!(check(&both, &input("10.0.0.1", &h)).is_ok());
        assert!(check(&both, &input("10.0.0.1", &h)).is_err());
        // The refused request was not charged to the generous limit.
        let a = check(&[generous], &input("10.0.0.1", &h)).unwrap();
        assert_eq!(a.quotas[0].remaining, 98);
    }

    #[test]
    fn in_flight_slots_are_released_on_drop() {
        let h = HeaderMap::new();
        let p = [Arc::new(RateLimitPolicy::new(
            "c",
            LimitKey::Route,
            None,
            Some(2),
        ))];
        let a = check(&p, &input("10.0.0.1", &h)).unwrap();
        let b = check(&p, &input("10.0.0.1", &h)).unwrap();
        assert!(matches!(
            check(&p, &input("10.0.0.1", &h)),
            Err(Refusal::InFlight { max: 2, .. })
        ));
        drop(a);
        assert!(check(&p, &input("10.0.0.1", &h)).is_ok());
        drop(b);
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        // 10 per window, a full previous window, a quarter into this one:
        // 7.5 of the previous still count, so 2 more fit.
        let (est, remaining, reset) = sliding(10, Duration::from_secs(4), 10.0, 0.0, 0.25);
        assert_eq!(est, 7.5);
        assert_eq!(remaining, 2);
        assert_eq!(reset, 3);
        assert!(retry_after(10, Duration::from_secs(4), 10.0, 3.0, 0.25) >= 1);
    }

    #[test]
    fn keys_parse_and_fall_back_to_the_ip() {
        assert_eq!(LimitKey::parse("ip"), Ok(LimitKey::Ip));
        assert_eq!(
            LimitKey::parse("header:x-tenant"),
            Ok(LimitKey::Header(HeaderName::from_static("x-tenant")))
        );
        assert_eq!(
            LimitKey::parse("claim:org"),
            Ok(LimitKey::Claim("org".into()))
        );
        assert!(LimitKey::parse("claim:").is_err());
        assert!(LimitKey::parse("cookie").is_err());
        let mut h = HeaderMap::new();
        let p = policy(LimitKey::Header(HeaderName::from_static("x-tenant")), 1, 60);
        let i = input("10.0.0.9", &h);
        assert_eq!(p.key_value(&i), KeyValue::Ip("10.0.0.9".parse().unwrap()));
        h.insert("x-tenant", "acme".parse().unwrap());
        let i = input("10.0.0.9", &h);
        assert_eq!(p.key_value(&i), KeyValue::Text("acme"));
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.1.1".parse().unwrap(),
        );
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(peer, &h, &[]), peer);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), peer);
    }

    #[test]
    fn header_values() {
        let q = Quota {
            policy: "per-ip".into(),
            limit: 10,
            window_secs: 1,
            remaining: 3,
            reset_secs: 1,
        };
        assert_eq!(
            state_header(&[q.clone(), q]).unwrap(),
            "\"per-ip\";r=3;t=1, \"per-ip\";r=3;t=1"
        );
        let p = policy(LimitKey::Ip, 10, 60);
        let cap = Arc::new(RateLimitPolicy::new("cap", LimitKey::Ip, None, Some(3)));
        assert_eq!(policy_header(&[p, cap]).unwrap(), "\"p\";q=10;w=60");
        assert!(policy_header(&[]).is_none());
        let (e, _) = estimator_error_bound(SketchSize::default());
        assert!(e < 0.001);
    }
}
