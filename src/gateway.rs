//! The compiled, immutable snapshot of a config, and the live handle that
//! swaps it.
//!
//! [`compile`] turns a type-checked [`LoadedConfig`] into a [`Gateway`]:
//! cross-references resolved (a route's upstream, transforms, CORS policy),
//! regexes built, header names parsed, certificates loaded, pools created.
//! Every problem found is reported with its key path and line, all at once.
//! A request takes one `Arc<Gateway>` from the [`GatewayHandle`] when it
//! starts and uses it to the end, so a reload never shows a request half old
//! and half new config.
//!
//! Listener addresses, TLS listeners and thread counts are structural: they
//! are fixed when the server starts and change only with a graceful upgrade.
//! They are compiled into [`ListenerPlan`], apart from the swappable snapshot.

use std::collections::{BTreeMap, HashSet};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};
use prometheus::Histogram;
use sha2::{Digest, Sha256};

use crate::auth::{AuthPolicy, RouteAuth};
use crate::cache::{CachePolicy, KeyQuery, RouteCache};
use crate::config::{join_key, ConfigError, LoadedConfig, Problem, SourceMap};
use crate::observe::{AccessLogTarget, METRICS};
use crate::ratelimit::cluster::{ClusterCounter, ClusterState, Fallback};
use crate::ratelimit::{FloodGuard, LimitKey, RateLimitPolicy, SketchSize};
use crate::router::{PathMatch, RouteSpec, Router};
use crate::tls::{CertEntry, CertStore};
use crate::transform::{CorsPolicy, HeaderOps};
use crate::upstream::Pool;

/// A route after compilation.
pub struct Route {
    pub name: String,
    pub pool: Arc<Pool>,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
    pub request_ops: HeaderOps,
    pub response_ops: HeaderOps,
    pub cors: Option<Arc<CorsPolicy>>,
    /// Who may call this route; `None` when anyone may.
    pub auth: Option<RouteAuth>,
    /// Identity headers the gateway owns (`x-consumer`, forwarded claims of
    /// every auth policy): removed from every client request before
    /// forwarding, so no client can spoof an identity.
    pub identity_headers: Arc<[http::HeaderName]>,
    /// Limits that must all admit a request (`rate_limit`).
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// Their `RateLimit-Policy` header value, built once here.
    pub rate_limit_policy: Option<http::HeaderValue>,
    /// This route's latency histogram, looked up once here instead of per request.
    pub duration: Histogram,
    /// How this route's responses are cached; `None` when they are not.
    pub cache: Option<crate::cache::RouteCache>,
    /// The route's WAF mode and rule exclusions.
    pub waf: crate::waf::RouteWaf,
    /// `frontdesk_waf_requests_total{route, verdict="pass"}`, the commonest
    /// WAF outcome, looked up once here; `None` when no `[waf]` inspects
    /// the route (so no series appears for it).
    pub waf_passed: Option<prometheus::IntCounter>,
}

/// Per-request limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_request_body: u64,
    pub max_header_size: usize,
    /// Longest request target (path and query) accepted.
    pub max_uri_length: usize,
    /// Longest pause allowed while a client sends a request body.
    pub client_timeout: Duration,
    /// Idle time allowed between requests on a client keep-alive connection.
    pub keepalive_timeout_secs: u64,
}

/// The compiled snapshot one request works with.
pub struct Gateway {
    pub router: Router,
    pub routes: Vec<Arc<Route>>,
    pub pools: BTreeMap<String, Arc<Pool>>,
    pub limits: RequestLimits,
    pub access_log: AccessLogTarget,
    /// `[server] max_requests_per_ip`, checked before routing.
    pub flood_guard: Option<Arc<FloodGuard>>,
    /// Proxies whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[cluster]`, and every cluster-scope counter to sync through it.
    pub cluster: Option<Arc<ClusterState>>,
    pub cluster_counters: Vec<Arc<ClusterCounter>>,
    /// The `[waf]` section, compiled; `None` when there is none.
    pub waf: Option<Arc<crate::waf::Waf>>,
    /// Every `[rate_limits.*]` block, by name.
    pub rate_policies: BTreeMap<String, Arc<RateLimitPolicy>>,
    /// What each pool, limit and the flood guard was built from (their
    /// sections' text), so that a reload keeps the unchanged ones, and with
    /// them their health state and counts.
    pub fingerprints: BTreeMap<String, String>,
    /// sha256 of the config text, shown on /status.
    pub config_hash: String,
    pub loaded_at: SystemTime,
    pub source: PathBuf,
}

/// A TLS listener to open at start.
pub struct TlsListenerPlan {
    pub listen: String,
    pub certs: CertStore,
    pub h2: bool,
    /// Client-certificate CA bundle (mTLS) and whether a certificate is required.
    pub client_ca: Option<(PathBuf, bool)>,
}

/// What the server opens at start (changes need a graceful upgrade).
pub struct ListenerPlan {
    pub listen: Vec<String>,
    pub admin_listen: Option<String>,
    pub tls: Vec<TlsListenerPlan>,
    pub threads: usize,
    pub work_stealing: bool,
    pub h2c: bool,
    pub grace_period: Duration,
    pub pid_file: String,
    pub upgrade_socket: String,
    /// `[server.cache] memory`: the store is sized once per process.
    pub cache_memory: u64,
    /// How long open client connections may stay after shutdown begins.
    pub drain_idle: Duration,
    /// How long a new connection may take to send its first request head.
    pub header_timeout: Duration,
    /// Client connections open at once (0: no cap).
    pub max_connections: usize,
}

/// Output of [`compile`].
pub struct Compiled {
    pub gateway: Gateway,
    pub listeners: ListenerPlan,
}

/// The live snapshot; swapped whole on reload.
pub struct GatewayHandle {
    current: ArcSwap<Gateway>,
    /// One reload at a time (SIGHUP, `POST /reload` and `frontdesk reload`
    /// may arrive together).
    reloading: Mutex<()>,
    status: Mutex<ReloadStatus>,
    /// The running TLS listeners' certificate stores, by listen address.
    cert_stores: Mutex<Vec<(String, Arc<ArcSwap<CertStore>>)>>,
    /// What the running listeners were opened from.
    listener_fingerprint: Mutex<String>,
}

/// The outcome of the reloads so far, for `/status`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_attempt: Option<SystemTime>,
    /// Why the last attempt failed (`None` once one succeeds again).
    pub last_error: Option<String>,
    /// Set when the file changes listeners, which only an upgrade applies.
    pub pending_listener_change: bool,
}

impl GatewayHandle {
    pub fn new(gateway: Gateway) -> GatewayHandle {
        GatewayHandle {
            current: ArcSwap::from_pointee(gateway),
            reloading: Mutex::new(()),
            status: Mutex::new(ReloadStatus::default()),
            cert_stores: Mutex::new(Vec::new()),
            listener_fingerprint: Mutex::new(String::new()),
        }
    }

