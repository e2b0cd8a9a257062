//! The TOML file as operators write it: the schema (serde structs with
//! `deny_unknown_fields`), parsing that keeps every value's position, and
//! problems reported with their key path (`routes[2].upstream`) and
//! `line:column`.
//!
//! This room only reads and type-checks the file. Cross-references (does the
//! route's upstream exist?), file loading (certificates) and compilation into
//! the runtime snapshot happen in [`crate::gateway`], which reports its own
//! problems through the same [`SourceMap`] so that every message points at a
//! line. Each top-level section, each upstream and each route is deserialized
//! on its own, so one typo does not hide the next: `frontdesk check` prints
//! every problem at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// One thing wrong with a config file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// TOML key path, e.g. `routes[2].upstream`; empty for file-level problems.
    pub path: String,
    /// 1-based line and column in the file; 0 when the file could not be read.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.path, self.message
            )
        }
    }
}

/// Every problem found in one file. `Display` prints one per line, prefixed
/// with the file name, in the `file:line:col: key: message` shape editors
/// understand.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}", self.file.display(), p)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where each key of the file sits, so that later stages can point at lines.
#[derive(Debug, Default)]
pub struct SourceMap {
    line_starts: Vec<usize>,
    spans: HashMap<String, Range<usize>>,
}

impl SourceMap {
    fn new(text: &str, root: &DeTable<'_>) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut map = SourceMap {
            line_starts,
            spans: HashMap::new(),
        };
        map.index_table("", root);
        map
    }

    fn index_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let path = join_key(prefix, key.get_ref());
            self.index_value(&path, value);
        }
    }

    fn index_value(&mut self, path: &str, value: &Spanned<DeValue<'_>>) {
        self.spans.insert(path.to_string(), value.span());
        match value.get_ref() {
            DeValue::Table(t) => self.index_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.index_value(&format!("{path}[{i}]"), item);
                }
            }
            _ => {}
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        (line + 1, offset.saturating_sub(start) + 1)
    }

    /// Position of a key path; falls back to the nearest enclosing key that
    /// exists (a missing field is reported at its table).
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(span) = self.spans.get(p) {
                return self.line_col(span.start);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }

    /// A problem located at `path`.
    pub fn problem(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        let path = path.into();
        let (line, column) = self.locate(&path);
        Problem {
            path,
            line,
            column,
            message: message.into(),
        }
    }
}

/// Appends a table key to a path, quoting keys that are not bare TOML keys.
pub fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

// ---------------------------------------------------------------------------
// The schema
// ---------------------------------------------------------------------------

/// The whole file after type checking.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub upstreams: BTreeMap<String, UpstreamSection>,
    pub routes: Vec<RouteSection>,
    pub transforms: BTreeMap<String, TransformSection>,
    pub cors: BTreeMap<String, CorsSection>,
    pub auth: BTreeMap<String, AuthSection>,
    pub rate_limits: BTreeMap<String, RateLimitSection>,
    pub cluster: Option<ClusterSection>,
    pub cache: BTreeMap<String, CacheSection>,
    pub waf: Option<WafSection>,
}

