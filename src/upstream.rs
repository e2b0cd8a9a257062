//! Upstream pools: the targets behind a name, how one is picked, and whether
//! each is healthy.
//!
//! A [`Pool`] wraps a pingora-load-balancing `LoadBalancer` whose discovery
//! ([`ConfigDiscovery`]) reads a target set that the compiled config owns,
//! rather than pingora's immutable `Static` list, so a reload can hand a pool
//! new targets ([`Pool::set_targets`]) while targets that stay keep their
//! health state. Active health checks (pingora's `HttpHealthCheck` /
//! `TcpHealthCheck`) are driven by one background service,
//! [`HealthCheckService`], which walks the pools of the live snapshot, so
//! pools created by a reload are checked without registering new services.
//! Health results are published as `frontdesk_upstream_healthy`.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr as StdSocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Balance, UpstreamSection};
use crate::gateway::GatewayHandle;
use crate::observe::METRICS;

/// Discovery over a target set owned by the config.
pub struct ConfigDiscovery {
    targets: Arc<ArcSwap<BTreeSet<Backend>>>,
}

#[async_trait]
impl ServiceDiscovery for ConfigDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok(((**self.targets.load()).clone(), HashMap::new()))
    }
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    Path,
    Header(http::HeaderName),
}

impl HashOn {
    pub fn parse(s: &str) -> Result<HashOn, String> {
        match s {
            "ip" => Ok(HashOn::ClientIp),
            "path" => Ok(HashOn::Path),
            other => match other.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(HashOn::Header)
                    .map_err(|_| format!("{name:?} is not a valid header name")),
                None => Err(format!(
                    "unknown hash_on {other:?}; expected ip, path or header:NAME"
                )),
            },
        }
    }
}

/// Connection settings shared by every target of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: usize,
    pub tls: bool,
    pub sni: String,
    pub verify_cert: bool,
    pub hash_on: HashOn,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

macro_rules! with_lb {
    ($self:expr, $lb:ident => $body:expr) => {
        match &$self.balancer {
            Balancer::RoundRobin($lb) => $body,
            Balancer::Random($lb) => $body,
            Balancer::Consistent($lb) => $body,
        }
    };
}

/// One configured target and the addresses it resolved to.
#[derive(Debug, Clone)]
pub struct Target {
    /// As written in the config (`orders.internal:9001`).
    pub configured: String,
    pub addr: StdSocketAddr,
    /// `addr` as a string, the metric label.
    pub label: String,
    /// The load balancer's view of it (readiness is keyed by the whole value).
    backend: Backend,
}