    /// A cheap, short-lived view of the current snapshot.
    pub fn load(&self) -> Guard<Arc<Gateway>> {
        self.current.load()
    }

    /// The current snapshot, held for as long as the caller needs it.
    pub fn snapshot(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    pub fn store(&self, gateway: Gateway) {
        self.current.store(Arc::new(gateway));
    }

    /// Records what the server's listeners were opened from and their
    /// certificate stores, so reloads can swap certificates and spot
    /// listener changes.
    pub fn register_listener_state(
        &self,
        fingerprint: String,
        cert_stores: Vec<(String, Arc<ArcSwap<CertStore>>)>,
    ) {
        if let Ok(mut f) = self.listener_fingerprint.lock() {
            *f = fingerprint;
        }
        if let Ok(mut c) = self.cert_stores.lock() {
            *c = cert_stores;
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Re-reads the config file, compiles it beside the running snapshot
    /// (pools, limits and the flood guard that did not change are kept) and
    /// swaps it in; certificates of unchanged TLS listeners are swapped too.
    /// Requests in flight finish on the snapshot they started with. On any
    /// problem nothing changes and the problems are returned. Blocking (file
    /// reads, name resolution): call it off the request path.
    pub fn reload(&self) -> Result<Arc<Gateway>, ConfigError> {
        let _one_at_a_time = self.reloading.lock();
        let previous = self.snapshot();
        let started = std::time::Instant::now();
        let result = crate::config::load_file(&previous.source)
            .and_then(|loaded| compile_with(&loaded, Some(&previous)));
        let mut status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        status.last_attempt = Some(SystemTime::now());
        let outcome = match result {
            Ok(compiled) => {
                let listeners_changed = self
                    .listener_fingerprint
                    .lock()
                    .map(|f| *f != compiled.listeners.fingerprint())
                    .unwrap_or(false);
                if listeners_changed {
                    log::warn!(
                        "config reload: listener settings changed ([server] listen, tls, threads, ...); they take effect with a graceful upgrade (frontdesk run -u), the rest applies now"
                    );
                }
                if let Ok(stores) = self.cert_stores.lock() {
                    for tls in compiled.listeners.tls {
                        if let Some((_, store)) = stores.iter().find(|(l, _)| *l == tls.listen) {
                            store.store(Arc::new(tls.certs));
                        }
                    }
                }
                let gateway = Arc::new(compiled.gateway);
                self.current.store(gateway.clone());
                purge_changed_caches(&previous, &gateway);
                METRICS.config_reloads.with_label_values(&["ok"]).inc();
                status.reloads_ok += 1;
                status.last_error = None;
                status.pending_listener_change = listeners_changed;
                log::info!(
                    "config reloaded from {} in {} ms ({} routes)",
                    gateway.source.display(),
                    started.elapsed().as_millis(),
                    gateway.routes.len()
                );
                Ok(gateway)
            }
            Err(e) => {
                METRICS.config_reloads.with_label_values(&["error"]).inc();
                status.reloads_failed += 1;
                status.last_error = Some(e.to_string());
                log::error!("config reload failed; still serving the previous config:\n{e}");
                Err(e)
            }
        };
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
        outcome
    }
}

/// Drops what routes cached under a cache setup that a reload changed or
/// removed, so no entry outlives the policy (ttl, key, identity rule) it
/// was stored under.
fn purge_changed_caches(previous: &Gateway, next: &Gateway) {
    for (key, fp) in &previous.fingerprints {
        let Some(route) = key
            .strip_prefix("routes.")
            .and_then(|k| k.strip_suffix(".cache"))
        else {
            continue;
        };
        if next.fingerprints.get(key) != Some(fp) {
            let n = crate::cache::purge_route(route);
            if n > 0 {
                log::info!("config reload: route {route:?} changed its cache; {n} entries dropped");
            }
        }
    }
}

impl ListenerPlan {
    /// What opening these listeners depends on; a reload compares it.
    pub fn fingerprint(&self) -> String {
        let tls: Vec<String> = self
            .tls
            .iter()
            .map(|t| format!("{} h2={} ca={:?}", t.listen, t.h2, t.client_ca))
            .collect();
        format!(
            "{:?} {:?} {tls:?} threads={} ws={} h2c={} grace={:?} drain={:?} head={:?} conns={} pid={} sock={} cache={}",
            self.listen,
            self.admin_listen,
            self.threads,
            self.work_stealing,
            self.h2c,
            self.grace_period,
            self.drain_idle,
            self.header_timeout,
            self.max_connections,
            self.pid_file,
            self.upgrade_socket,
            self.cache_memory
        )
    }
}

/// Resolves a path from the config against the config file's folder.
pub fn resolve_path(base_dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

struct Ctx<'a> {
    map: &'a SourceMap,
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        let p = self.map.problem(path, msg);
        self.problems.push(p);
    }
}

const METHOD_TOKENS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Compiles a loaded file into a snapshot and a listener plan.
pub fn compile(loaded: &LoadedConfig) -> Result<Compiled, ConfigError> {
    compile_with(loaded, None)
}

/// Compiles a loaded file; pools, limits and the flood guard whose sections
/// did not change since `previous` are carried over as they are (health
/// state, counts and in-flight slots included).
pub fn compile_with(
    loaded: &LoadedConfig,
    previous: Option<&Gateway>,
) -> Result<Compiled, ConfigError> {
    let cfg = &loaded.config;
    let mut fingerprints = BTreeMap::new();
    // The previous object for `key` when its section is unchanged.
    let unchanged = |key: &str, fp: &str| {
        previous.is_some_and(|p| p.fingerprints.get(key).is_some_and(|old| old == fp))
    };
    let mut cx = Ctx {
        map: &loaded.source_map,
        problems: Vec::new(),
    };

    // --- [server] ---------------------------------------------------------
    let server = &cfg.server;
    let mut seen_addrs = HashSet::new();
    let mut check_addr = |cx: &mut Ctx, path: String, addr: &str| {
        let resolves = addr.to_socket_addrs().map(|mut it| it.next().is_some());
        match resolves {
            Ok(true) => {}
            _ => cx.err(
                path.clone(),
                format!("{addr:?} is not a listen address like \"127.0.0.1:8080\" or \"[::]:443\""),
            ),
        }
        if !seen_addrs.insert(addr.to_string()) {
            cx.err(path, format!("{addr:?} is listened on twice"));
        }
    };
    if server.listen.is_empty() && server.tls.is_empty() {
        cx.err(
            "server.listen",
            "no listener: give server.listen or a [[server.tls]] block",
        );
    }
    for (i, a) in server.listen.iter().enumerate() {
        check_addr(&mut cx, format!("server.listen[{i}]"), a);
    }
    if let Some(a) = &server.admin_listen {
        check_addr(&mut cx, "server.admin_listen".into(), a);
    }
    let mut tls_plans = Vec::new();
    for (i, t) in server.tls.iter().enumerate() {
        check_addr(&mut cx, format!("server.tls[{i}].listen"), &t.listen);
        if t.certs.is_empty() {
            cx.err(
                format!("server.tls[{i}].certs"),
                "a TLS listener needs at least one certificate",
            );
        }
        let mut entries = Vec::new();
        for (j, c) in t.certs.iter().enumerate() {
            let cert = resolve_path(&loaded.base_dir, &c.cert);
            let key = resolve_path(&loaded.base_dir, &c.key);
            match CertEntry::load(&cert, &key) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let field = match e {
                        crate::tls::CertError::Key { .. }
                        | crate::tls::CertError::Mismatch { .. } => "key",
                        crate::tls::CertError::Read { ref path, .. }
                            if *path == key.display().to_string() =>
                        {
                            "key"
                        }
                        _ => "cert",
                    };
                    cx.err(format!("server.tls[{i}].certs[{j}].{field}"), e.to_string());
                }
            }
        }
        let client_ca = t.client_ca.as_ref().map(|ca| {
            let path = resolve_path(&loaded.base_dir, ca);
            if let Err(e) = crate::tls::check_ca_bundle(&path) {
                cx.err(format!("server.tls[{i}].client_ca"), e.to_string());
            }
            (path, t.client_auth == crate::config::ClientAuth::Required)
        });
        tls_plans.push(TlsListenerPlan {
            listen: t.listen.clone(),
            certs: CertStore { entries },
            h2: t.h2,
            client_ca,
        });
    }
    if server.threads > 1024 {
        cx.err("server.threads", "at most 1024 threads (0 = one per core)");
    }
    let max_header_size = usize::try_from(server.max_header_size.as_u64()).unwrap_or(usize::MAX);
    if max_header_size < 1024 {
        cx.err("server.max_header_size", "must be at least 1KiB");
    }
    if server.client_timeout < Duration::from_secs(1) {
        cx.err("server.client_timeout", "must be at least 1s");
    }
    if server.header_timeout < Duration::from_secs(1) {
        cx.err("server.header_timeout", "must be at least 1s");
    }
    let max_uri_length = usize::try_from(server.max_uri_length.as_u64()).unwrap_or(usize::MAX);
    if max_uri_length < 256 {
        cx.err("server.max_uri_length", "must be at least 256B");
    }
    let access_log = AccessLogTarget::parse(&server.access_log, &loaded.base_dir);
    if let AccessLogTarget::File(p) = &access_log {
        if let Some(dir) = p.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                cx.err(
                    "server.access_log",
                    format!(
                        "folder {} does not exist (use \"stdout\", \"off\" or a file path)",
                        dir.display()
                    ),
                );
            }
        }
    }

    // --- [upstreams.*] ----------------------------------------------------
    let mut pools = BTreeMap::new();
    for (name, up) in &cfg.upstreams {
        let path = join_key("upstreams", name);
        if let Some(hc) = &up.health_check {
            if let Some(p) = &hc.path {
                if !p.starts_with('/') || p.parse::<http::Uri>().is_err() {
                    cx.err(
                        format!("{path}.health_check.path"),
                        format!("{p:?} must be a path starting with '/'"),
                    );
                }
            }
            if hc.interval.is_zero() {
                cx.err(
                    format!("{path}.health_check.interval"),
                    "must be greater than 0",
                );
            }
            if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                cx.err(
                    format!("{path}.health_check"),
                    "thresholds must be at least 1",
                );
            }
        }
        if up.connect_timeout.is_zero() || up.read_timeout.is_zero() || up.write_timeout.is_zero() {
            cx.err(path.clone(), "timeouts must be greater than 0");
        }
        let fp_key = format!("upstreams.{name}");
        let fp = format!("{up:?}");
        match Pool::build(name, up) {
            Ok(pool) => {
                // Same section and the same addresses (names resolve again on
                // every load): keep the running pool and its health state.
                let kept = previous
                    .filter(|_| unchanged(&fp_key, &fp))
                    .and_then(|p| p.pools.get(name))
                    .filter(|old| {
                        old.targets
                            .iter()
                            .map(|t| &t.label)
                            .eq(pool.targets.iter().map(|t| &t.label))
                    })
                    .cloned();
                pools.insert(name.clone(), kept.unwrap_or_else(|| Arc::new(pool)));
                fingerprints.insert(fp_key, fp);
            }
            Err(e) => {
                let at = match e {
                    crate::upstream::PoolError::Resolve { .. } => format!("{path}.targets"),
                    _ => path.clone(),
                };
                cx.err(at, e.to_string());
            }
        }
    }

    // --- [transforms.*] and [cors.*] -------------------------------------
    let mut transforms: BTreeMap<&str, (HeaderOps, HeaderOps)> = BTreeMap::new();
    for (name, t) in &cfg.transforms {
        let path = join_key("transforms", name);
        let mut build = |dir: &str, sec: &crate::config::HeaderOpsSection| {
            let mut ops = HeaderOps::default();
            for h in &sec.remove_headers {
                if let Err(e) = ops.push_remove(h) {
                    cx.err(format!("{path}.{dir}.remove_headers"), e.to_string());
                }
            }
            for (k, v) in &sec.set_headers {
                if let Err(e) = ops.push_set(k, v) {
                    cx.err(format!("{path}.{dir}.set_headers"), e.to_string());
                }
            }
            for (k, v) in &sec.add_headers {
                if let Err(e) = ops.push_add(k, v) {
                    cx.err(format!("{path}.{dir}.add_headers"), e.to_string());
                }
            }
            ops
        };
        let req = build("request", &t.request);
        let resp = build("response", &t.response);
        transforms.insert(name.as_str(), (req, resp));
    }
    let mut cors = BTreeMap::new();
    for (name, c) in &cfg.cors {
        let path = join_key("cors", name);
        for m in &c.allow_methods {
            if !is_method_token(m) {
                cx.err(
                    format!("{path}.allow_methods"),
                    format!("{m:?} is not an HTTP method"),
                );
            }
        }
        match CorsPolicy::new(
            name,
            &c.allow_origins,
            &c.allow_methods,
            &c.allow_headers,
            &c.expose_headers,
            c.allow_credentials,
            c.max_age,
        ) {
            Ok(p) => {
                cors.insert(name.as_str(), Arc::new(p));
            }
            Err(e) => cx.err(path, e),
        }
    }

    // --- [auth.*] ----------------------------------------------------------
    let has_client_ca = server.tls.iter().any(|t| t.client_ca.is_some());
    let mut auth_policies: BTreeMap<&str, Arc<AuthPolicy>> = BTreeMap::new();
    for (name, a) in &cfg.auth {
        let path = join_key("auth", name);
        let mut report = |key: &str, msg: String| {
            let at = if key.is_empty() {
                path.clone()
            } else {
                format!("{path}.{key}")
            };
            cx.err(at, msg);
        };
        if let Some(p) =
            crate::auth::compile::policy(name, a, &loaded.base_dir, has_client_ca, &mut report)
        {
            auth_policies.insert(name.as_str(), Arc::new(p));
        }
    }
    let identity_headers: Arc<[http::HeaderName]> = {
        let mut names = vec![http::HeaderName::from_static("x-consumer")];
        for p in auth_policies.values() {
            for h in p.identity_headers() {
                if !names.contains(&h) {
                    names.push(h);
                }
            }
        }
        names.into()
    };

    // --- [server] client identity and flood guard ---------------------------
    let mut trusted_proxies = Vec::new();
    for (i, t) in server.trusted_proxies.iter().enumerate() {
        let parsed = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => cx.err(
                format!("server.trusted_proxies[{i}]"),
                format!("{t:?} is not an address or CIDR like \"10.0.0.0/8\""),
            ),
        }
    }
    let flood_guard = match &server.max_requests_per_ip {
        Some(r) => {
            let ok = check_rate(&mut cx, "server.max_requests_per_ip", r.limit, r.per);
            let fp = format!("{r:?}");
            let kept = previous
                .filter(|_| unchanged("server.max_requests_per_ip", &fp))
                .and_then(|p| p.flood_guard.clone());
            fingerprints.insert("server.max_requests_per_ip".to_string(), fp);
            ok.then(|| {
                kept.unwrap_or_else(|| {
                    Arc::new(FloodGuard::new(r.limit, r.per, SketchSize::default()))
                })
            })
        }
        None => None,
    };

    // --- [cluster] and [rate_limits.*] ----------------------------------------
    let cluster = cfg.cluster.as_ref().and_then(|c| {
        if let Err(e) = redis::Client::open(c.redis.as_str()) {
            cx.err(
                "cluster.redis",
                format!(
                    "{:?} is not a Redis URL like \"redis://127.0.0.1:6379\": {e}",
                    c.redis
                ),
            );
            return None;
        }
        if c.sync_interval.is_zero() {
            cx.err("cluster.sync_interval", "must be greater than 0");
            return None;
        }
        let fallback = match c.on_redis_error {
            crate::config::OnRedisError::Local => Fallback::Local,
            crate::config::OnRedisError::Allow => Fallback::Allow,
            crate::config::OnRedisError::Deny => Fallback::Deny,
        };
        let fp = format!("{c:?}");
        let kept = previous
            .filter(|_| unchanged("cluster", &fp))
            .and_then(|p| p.cluster.clone());
        fingerprints.insert("cluster".to_string(), fp);
        Some(kept.unwrap_or_else(|| {
            Arc::new(ClusterState::new(
                &c.redis,
                fallback,
                c.sync_interval,
                &c.key_prefix,
            ))
        }))
    });
    let cluster_fp = fingerprints.get("cluster").cloned().unwrap_or_default();
    let mut cluster_counters = Vec::new();
    let mut rate_policies: BTreeMap<&str, Arc<RateLimitPolicy>> = BTreeMap::new();
    for (name, l) in &cfg.rate_limits {
        let path = join_key("rate_limits", name);
        // A limit's counts depend on its own section and, for cluster
        // scope, on the [cluster] it counts through.
        let fp_key = format!("rate_limits.{name}");
        let fp = format!("{l:?} {cluster_fp}");
        if let Some(old) = previous
            .filter(|_| unchanged(&fp_key, &fp))
            .and_then(|p| p.rate_policies.get(name))
        {
            if let Some(c) = old.rate.as_ref().and_then(|r| r.cluster.clone()) {
                cluster_counters.push(c);
            }
            rate_policies.insert(name.as_str(), old.clone());
            fingerprints.insert(fp_key, fp);
            continue;
        }
        fingerprints.insert(fp_key, fp);
        let before = cx.problems.len();
        let key = match LimitKey::parse(&l.key) {
            Ok(k) => Some(k),
            Err(e) => {
                cx.err(format!("{path}.key"), e);
                None
            }
        };
        let rate = match (l.limit, l.per) {
            (Some(limit), Some(per)) => {
                check_rate(&mut cx, &path, limit, per).then_some((limit, per))
            }
            (None, None) => None,
            (Some(_), None) => {
                cx.err(
                    format!("{path}.limit"),
                    "a limit needs per = \"1s\" (or \"1m\", \"1h\", ...)",
                );
                None
            }
            (None, Some(_)) => {
                cx.err(format!("{path}.per"), "per needs limit = N");
                None
            }
        };
        if l.limit.is_none() && l.max_in_flight.is_none() {
            cx.err(
                path.clone(),
                "give limit + per (a rate), max_in_flight (a concurrency cap), or both",
            );
        }
        if l.max_in_flight == Some(0) {
            cx.err(format!("{path}.max_in_flight"), "must be at least 1");
        }
        if !(16..=1 << 20).contains(&l.sketch_width) {
            cx.err(
                format!("{path}.sketch_width"),
                "must be between 16 and 1048576",
            );
        }
        if !(1..=16).contains(&l.sketch_depth) {
            cx.err(format!("{path}.sketch_depth"), "must be between 1 and 16");
        }
        let cluster_counter = match (l.scope, &rate, &cluster) {
            (crate::config::LimitScope::Cluster, Some((_, per)), Some(state)) => {
                if per.subsec_nanos() != 0 {
                    cx.err(
                        format!("{path}.per"),
                        "a cluster limit's window must be whole seconds (windows are aligned to the clock)",
                    );
                }
                let c = Arc::new(ClusterCounter::new(name, *per, state.clone(), l.max_keys));
                cluster_counters.push(c.clone());
                Some(c)
            }
            (crate::config::LimitScope::Cluster, _, None) if cfg.cluster.is_none() => {
                cx.err(
                    format!("{path}.scope"),
                    "scope = \"cluster\" needs a [cluster] section with redis = \"redis://...\"",
                );
                None
            }
            (crate::config::LimitScope::Cluster, None, _) if l.limit.is_none() => {
                cx.err(
                    format!("{path}.scope"),
                    "only rates (limit + per) can be shared; max_in_flight is per gateway",
                );
                None
            }
            _ => None,
        };
        if cx.problems.len() == before {
            if let Some(key) = key {
                let size = SketchSize {
                    depth: l.sketch_depth,
                    width: l.sketch_width,
                };
                let policy = RateLimitPolicy::new(
                    name,
                    key,
                    rate.map(|(limit, per)| (limit, per, size, cluster_counter)),
                    l.max_in_flight,
                );
                rate_policies.insert(name.as_str(), Arc::new(policy));
            }
        }
    }

    // --- [waf] ------------------------------------------------------------------
    let waf = cfg
        .waf
        .as_ref()
        .and_then(|w| compile_waf(&mut cx, w, &loaded.base_dir));

    // --- [cache.*] ------------------------------------------------------------
    let cache_budget = server.cache.memory.as_u64();
    if cache_budget < 1 << 20 {
        cx.err("server.cache.memory", "must be at least 1MiB");
    }
    let mut cache_policies: BTreeMap<&str, Arc<CachePolicy>> = BTreeMap::new();
    for (name, c) in &cfg.cache {
        let path = join_key("cache", name);
        let before = cx.problems.len();
        if c.max_ttl.is_zero() {
            cx.err(format!("{path}.max_ttl"), "must be greater than 0");
        }
        if c.ttl > c.max_ttl {
            cx.err(
                format!("{path}.ttl"),
                format!(
                    "ttl ({}) is longer than max_ttl ({})",
                    humantime::format_duration(c.ttl),
                    humantime::format_duration(c.max_ttl)
                ),
            );
        }
        if c.methods.is_empty() {
            cx.err(format!("{path}.methods"), "give GET, HEAD or both");
        }
        for m in &c.methods {
            if !m.eq_ignore_ascii_case("GET") && !m.eq_ignore_ascii_case("HEAD") {
                cx.err(
                    format!("{path}.methods"),
                    format!("{m:?} cannot be cached; only GET and HEAD can"),
                );
            }
        }
        if c.statuses.is_empty() {
            cx.err(format!("{path}.statuses"), "an empty list stores nothing");
        }
        for s in &c.statuses {
            if !(200..=599).contains(s) || *s == 206 || *s == 304 {
                cx.err(
                    format!("{path}.statuses"),
                    format!("{s} cannot be stored (give final statuses 200-599, not 206 or 304)"),
                );
            }
        }
        let key_query = match &c.key_query {
            crate::config::KeyQuerySection::All => KeyQuery::All,
            crate::config::KeyQuerySection::None => KeyQuery::None,
            crate::config::KeyQuerySection::Only(names) => {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                KeyQuery::Only(names)
            }
            crate::config::KeyQuerySection::Invalid(v) => {
                cx.err(
                    format!("{path}.key_query"),
                    format!("{v:?}: give \"all\", \"none\" or a list like [\"page\", \"sort\"]"),
                );
                KeyQuery::All
            }
        };
        let max_object = c.max_object_size.as_u64();
        let store_max = (cache_budget / 8).min(64 << 20);
        if max_object == 0 || max_object > store_max {
            cx.err(
                format!("{path}.max_object_size"),
                format!(
                    "must be between 1B and {} (an eighth of server.cache.memory, at most 64MiB)",
                    bytesize::ByteSize::b(store_max)
                ),
            );
        }
        if c.lock_timeout.is_zero() {
            cx.err(format!("{path}.lock_timeout"), "must be greater than 0");
        }
        if cx.problems.len() == before {
            cache_policies.insert(
                name.as_str(),
                Arc::new(CachePolicy::new(
                    name,
                    c.ttl,
                    c.max_ttl,
                    &c.methods,
                    &c.statuses,
                    (c.stale_while_revalidate, c.stale_if_error),
                    key_query,
                    c.store_set_cookie,
                    c.honor_client_no_cache,
                    usize::try_from(max_object).unwrap_or(usize::MAX),
                    c.lock_timeout,
                )),
            );
        }
    }

    // --- [[routes]] -------------------------------------------------------
    let mut specs = Vec::new();
    let mut routes = Vec::new();
    let mut names = HashSet::new();
    if cfg.routes.is_empty() {
        cx.err("routes", "no [[routes]]: every request would get 404");
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.name.trim().is_empty() {
            cx.err(
                format!("{path}.name"),
                "a route needs a name (used in logs and metrics)",
            );
        } else if !names.insert(r.name.as_str()) {
            cx.err(
                format!("{path}.name"),
                format!("route name {:?} is used twice", r.name),
            );
        }
        let path_match = match (&r.path, &r.path_prefix, &r.path_regex) {
            (Some(p), None, None) => Some(("path", PathMatch::Exact(p.clone()))),
            (None, Some(p), None) => Some(("path_prefix", PathMatch::Prefix(p.clone()))),
            (None, None, Some(p)) => Some(("path_regex", PathMatch::Regex(p.clone()))),
            (None, None, None) => {
                // No path given: the route matches every path.
                Some(("path_prefix", PathMatch::Prefix("/".into())))
            }
            _ => {
                cx.err(
                    path.clone(),
                    "give only one of path, path_prefix, path_regex",
                );
                None
            }
        };
        if let Some((key, pm)) = &path_match {
            match pm {
                PathMatch::Exact(p) | PathMatch::Prefix(p) => {
                    if !p.starts_with('/') {
                        cx.err(
                            format!("{path}.{key}"),
                            format!("{p:?} must start with '/'"),
                        );
                    } else if let Ok(n) = crate::router::normalize_path(p) {
                        if n != *p && n.trim_end_matches('/') != p.trim_end_matches('/') {
                            cx.err(
                                format!("{path}.{key}"),
                                format!(
                                    "{p:?} is not in normal form (requests are matched as {n:?})"
                                ),
                            );
                        }
                    } else {
                        cx.err(
                            format!("{path}.{key}"),
                            format!("{p:?} has a malformed percent-escape"),
                        );
                    }
                }
                PathMatch::Regex(re) => {
                    if let Err(e) = regex::Regex::new(re) {
                        cx.err(format!("{path}.path_regex"), format!("invalid regex: {e}"));
                    }
                }
            }
        }
        if r.strip_prefix && !matches!(path_match, Some((_, PathMatch::Prefix(_)))) {
            cx.err(
                format!("{path}.strip_prefix"),
                "strip_prefix needs path_prefix",
            );
        }
        let methods = r.methods.as_ref().map(|ms| {
            let mut out = Vec::new();
            for m in ms {
                let up = m.to_ascii_uppercase();
                if !is_method_token(&up) {
                    cx.err(
                        format!("{path}.methods"),
                        format!("{m:?} is not an HTTP method"),
                    );
                }
                out.push(up);
            }
            out
        });
        if matches!(&methods, Some(m) if m.is_empty()) {
            cx.err(
                format!("{path}.methods"),
                "an empty list allows no method; remove the key to allow all",
            );
        }
        let mut hosts = Vec::new();
        for h in &r.host.0 {
            let lower = h.to_ascii_lowercase();
            let body = lower.strip_prefix("*.").unwrap_or(&lower);
            let ok = !body.is_empty()
                && !body.contains('*')
                && !body.contains(':')
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                cx.err(
                    format!("{path}.host"),
                    format!("{h:?} is not a host name (\"api.example.com\" or \"*.example.com\", no port)"),
                );
            }
            hosts.push(lower);
        }
        let pool = match pools.get(&r.upstream) {
            Some(p) => Some(p.clone()),
            None => {
                if !cfg.upstreams.contains_key(&r.upstream) {
                    cx.err(
                        format!("{path}.upstream"),
                        format!(
                            "no [upstreams.{}] block (defined: {})",
                            r.upstream,
                            list(cfg.upstreams.keys())
                        ),
                    );
                }
                None
            }
        };
        let mut request_ops = HeaderOps::default();
        let mut response_ops = HeaderOps::default();
        for t in &r.transform.0 {
            match transforms.get(t.as_str()) {
                Some((req, resp)) => {
                    request_ops.extend(req);
                    response_ops.extend(resp);
                }
                None => cx.err(
                    format!("{path}.transform"),
                    format!(
                        "no [transforms.{t}] block (defined: {})",
                        list(cfg.transforms.keys())
                    ),
                ),
            }
        }
        let route_cors = match &r.cors {
            Some(c) => match cors.get(c.as_str()) {
                Some(p) => Some(p.clone()),
                None => {
                    if !cfg.cors.contains_key(c) {
                        cx.err(
                            format!("{path}.cors"),
                            format!("no [cors.{c}] block (defined: {})", list(cfg.cors.keys())),
                        );
                    }
                    None
                }
            },
            None => None,
        };
        let mut policies = Vec::new();
        for a in &r.auth.0 {
            match auth_policies.get(a.as_str()) {
                Some(p) => policies.push(p.clone()),
                None if !cfg.auth.contains_key(a) => cx.err(
                    format!("{path}.auth"),
                    format!("no [auth.{a}] block (defined: {})", list(cfg.auth.keys())),
                ),
                None => {}
            }
        }
        if let Some(groups) = &r.allow_groups {
            if r.auth.0.is_empty() {
                cx.err(
                    format!("{path}.allow_groups"),
                    "allow_groups needs auth: name the [auth.*] policy that identifies the caller",
                );
            } else if groups.is_empty() {
                cx.err(
                    format!("{path}.allow_groups"),
                    "an empty list admits nobody; remove the key to admit every consumer",
                );
            }
        }
        let mut route_limits = Vec::new();
        for l in &r.rate_limit.0 {
            match rate_policies.get(l.as_str()) {
                Some(p) => route_limits.push(p.clone()),
                None if !cfg.rate_limits.contains_key(l) => cx.err(
                    format!("{path}.rate_limit"),
                    format!(
                        "no [rate_limits.{l}] block (defined: {})",
                        list(cfg.rate_limits.keys())
                    ),
                ),
                None => {}
            }
        }
        let route_cache = match &r.cache {
            Some(c) => match cache_policies.get(c.as_str()) {
                Some(p) => {
                    let vary_on_auth = cfg
                        .cache
                        .get(c)
                        .and_then(|s| s.vary_on_auth)
                        .unwrap_or(!r.auth.0.is_empty());
                    fingerprints.insert(
                        format!("routes.{}.cache", r.name),
                        format!("{:?} {vary_on_auth}", cfg.cache.get(c)),
                    );
                    Some(RouteCache {
                        policy: p.clone(),
                        vary_on_auth,
                        route: r.name.as_str().into(),
                    })
                }
                None => {
                    if !cfg.cache.contains_key(c) {
                        cx.err(
                            format!("{path}.cache"),
                            format!("no [cache.{c}] block (defined: {})", list(cfg.cache.keys())),
                        );
                    }
                    None
                }
            },
            None => None,
        };
        let route_waf = crate::waf::RouteWaf {
            mode: match r.waf.as_deref() {
                None | Some("inherit") => None,
                Some("off") => Some(crate::waf::Mode::Off),
                Some("detect") => Some(crate::waf::Mode::Detect),
                Some(other) => {
                    cx.err(
                        format!("{path}.waf"),
                        format!("{other:?}: give \"inherit\", \"off\" or \"detect\""),
                    );
                    None
                }
            },
            exclude: r.waf_exclude.clone(),
        };
        let waf_inspects_route = waf
            .as_ref()
            .is_some_and(|w| w.mode_for(&route_waf) != crate::waf::Mode::Off);
        if (r.waf.is_some() || !r.waf_exclude.is_empty()) && cfg.waf.is_none() {
            cx.err(
                format!("{path}.waf"),
                "the route sets waf options but there is no [waf] section",
            );
        }
        let route_auth = (!policies.is_empty()).then(|| RouteAuth {
            policies,
            allow_groups: r.allow_groups.clone(),
        });
        if let (Some(pool), Some((_, pm))) = (pool, path_match) {
            specs.push(RouteSpec {
                hosts,
                path: pm,
                methods,
            });
            routes.push(Arc::new(Route {
                name: r.name.clone(),
                pool,
                strip_prefix: r.strip_prefix,
                request_ops,
                response_ops,
                cors: route_cors,
                auth: route_auth,
                identity_headers: identity_headers.clone(),
                rate_limit_policy: crate::ratelimit::policy_header(&route_limits),
                rate_limits: route_limits,
                duration: METRICS.duration.with_label_values(&[r.name.as_str()]),
                cache: route_cache,
                waf_passed: waf_inspects_route.then(|| {
                    METRICS
                        .waf_requests
                        .with_label_values(&[r.name.as_str(), "pass"])
                }),
                waf: route_waf,
            }));
        }
    }
    for name in cfg.upstreams.keys() {
        if !cfg.routes.iter().any(|r| &r.upstream == name) {
            log::warn!("upstreams.{name} is not used by any route");
        }
    }

    let router = match Router::new(&specs) {
        Ok(r) => Some(r),
        Err(e) => {
            cx.err("routes", format!("regex set failed to build: {e}"));
            None
        }
    };

    if !cx.problems.is_empty() {
        let mut problems = cx.problems;
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(ConfigError {
            file: loaded.path.clone(),
            problems,
        });
    }
    let Some(router) = router else {
        return Err(ConfigError {
            file: loaded.path.clone(),
            problems: vec![],
        });
    };

    let threads = if server.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        server.threads
    };
    Ok(Compiled {
        gateway: Gateway {
            router,
            routes,
            pools,
            limits: RequestLimits {
                max_request_body: server.max_request_body.as_u64(),
                max_header_size,
                max_uri_length,
                client_timeout: server.client_timeout,
                keepalive_timeout_secs: server.keepalive_timeout.as_secs().max(1),
            },
            access_log,
            flood_guard,
            trusted_proxies,
            cluster,
            cluster_counters,
            waf,
            rate_policies: rate_policies
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            fingerprints,
            config_hash: hex::encode(Sha256::digest(loaded.text.as_bytes())),
            loaded_at: SystemTime::now(),
            source: loaded.path.clone(),
        },
        listeners: ListenerPlan {
            listen: server.listen.clone(),
            admin_listen: server.admin_listen.clone(),
            tls: tls_plans,
            threads,
            work_stealing: server.work_stealing,
            h2c: server.h2c,
            grace_period: server.grace_period,
            pid_file: server.pid_file.clone(),
            upgrade_socket: server.upgrade_socket.clone(),
            cache_memory: server.cache.memory.as_u64(),
            drain_idle: server.drain_idle_connections,
            header_timeout: server.header_timeout,
            max_connections: server.max_connections,
        },
    })
}