/// `[waf]`: the web application firewall.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafSection {
    /// `block`, `detect` (log and count only) or `off`.
    #[serde(default = "default_waf_mode")]
    pub mode: String,
    /// Rule files (globs, relative to this file's folder).
    #[serde(default)]
    pub rules: Vec<String>,
    /// A Core Rule Set folder (holding `rules/*.conf`), run instead of `rules`.
    pub crs: Option<String>,
    /// A CRS setup file; our API defaults apply when absent.
    pub crs_setup: Option<String>,
    /// CRS rule ids off everywhere (routes add `waf_exclude`).
    #[serde(default)]
    pub crs_exclude: Vec<u32>,
    /// 1-4: rules tagged with a higher level are off.
    #[serde(default = "default_paranoia")]
    pub paranoia: u8,
    /// CRS: rules above `paranoia` up to this level run and log, without
    /// counting toward blocking. Defaults to `paranoia`.
    pub detection_paranoia: Option<u8>,
    /// The inbound anomaly score that blocks.
    #[serde(default = "default_anomaly_threshold")]
    pub anomaly_threshold: u32,
    /// Request bodies are inspected up to this size (at most 64KiB).
    #[serde(default = "default_waf_max_body")]
    pub max_body: ByteSize,
    /// A body over max_body: `block` (413) or `pass` (uninspected).
    #[serde(default = "default_body_overflow")]
    pub body_overflow: String,
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Files with one address or CIDR per line (`#` comments).
    #[serde(default)]
    pub deny_ip_files: Vec<String>,
    /// These clients skip the WAF entirely.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// `stdout`, `off`, or a file: one JSON line per blocked or detected request.
    #[serde(default = "default_access_log")]
    pub audit_log: String,
}

fn default_waf_mode() -> String {
    "block".to_string()
}
fn default_paranoia() -> u8 {
    1
}
fn default_anomaly_threshold() -> u32 {
    5
}
fn default_waf_max_body() -> ByteSize {
    ByteSize::kib(64)
}
fn default_body_overflow() -> String {
    "block".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Plain HTTP listeners (`address:port`).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Admin listener: /healthz /readyz /metrics /status. Off when absent.
    pub admin_listen: Option<String>,
    /// Worker threads; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// Let idle worker threads steal requests from busy ones (one shared
    /// runtime); `false` gives each thread its own runtime, like NGINX workers.
    #[serde(default = "yes")]
    pub work_stealing: bool,
    /// `stdout`, `off`, or a file path.
    #[serde(default = "default_access_log")]
    pub access_log: String,
    /// TLS listeners.
    #[serde(default)]
    pub tls: Vec<TlsListenerSection>,
    /// Accept cleartext HTTP/2 (prior knowledge) on the plain listeners.
    #[serde(default)]
    pub h2c: bool,
    /// Largest request body accepted; bigger ones get 413.
    #[serde(default = "default_max_request_body")]
    pub max_request_body: ByteSize,
    /// Largest request header block (request line + headers); bigger gets 431.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
    /// Longest request target (path and query); longer gets 414.
    #[serde(default = "default_max_uri_length")]
    pub max_uri_length: ByteSize,
    /// How long in-flight requests may finish on shutdown or upgrade.
    #[serde(default = "default_grace_period", with = "humantime_serde")]
    pub grace_period: Duration,
    /// After shutdown or upgrade begins, how long open client connections
    /// stay so a request already on its way is answered, not reset.
    #[serde(default = "default_drain_idle", with = "humantime_serde")]
    pub drain_idle_connections: Duration,
    /// Where the pid file goes (needed by `reload` and graceful upgrade).
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
    /// The Unix socket through which listening sockets are handed over on upgrade.
    #[serde(default = "default_upgrade_socket")]
    pub upgrade_socket: String,
    /// How long an idle client keep-alive connection is kept open.
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Client connections open at once; more are closed at accept (0: no cap).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a new connection may take to send its first request head.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest pause while the client sends a request body; 408 after.
    #[serde(default = "default_client_timeout", with = "humantime_serde")]
    pub client_timeout: Duration,
    /// Proxies (CIDRs) whose X-Forwarded-For is believed for the client address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Flood guard: a rate per client IP checked before routing.
    pub max_requests_per_ip: Option<RateSection>,
    /// The response store shared by every `[cache.*]` policy.
    #[serde(default)]
    pub cache: ServerCacheSection,
}

/// `[server.cache]`: the in-memory response store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCacheSection {
    /// Byte budget of the store; the least valuable entries are evicted
    /// beyond it. Fixed for the life of the process (an upgrade applies a change).
    #[serde(default = "default_cache_memory")]
    pub memory: ByteSize,
}