/// A named upstream pool.
pub struct Pool {
    pub name: String,
    pub settings: PoolSettings,
    pub targets: Vec<Target>,
    balancer: Balancer,
    discovery_set: Arc<ArcSwap<BTreeSet<Backend>>>,
    check_interval: Option<Duration>,
    next_check: Mutex<Instant>,
    checking: AtomicBool,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("target {target:?} does not resolve: {reason}")]
    Resolve { target: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Resolves `host:port` targets (blocking DNS, at load time only).
pub fn resolve_target(addr: &str) -> Result<Vec<StdSocketAddr>, PoolError> {
    if let Ok(a) = addr.parse::<StdSocketAddr>() {
        return Ok(vec![a]);
    }
    let fail = |reason: String| PoolError::Resolve {
        target: addr.to_string(),
        reason,
    };
    if !addr.contains(':') {
        return Err(fail("expected host:port".into()));
    }
    let resolved: Vec<StdSocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .collect();
    if resolved.is_empty() {
        return Err(fail("no addresses".into()));
    }
    Ok(resolved)
}

impl Pool {
    /// Builds a pool from its config section. Resolves host names.
    pub fn build(name: &str, section: &UpstreamSection) -> Result<Pool, PoolError> {
        if section.targets.is_empty() {
            return Err(PoolError::Invalid(
                "an upstream needs at least one target".into(),
            ));
        }
        let hash_on = HashOn::parse(&section.hash_on).map_err(PoolError::Invalid)?;
        let mut targets = Vec::new();
        let mut set = BTreeSet::new();
        for t in &section.targets {
            if t.weight() == 0 {
                return Err(PoolError::Invalid(format!(
                    "target {:?} has weight 0; remove it instead",
                    t.addr()
                )));
            }
            for addr in resolve_target(t.addr())? {
                let backend = Backend {
                    addr: SocketAddr::Inet(addr),
                    weight: t.weight(),
                    ext: http::Extensions::new(),
                };
                set.insert(backend.clone());
                targets.push(Target {
                    configured: t.addr().to_string(),
                    addr,
                    label: addr.to_string(),
                    backend,
                });
            }
        }
        let discovery_set = Arc::new(ArcSwap::from_pointee(set));
        let backends = || {
            let mut b = Backends::new(Box::new(ConfigDiscovery {
                targets: discovery_set.clone(),
            }));
            if let Some(hc) = &section.health_check {
                b.set_health_check(build_health_check(hc, section.tls, section.sni.as_deref()));
            }
            b
        };
        let balancer = match section.balance {
            Balance::RoundRobin => Balancer::RoundRobin(LoadBalancer::from_backends(backends())),
            Balance::Random => Balancer::Random(LoadBalancer::from_backends(backends())),
            Balance::ConsistentHash => {
                Balancer::Consistent(LoadBalancer::from_backends(backends()))
            }
        };
        let sni = section.sni.clone().unwrap_or_else(|| {
            let first = section.targets[0].addr();
            first
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(first)
                .to_string()
        });
        let pool = Pool {
            name: name.to_string(),
            settings: PoolSettings {
                connect_timeout: section.connect_timeout,
                read_timeout: section.read_timeout,
                write_timeout: section.write_timeout,
                idle_timeout: section.idle_timeout,
                retries: section.retries,
                tls: section.tls,
                sni,
                verify_cert: section.verify_cert,
                hash_on,
            },
            targets,
            balancer,
            discovery_set,
            check_interval: section.health_check.as_ref().map(|h| h.interval),
            next_check: Mutex::new(Instant::now()),
            checking: AtomicBool::new(false),
        };
        pool.refresh_selector()?;
        for t in &pool.targets {
            METRICS
                .upstream_healthy
                .with_label_values(&[pool.name.as_str(), t.label.as_str()])
                .set(1);
        }
        Ok(pool)
    }

    /// Rebuilds the selector from the discovery set. Our discovery never
    /// waits, so the future completes on its first poll.
    fn refresh_selector(&self) -> Result<(), PoolError> {
        let done = with_lb!(self, lb => lb.update().now_or_never());
        match done {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(PoolError::Invalid(format!(
                "load balancer update failed: {e}"
            ))),
            None => Err(PoolError::Invalid(
                "load balancer update did not complete".into(),
            )),
        }
    }

    /// Replaces the target set (config reload); targets that stay keep their health.
    pub fn set_targets(&self, targets: BTreeSet<Backend>) -> Result<(), PoolError> {
        self.discovery_set.store(Arc::new(targets));
        self.refresh_selector()
    }

    /// Whether selection depends on a per-request key (consistent hashing).
    pub fn uses_hash_key(&self) -> bool {
        matches!(self.balancer, Balancer::Consistent(_))
    }

    fn backends(&self) -> &Backends {
        with_lb!(self, lb => lb.backends())
    }

    /// Picks a healthy target, skipping those already tried for this request.
    pub fn select(&self, key: &[u8], tried: &[StdSocketAddr]) -> Option<StdSocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy
                && match &b.addr {
                    SocketAddr::Inet(a) => !tried.contains(a),
                    _ => false,
                }
        };
        // Enough iterations to walk every target (weights expand the ring).
        let max = 16 + self.targets.len() * 4;
        let chosen = with_lb!(self, lb => lb.select_with(key, max, accept));
        chosen.and_then(|b| b.addr.as_inet().copied())
    }

    /// Whether a target currently passes its health check.
    pub fn is_healthy(&self, target: &Target) -> bool {
        self.backends().ready(&target.backend)
    }

    /// At least one target can take traffic.
    pub fn has_healthy_target(&self) -> bool {
        self.targets.iter().any(|t| self.is_healthy(t))
    }

    /// The peer to connect to for one request.
    pub fn peer(&self, addr: StdSocketAddr) -> HttpPeer {
        let s = &self.settings;
        let mut peer = HttpPeer::new(
            addr,
            s.tls,
            if s.tls { s.sni.clone() } else { String::new() },
        );
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(s.read_timeout);
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.idle_timeout);
        peer.options.verify_cert = s.verify_cert;
        peer.options.verify_hostname = s.verify_cert;
        peer
    }

    /// Claims the next round of health checks if one is due and none is
    /// running; the caller then runs [`Pool::run_health_check`].
    fn claim_due_check(&self) -> bool {
        let Some(interval) = self.check_interval else {
            return false;
        };
        let Ok(mut next) = self.next_check.lock() else {
            return false;
        };
        let now = Instant::now();
        if now < *next || self.checking.swap(true, Ordering::AcqRel) {
            return false;
        }
        *next = now + interval;
        true
    }

    async fn run_health_check(&self) {
        self.backends().run_health_check(true).await;
        self.publish_health();
        self.checking.store(false, Ordering::Release);
    }

    fn publish_health(&self) {
        for t in &self.targets {
            let healthy = self.is_healthy(t);
            METRICS
                .upstream_healthy
                .with_label_values(&[self.name.as_str(), t.label.as_str()])
                .set(healthy as i64);
        }
    }
}

fn build_health_check(
    hc: &crate::config::HealthCheckSection,
    tls: bool,
    sni: Option<&str>,
) -> Box<dyn HealthCheck + Send + Sync> {
    match &hc.path {
        Some(path) => {
            let host = hc.host.as_deref().or(sni).unwrap_or("localhost");
            let mut check = HttpHealthCheck::new(host, tls);
            // The path was validated at compile time; fall back to "/" rather than panic.
            if let Ok(uri) = path.parse::<http::Uri>() {
                check.req.set_uri(uri);
            }
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            // Any 2xx/3xx is healthy (many services answer 204 on /healthz).
            check.validator = Some(Box::new(|resp: &pingora::http::ResponseHeader| {
                let code = resp.status.as_u16();
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unhealthy status", code),
                        format!("health check answered {code}"),
                    )
                }
            }));
            Box::new(check)
        }
        None => {
            let mut check = TcpHealthCheck::new();
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check
        }
    }
}

/// Drives health checks for every pool of whatever snapshot is live.
pub struct HealthCheckService {
    pub handle: Arc<GatewayHandle>,
}

/// How often the service looks for due checks; pools keep their own interval.
const HEALTH_TICK: Duration = Duration::from_millis(100);

#[async_trait]
impl BackgroundService for HealthCheckService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let gateway = self.handle.load();
            for pool in gateway.pools.values() {
                if pool.claim_due_check() {
                    let pool = pool.clone();
                    // Each pool's round runs on its own; a slow target never
                    // delays the checks of another pool.
                    tokio::spawn(async move { pool.run_health_check().await });
                }
            }
            drop(gateway);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(HEALTH_TICK) => {}
            }
        }
    }
}