/// Compiles `[waf]`: rule files (globs), IP lists, modes. Rule-file
/// problems are reported on `waf.rules` with the rule file, line and id.
fn compile_waf(
    cx: &mut Ctx,
    w: &crate::config::WafSection,
    base_dir: &Path,
) -> Option<Arc<crate::waf::Waf>> {
    use crate::waf::{BodyOverflow, Mode};
    let before = cx.problems.len();
    let mode = match w.mode.as_str() {
        "block" => Mode::Block,
        "detect" => Mode::Detect,
        "off" => Mode::Off,
        other => {
            cx.err(
                "waf.mode",
                format!("{other:?}: give \"block\", \"detect\" or \"off\""),
            );
            Mode::Off
        }
    };
    if !(1..=4).contains(&w.paranoia) {
        cx.err("waf.paranoia", "must be 1 to 4");
    }
    if w.anomaly_threshold == 0 {
        cx.err("waf.anomaly_threshold", "must be at least 1");
    }
    let max_body = usize::try_from(w.max_body.as_u64()).unwrap_or(usize::MAX);
    if max_body > 64 * 1024 {
        cx.err(
            "waf.max_body",
            "at most 64KiB: bodies are inspected before they are forwarded, through Pingora's 64 KiB retry buffer",
        );
    }
    let body_overflow = match w.body_overflow.as_str() {
        "block" => BodyOverflow::Block,
        "pass" => BodyOverflow::Pass,
        other => {
            cx.err(
                "waf.body_overflow",
                format!("{other:?}: give \"block\" (413) or \"pass\" (forward uninspected)"),
            );
            BodyOverflow::Block
        }
    };
    let mut ip_set = |key: &str, list: &[String]| {
        let mut set = prefix_trie::joint::JointPrefixSet::new();
        for (i, ip) in list.iter().enumerate() {
            match crate::waf::engine::parse_net(ip) {
                Some(n) => {
                    set.insert(n);
                }
                None => cx.err(
                    format!("waf.{key}[{i}]"),
                    format!("{ip:?} is not an address or CIDR"),
                ),
            }
        }
        set
    };
    let mut deny = ip_set("deny_ips", &w.deny_ips);
    let allow = ip_set("allow_ips", &w.allow_ips);
    for (i, f) in w.deny_ip_files.iter().enumerate() {
        let path = resolve_path(base_dir, f);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let entry = line.split('#').next().unwrap_or("").trim();
                    if entry.is_empty() {
                        continue;
                    }
                    match crate::waf::engine::parse_net(entry) {
                        Some(net) => {
                            deny.insert(net);
                        }
                        None => cx.err(
                            format!("waf.deny_ip_files[{i}]"),
                            format!(
                                "{}:{}: {entry:?} is not an address or CIDR",
                                path.display(),
                                n + 1
                            ),
                        ),
                    }
                }
            }
            Err(e) => cx.err(
                format!("waf.deny_ip_files[{i}]"),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
    let inspector: Option<Arc<dyn crate::waf::Inspector>> = match &w.crs {
        Some(dir) => {
            if !w.rules.is_empty() {
                cx.err(
                    "waf.rules",
                    "give either crs (the OWASP Core Rule Set) or rules (native rule files), not both",
                );
            }
            compile_crs(cx, w, dir, base_dir)
        }
        None => {
            let crs_only = [
                ("crs_setup", w.crs_setup.is_some()),
                ("crs_exclude", !w.crs_exclude.is_empty()),
                ("detection_paranoia", w.detection_paranoia.is_some()),
            ];
            for (key, set) in crs_only {
                if set {
                    cx.err(
                        format!("waf.{key}"),
                        "applies to the Core Rule Set: set waf.crs too",
                    );
                }
            }
            compile_native_rules(cx, w, base_dir)
        }
    };
    if cx.problems.len() > before {
        return None;
    }
    Some(Arc::new(crate::waf::Waf {
        mode,
        paranoia: w.paranoia,
        anomaly_threshold: w.anomaly_threshold,
        max_body,
        body_overflow,
        deny,
        allow,
        inspector: inspector?,
        audit_log: AccessLogTarget::parse(&w.audit_log, base_dir),
    }))
}