impl Default for ServerCacheSection {
    fn default() -> Self {
        ServerCacheSection {
            memory: default_cache_memory(),
        }
    }
}

fn default_cache_memory() -> ByteSize {
    ByteSize::mib(256)
}

/// A `[cache.NAME]` block: how a route's responses are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Freshness of a response that states none of its own.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Cap on the freshness a response asks for.
    #[serde(default = "default_cache_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// `GET` and/or `HEAD`.
    #[serde(default = "default_cache_methods")]
    pub methods: Vec<String>,
    /// Response statuses that may be stored.
    #[serde(default = "default_cache_statuses")]
    pub statuses: Vec<u16>,
    /// How long past expiry a stale copy may be served while it is refreshed.
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// How long past expiry a stale copy may be served when the backend fails.
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Keep one copy per verified identity; defaults to true on routes with auth.
    pub vary_on_auth: Option<bool>,
    /// Which query parameters are part of the key: `all`, `none` or a list.
    #[serde(default)]
    pub key_query: KeyQuerySection,
    /// Store responses that carry `Set-Cookie` (off: they are never stored).
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Let a client's `Cache-Control: no-cache` force a revalidation.
    #[serde(default)]
    pub honor_client_no_cache: bool,
    /// Responses larger than this are passed through, not stored.
    #[serde(default = "default_cache_max_object")]
    pub max_object_size: ByteSize,
    /// How long concurrent misses for one key wait for the first to fill it.
    #[serde(default = "default_cache_lock_timeout", with = "humantime_serde")]
    pub lock_timeout: Duration,
}

/// `key_query = "all" | "none" | ["page", "sort"]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeyQuerySection {
    #[default]
    All,
    None,
    Only(Vec<String>),
    /// A string other than `all` / `none` (reported by the compiler with its line).
    Invalid(String),
}