/// The native rule files of `[waf] rules` (globs), compiled.
fn compile_native_rules(
    cx: &mut Ctx,
    w: &crate::config::WafSection,
    base_dir: &Path,
) -> Option<Arc<dyn crate::waf::Inspector>> {
    let mut rules = Vec::new();
    for (i, pattern) in w.rules.iter().enumerate() {
        let full = resolve_path(base_dir, pattern);
        let full = full.to_string_lossy();
        let paths: Vec<PathBuf> = match glob::glob(&full) {
            Ok(p) => p.filter_map(|r| r.ok()).collect(),
            Err(e) => {
                cx.err(
                    format!("waf.rules[{i}]"),
                    format!("{pattern:?} is not a glob: {e}"),
                );
                continue;
            }
        };
        if paths.is_empty() {
            cx.err(
                format!("waf.rules[{i}]"),
                format!("{pattern:?} matches no file (looked for {full})"),
            );
        }
        for p in paths {
            match std::fs::read_to_string(&p) {
                Ok(text) => match crate::waf::rules::parse_file(&p, &text) {
                    Ok(mut r) => rules.append(&mut r),
                    Err(problems) => {
                        for msg in problems {
                            cx.err(format!("waf.rules[{i}]"), msg);
                        }
                    }
                },
                Err(e) => cx.err(
                    format!("waf.rules[{i}]"),
                    format!("cannot read {}: {e}", p.display()),
                ),
            }
        }
    }
    match crate::waf::Engine::compile(&rules, w.paranoia) {
        Ok(e) => Some(Arc::new(e)),
        Err(problems) => {
            for msg in problems {
                cx.err("waf.rules", msg);
            }
            None
        }
    }
}

/// `[waf] crs`: the OWASP Core Rule Set. What it does not support is
/// logged as a warning (and so printed by `frontdesk check`).
fn compile_crs(
    cx: &mut Ctx,
    w: &crate::config::WafSection,
    dir: &str,
    base_dir: &Path,
) -> Option<Arc<dyn crate::waf::Inspector>> {
    let detection = w.detection_paranoia.unwrap_or(w.paranoia);
    if !(1..=4).contains(&detection) || detection < w.paranoia {
        cx.err(
            "waf.detection_paranoia",
            format!("must be 1 to 4 and at least paranoia ({})", w.paranoia),
        );
        return None;
    }
    let opts = crate::waf::seclang::CrsOptions {
        dir: resolve_path(base_dir, dir),
        setup: w.crs_setup.as_deref().map(|s| resolve_path(base_dir, s)),
        paranoia: w.paranoia,
        detection_paranoia: detection,
        anomaly_threshold: w.anomaly_threshold,
        exclude: w.crs_exclude.clone(),
    };
    match crate::waf::seclang::Crs::load(&opts) {
        Ok(crs) => {
            for n in &crs.notes.unsupported {
                log::warn!("waf.crs: {n}");
            }
            for n in &crs.notes.ignored {
                log::info!("waf.crs: {n}");
            }
            log::info!(
                "waf.crs: {} rules loaded from {} ({} regexes on the bounded backtracking engine)",
                crs.rule_count(),
                opts.dir.display(),
                crs.backtracking().len()
            );
            Some(Arc::new(crs))
        }
        Err(problems) => {
            for msg in problems {
                cx.err("waf.crs", msg);
            }
            None
        }
    }
}