impl<'de> Deserialize<'de> for KeyQuerySection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyQuerySection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"all\", \"none\" or a list of parameter names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyQuerySection, E> {
                Ok(match v {
                    "all" => KeyQuerySection::All,
                    "none" => KeyQuerySection::None,
                    other => KeyQuerySection::Invalid(other.to_string()),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyQuerySection, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(KeyQuerySection::Only(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_cache_max_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_cache_methods() -> Vec<String> {
    vec!["GET".to_string(), "HEAD".to_string()]
}
fn default_cache_statuses() -> Vec<u16> {
    vec![200, 203, 204, 301, 404]
}
fn default_cache_max_object() -> ByteSize {
    ByteSize::mib(8)
}
fn default_cache_lock_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `{ limit = 100, per = "1s" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    pub limit: u64,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            admin_listen: None,
            threads: 0,
            work_stealing: true,
            access_log: default_access_log(),
            tls: Vec::new(),
            h2c: false,
            max_request_body: default_max_request_body(),
            max_header_size: default_max_header_size(),
            max_uri_length: default_max_uri_length(),
            grace_period: default_grace_period(),
            drain_idle_connections: default_drain_idle(),
            pid_file: default_pid_file(),
            upgrade_socket: default_upgrade_socket(),
            keepalive_timeout: default_keepalive_timeout(),
            client_timeout: default_client_timeout(),
            header_timeout: default_header_timeout(),
            max_connections: default_max_connections(),
            trusted_proxies: Vec::new(),
            max_requests_per_ip: None,
            cache: ServerCacheSection::default(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".to_string()]
}
fn default_access_log() -> String {
    "stdout".to_string()
}
fn default_drain_idle() -> Duration {
    Duration::from_secs(2)
}
fn default_max_request_body() -> ByteSize {
    ByteSize::mib(10)
}
fn default_max_header_size() -> ByteSize {
    ByteSize::kib(32)
}
fn default_max_uri_length() -> ByteSize {
    ByteSize::kib(8)
}
fn default_grace_period() -> Duration {
    Duration::from_secs(30)
}
fn default_pid_file() -> String {
    "/tmp/frontdesk.pid".to_string()
}
fn default_upgrade_socket() -> String {
    "/tmp/frontdesk_upgrade.sock".to_string()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_client_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerSection {
    pub listen: String,
    /// Certificates; the one whose names match the client's SNI is served,
    /// the first one when nothing matches.
    pub certs: Vec<CertSection>,
    /// Offer HTTP/2 through ALPN (default on).
    #[serde(default = "yes")]
    pub h2: bool,
    /// PEM bundle of the CAs that sign client certificates (mTLS). Without
    /// it the listener asks for no client certificate.
    pub client_ca: Option<String>,
    /// With `client_ca`: `required` (handshake fails without a valid client
    /// certificate) or `optional` (a certificate, if sent, must be valid).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSection {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub targets: Vec<TargetSection>,
    #[serde(default)]
    pub balance: Balance,
    /// What `consistent_hash` hashes: `ip` (default), `path`, or `header:NAME`.
    #[serde(default = "default_hash_on")]
    pub hash_on: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_io_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(default = "default_io_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long an idle upstream keep-alive connection is kept in the pool.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Other targets tried after a connect failure.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Speak TLS to the targets.
    #[serde(default)]
    pub tls: bool,
    /// SNI and certificate name for TLS targets (default: the target's host).
    pub sni: Option<String>,
    /// Verify the targets' certificates (default on).
    #[serde(default = "yes")]
    pub verify_cert: bool,
    pub health_check: Option<HealthCheckSection>,
}

/// A target: `"host:port"` or `{ addr = "host:port", weight = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a target like \"127.0.0.1:9001\" or a table { addr = \"127.0.0.1:9001\", weight = 2 }"
)]
pub enum TargetSection {
    Addr(String),
    Weighted {
        addr: String,
        #[serde(default = "default_weight")]
        weight: usize,
    },
}

impl TargetSection {
    pub fn addr(&self) -> &str {
        match self {
            TargetSection::Addr(a) => a,
            TargetSection::Weighted { addr, .. } => addr,
        }
    }
    pub fn weight(&self) -> usize {
        match self {
            TargetSection::Addr(_) => 1,
            TargetSection::Weighted { weight, .. } => *weight,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    ConsistentHash,
}

fn default_hash_on() -> String {
    "ip".to_string()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_io_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_retries() -> usize {
    1
}
fn default_weight() -> usize {
    1
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// HTTP path to GET; a plain TCP connect check when absent.
    pub path: Option<String>,
    #[serde(default = "default_hc_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_hc_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Host header of the HTTP check (default: `localhost`).
    pub host: Option<String>,
    /// Consecutive successes before a down target takes traffic again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: usize,
    /// Consecutive failures before a target is taken out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: usize,
}

fn default_hc_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_hc_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy_threshold() -> usize {
    1
}
fn default_unhealthy_threshold() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    /// `api.example.com`, `*.example.com`, or a list of them; any host when absent.
    #[serde(default)]
    pub host: OneOrMany,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub upstream: String,
    /// Names of `[transforms.*]` blocks, applied in order.
    #[serde(default)]
    pub transform: OneOrMany,
    /// Name of a `[cors.*]` block.
    pub cors: Option<String>,
    /// Names of `[auth.*]` blocks: any one that succeeds admits.
    #[serde(default)]
    pub auth: OneOrMany,
    /// Admit only consumers in at least one of these groups (403 otherwise).
    pub allow_groups: Option<Vec<String>>,
    /// Names of `[rate_limits.*]` blocks: every one must admit.
    #[serde(default)]
    pub rate_limit: OneOrMany,
    /// Name of a `[cache.*]` block: responses are kept and served from memory.
    pub cache: Option<String>,
    /// `inherit` (default), `off` or `detect`.
    pub waf: Option<String>,
    /// WAF rule ids not applied on this route.
    #[serde(default)]
    pub waf_exclude: Vec<u32>,
}

/// A `[rate_limits.NAME]` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// `ip | consumer | header:NAME | claim:NAME | route`
    #[serde(default = "default_limit_key")]
    pub key: String,
    pub limit: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub per: Option<Duration>,
    /// A concurrency cap instead of (or beside) a rate.
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub scope: LimitScope,
    /// Count-min sketch width (columns) of a local rate.
    #[serde(default = "default_sketch_width")]
    pub sketch_width: usize,
    /// Count-min sketch depth (hash rows) of a local rate.
    #[serde(default = "default_sketch_depth")]
    pub sketch_depth: usize,
    /// Cluster scope: most keys tracked at once by this gateway.
    #[serde(default = "default_cluster_max_keys")]
    pub max_keys: usize,
}

fn default_limit_key() -> String {
    "ip".to_string()
}
fn default_sketch_width() -> usize {
    4096
}
fn default_sketch_depth() -> usize {
    4
}
fn default_cluster_max_keys() -> usize {
    100_000
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    #[default]
    Local,
    Cluster,
}

/// `[cluster]`: what gateways of one fleet share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://host:port[/db]`
    pub redis: String,
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// How often counts are sent to and read from Redis.
    #[serde(default = "default_sync_interval", with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Prefix of every Redis key the gateway writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_sync_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_key_prefix() -> String {
    "frontdesk".to_string()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    #[default]
    Local,
    Allow,
    Deny,
}

/// An `[auth.NAME]` block; `type` says which kind.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthSection {
    Jwt(Box<JwtSection>),
    ApiKey(ApiKeySection),
    Mtls(MtlsSection),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// Allow-list of signature algorithms (`RS256`, `ES256`, `HS256`, ...).
    pub algorithms: Vec<String>,
    /// A JWKS file, or an http(s) URL fetched and refreshed.
    pub jwks: Option<String>,
    /// A PEM public key (RSA, EC or Ed25519).
    pub public_key: Option<String>,
    /// Environment variable holding the HMAC secret (HS*).
    pub secret_env: Option<String>,
    #[serde(default)]
    pub issuer: OneOrMany,
    #[serde(default)]
    pub audience: OneOrMany,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Claims that must be present (besides `exp`).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Reject tokens without `exp` (default on).
    #[serde(default = "yes")]
    pub require_exp: bool,
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    pub groups_claim: Option<String>,
    /// Claim name -> request header sent to the backend.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Also take the token from this cookie.
    pub cookie: Option<String>,
    /// Also take the token from this query parameter.
    pub query: Option<String>,
    /// How often a URL JWKS is fetched again.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    #[serde(default = "default_jwks_min_refetch", with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// Time limit of one JWKS fetch.
    #[serde(default = "default_jwks_timeout", with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Verified tokens remembered (0 turns the cache off).
    #[serde(default = "default_token_cache")]
    pub token_cache: usize,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_consumer_claim() -> String {
    "sub".to_string()
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(600)
}
fn default_jwks_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_token_cache() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// Request header carrying the key (default `x-api-key` when no `query`).
    pub header: Option<String>,
    /// Query parameter carrying the key.
    pub query: Option<String>,
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A TOML file holding more `keys = [...]`.
    pub keys_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub consumer: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Hex of sha256(key), as `frontdesk hash-key` prints it.
    pub sha256: String,
}

/// The `keys_file` of an API-key block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsSection {
    #[serde(default)]
    pub consumer_from: ConsumerFrom,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerFrom {
    #[default]
    SubjectCn,
    SanDns,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    #[serde(default)]
    pub request: HeaderOpsSection,
    #[serde(default)]
    pub response: HeaderOpsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsSection {
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// Append these headers, keeping any existing values.
    #[serde(default)]
    pub add_headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Exact origins (`https://app.example.com`) or `*`.
    pub allow_origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

/// A string or a list of strings (`transform = "clean"` or `["a", "b"]`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// A parsed file: the typed config, the source map for locating keys, the
/// folder that relative paths resolve against, and the raw text (hashed for
/// `/status`).
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: FileConfig,
    pub source_map: SourceMap,
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub text: String,
}

/// Reads and type-checks a config file. Returns every problem found.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            line: 0,
            column: 0,
            message: format!("cannot read config file: {e}"),
        }],
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    parse_str(&text, path, &base_dir)
}