/// Checks a `limit` per `per` pair; true when it is usable.
fn check_rate(cx: &mut Ctx, path: &str, limit: u64, per: Duration) -> bool {
    let mut ok = true;
    if limit == 0 {
        cx.err(format!("{path}.limit"), "must be at least 1");
        ok = false;
    }
    // pingora-limits' windows misbehave below a second (its reset check
    // assumes at least 1000 ms have passed), and shorter windows are noise.
    if per < Duration::from_secs(1) {
        cx.err(format!("{path}.per"), "must be at least 1s");
        ok = false;
    }
    if per > Duration::from_secs(86_400) {
        cx.err(format!("{path}.per"), "must be at most 24h");
        ok = false;
    }
    ok
}

fn is_method_token(m: &str) -> bool {
    METHOD_TOKENS.contains(&m)
        || (!m.is_empty()
            && m.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_'))
}

fn list<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = keys.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// Loads, type-checks and compiles a file: what `run` and `check` share.
pub fn load_and_compile(path: &Path) -> Result<(LoadedConfig, Compiled), ConfigError> {
    let loaded = crate::config::load_file(path)?;
    let compiled = compile(&loaded)?;
    Ok((loaded, compiled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn compile_str(text: &str) -> Result<Compiled, ConfigError> {
        let loaded = parse_str(text, Path::new("t.toml"), Path::new(".")).map_err(|e| {
            panic!("type errors in test config: {e}");
        })?;
        compile(&loaded)
    }

    const BASE: &str = "[upstreams.a]\ntargets = [\"127.0.0.1:9\"]\n";

    #[test]
    fn compiles_a_minimal_config() {
        let c = compile_str(&format!(
            "{BASE}[[routes]]\nname = \"r\"\nupstream = \"a\"\n"
        ))
        .unwrap();
        assert_eq!(c.gateway.routes.len(), 1);
        assert_eq!(c.gateway.config_hash.len(), 64);
        assert!(c.listeners.threads >= 1);
    }

    #[test]
    fn reports_every_reference_problem_with_lines() {
        let text = format!(
            "{BASE}\n[[routes]]\nname = \"r\"\nupstream = \"nope\"\n\n[[routes]]\nname = \"r\"\npath = \"/x\"\nstrip_prefix = true\nupstream = \"a\"\ntransform = \"t\"\ncors = \"c\"\nmethods = [\"get\", \"no way\"]\n"
        );
        let err = match compile_str(&text) {
            Err(e) => e,
            Ok(_) => panic!("should fail"),
        };
        let paths: Vec<(&str, usize)> = err
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.line))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("routes[0].upstream", 6),
                ("routes[1].name", 9),
                ("routes[1].strip_prefix", 11),
                ("routes[1].transform", 13),
                ("routes[1].cors", 14),
                ("routes[1].methods", 15),
            ],
            "{err}"
        );
        assert!(err.problems[0].message.contains("upstreams.nope"), "{err}");
    }

    #[test]
    fn rejects_bad_paths_hosts_and_targets() {
        let text = "[upstreams.a]\ntargets = [\"nonsense\"]\n[[routes]]\nname = \"r\"\nhost = \"api.example.com:80\"\npath_prefix = \"pay\"\nupstream = \"a\"\n[[routes]]\nname = \"s\"\npath_regex = \"([\"\npath = \"/x\"\nupstream = \"a\"\n";
        let err = match compile_str(text) {
            Err(e) => e,
            Ok(_) => panic!("should fail"),
        };
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "upstreams.a.targets",
                "routes[0].host",
                "routes[0].path_prefix",
                "routes[1]"
            ],
            "{err}"
        );
    }

    #[test]
    fn a_recompile_keeps_unchanged_pools_and_limits() {
        let text = |limit: u32, target: &str| {
            format!("[upstreams.a]\ntargets = [\"127.0.0.1:9\"]\n[upstreams.b]\ntargets = [\"{target}\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\nrate_limit = [\"x\", \"y\"]\n[[routes]]\nname = \"s\"\nupstream = \"b\"\npath = \"/s\"\n[rate_limits.x]\nlimit = 5\nper = \"1m\"\n[rate_limits.y]\nlimit = {limit}\nper = \"1m\"\n")
        };
        let first = compile_str(&text(5, "127.0.0.1:10")).unwrap().gateway;
        let loaded = parse_str(
            &text(6, "127.0.0.1:11"),
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap();
        let second = compile_with(&loaded, Some(&first)).unwrap().gateway;
        assert!(
            Arc::ptr_eq(&first.pools["a"], &second.pools["a"]),
            "unchanged pool kept"
        );
        assert!(
            !Arc::ptr_eq(&first.pools["b"], &second.pools["b"]),
            "changed pool rebuilt"
        );
        assert!(Arc::ptr_eq(
            &first.rate_policies["x"],
            &second.rate_policies["x"]
        ));
        assert!(!Arc::ptr_eq(
            &first.rate_policies["y"],
            &second.rate_policies["y"]
        ));
        assert!(Arc::ptr_eq(
            &second.routes[0].rate_limits[0],
            &first.rate_policies["x"]
        ));
    }

    #[test]
    fn missing_cert_files_name_the_key() {
        let text = format!("[server]\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = \"/nonexistent/a.pem\", key = \"/nonexistent/a.key\" }}]\n{BASE}[[routes]]\nname = \"r\"\nupstream = \"a\"\n");
        let err = match compile_str(&text) {
            Err(e) => e,
            Ok(_) => panic!("should fail"),
        };
        assert_eq!(err.problems[0].path, "server.tls[0].certs[0].cert", "{err}");
        assert_eq!(err.problems[0].line, 4, "{err}");
    }
}