/// Type-checks config text. `file` is only used in messages.
pub fn parse_str(text: &str, file: &Path, base_dir: &Path) -> Result<LoadedConfig, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let empty = SourceMap::new(text, &DeTable::default());
            let (line, column) = e.span().map(|s| empty.line_col(s.start)).unwrap_or((1, 1));
            return Err(fail(vec![Problem {
                path: String::new(),
                line,
                column,
                message: format!("TOML syntax error: {}", e.message().trim()),
            }]));
        }
    };
    let source_map = SourceMap::new(text, root.get_ref());
    let mut problems = Vec::new();
    let mut config = FileConfig::default();

    for (key, value) in root.get_ref().iter() {
        let name = key.get_ref().as_ref();
        match name {
            "server" => {
                if let Some(s) = typed(&source_map, "server", value, &mut problems) {
                    config.server = s;
                }
            }
            "upstreams" => {
                config.upstreams = typed_map(&source_map, "upstreams", value, &mut problems)
            }
            "transforms" => {
                config.transforms = typed_map(&source_map, "transforms", value, &mut problems)
            }
            "cors" => config.cors = typed_map(&source_map, "cors", value, &mut problems),
            "auth" => config.auth = typed_map(&source_map, "auth", value, &mut problems),
            "rate_limits" => {
                config.rate_limits = typed_map(&source_map, "rate_limits", value, &mut problems)
            }
            "cluster" => config.cluster = typed(&source_map, "cluster", value, &mut problems),
            "cache" => config.cache = typed_map(&source_map, "cache", value, &mut problems),
            "waf" => config.waf = typed(&source_map, "waf", value, &mut problems),
            "routes" => match value.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("routes[{i}]");
                        if let Some(r) = typed(&source_map, &path, item, &mut problems) {
                            config.routes.push(r);
                        }
                    }
                }
                other => problems.push(source_map.problem(
                    "routes",
                    format!(
                        "expected an array of tables ([[routes]]), found {}",
                        other.type_str()
                    ),
                )),
            },
            other => problems.push(source_map.problem(
                join_key("", other),
                "unknown section; expected one of: server, upstreams, routes, transforms, cors, auth, rate_limits, cluster, cache, waf",
            )),
        }
    }

    if problems.is_empty() {
        Ok(LoadedConfig {
            config,
            source_map,
            path: file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            text: text.to_string(),
        })
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(fail(problems))
    }
}

/// Deserializes one value, recording a located problem on failure.
fn typed<T: for<'de> Deserialize<'de>>(
    map: &SourceMap,
    prefix: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut owned = value.clone();
    owned.get_mut().make_owned();
    let deserializer = ValueDeserializer::from(owned);
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(v) => Some(v),
        Err(err) => {
            let inner = err.path().to_string();
            let path = if inner == "." {
                prefix.to_string()
            } else if inner.starts_with('[') {
                format!("{prefix}{inner}")
            } else {
                format!("{prefix}.{inner}")
            };
            let toml_err = err.into_inner();
            let (line, column) = match toml_err.span() {
                Some(span) => map.line_col(span.start),
                None => map.locate(&path),
            };
            problems.push(Problem {
                path,
                line,
                column,
                message: toml_err.message().trim().to_string(),
            });
            None
        }
    }
}

/// Deserializes a table of named blocks (`[upstreams.NAME]`), each on its own.
fn typed_map<T: for<'de> Deserialize<'de>>(
    map: &SourceMap,
    prefix: &str,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match value.get_ref() {
        DeValue::Table(t) => {
            for (key, item) in t.iter() {
                let path = join_key(prefix, key.get_ref());
                if let Some(v) = typed(map, &path, item, problems) {
                    out.insert(key.get_ref().to_string(), v);
                }
            }
        }
        other => problems.push(map.problem(
            prefix,
            format!(
                "expected a table of named blocks ([{prefix}.NAME]), found {}",
                other.type_str()
            ),
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
        parse_str(text, Path::new("test.toml"), Path::new("."))
    }

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
[server]
listen = ["127.0.0.1:8080"]
admin_listen = "127.0.0.1:9090"
threads = 0
access_log = "stdout"
max_request_body = "1MiB"

[upstreams.orders]
targets = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 2 }]
balance = "round_robin"
connect_timeout = "1s"
read_timeout = "30s"
retries = 1
[upstreams.orders.health_check]
path = "/healthz"
interval = "2s"

[[routes]]
name = "payments"
host = "api.example.com"
path_prefix = "/pay"
methods = ["POST"]
strip_prefix = true
upstream = "orders"
transform = "clean"
cors = "web"

[transforms.clean]
request.remove_headers = ["x-debug"]
request.set_headers = { "x-gateway" = "frontdesk" }
response.remove_headers = ["x-debug", "server"]

[cors.web]
allow_origins = ["https://app.example.com"]
max_age = "10m"
"#;
        let loaded = parse(text).expect("valid");
        let c = &loaded.config;
        assert_eq!(c.server.max_request_body, ByteSize::mib(1));
        let up = &c.upstreams["orders"];
        assert_eq!(up.targets.len(), 2);
        assert_eq!(up.targets[1].weight(), 2);
        assert_eq!(up.connect_timeout, Duration::from_secs(1));
        assert_eq!(
            up.health_check.as_ref().unwrap().interval,
            Duration::from_secs(2)
        );
        assert_eq!(c.routes[0].transform.0, vec!["clean"]);
        assert_eq!(c.routes[0].host.0, vec!["api.example.com"]);
        assert_eq!(c.cors["web"].max_age, Some(Duration::from_secs(600)));
        assert_eq!(
            c.transforms["clean"].request.set_headers["x-gateway"],
            "frontdesk"
        );
    }

    #[test]
    fn reports_every_type_problem_with_path_and_line() {
        let text = "[server]\nthreads = \"many\"\n\n[upstreams.a]\ntargets = [\"127.0.0.1:1\"]\nconnect_timeout = \"soon\"\n\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n\n[[routes]]\nname = \"s\"\nupstream = \"a\"\npathprefix = \"/x\"\n";
        let err = parse(text).unwrap_err();
        let got: Vec<(String, usize)> = err
            .problems
            .iter()
            .map(|p| (p.path.clone(), p.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("server.threads".to_string(), 2),
                ("upstreams.a.connect_timeout".to_string(), 6),
                ("routes[1].pathprefix".to_string(), 15),
            ],
            "{err}"
        );
        assert!(err.problems[2].message.contains("pathprefix"), "{err}");
        assert!(err.to_string().starts_with("test.toml:2:"), "{err}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse("[server]\nlisten = [\"a\"\n").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].line >= 2, "{err}");
        assert!(err.problems[0].message.contains("syntax"), "{err}");
    }

    #[test]
    fn unknown_sections_are_reported() {
        let err = parse("[sever]\nlisten = []\n").unwrap_err();
        assert_eq!(err.problems[0].path, "sever");
        assert_eq!(err.problems[0].line, 1);
    }

    #[test]
    fn locate_falls_back_to_enclosing_key() {
        let loaded = parse("[[routes]]\nname = \"a\"\nupstream = \"x\"\n").unwrap();
        assert_eq!(loaded.source_map.locate("routes[0].upstream"), (3, 12));
        assert_eq!(loaded.source_map.locate("routes[0].cors").0, 1);
    }
}
