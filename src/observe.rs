//! What the gateway tells its operators: Prometheus metrics and the JSON
//! access log.
//!
//! Metrics live in the `prometheus` crate's default registry (the same major,
//! 0.14, that `pingora-prometheus` uses) and are rendered by the admin
//! listener. The access log is one JSON object per line; lines are handed to
//! a writer thread through a bounded channel so a slow disk or a blocked
//! stdout pipe never stalls a request (lines are dropped and counted
//! instead). The writer thread starts on first use, after Pingora's daemon
//! fork. Credentials are never written: the log takes only the fields listed
//! in [`AccessLogEntry`], none of which carries a header value.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{LazyLock, OnceLock};

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
};
use serde::Serialize;

/// All of the gateway's metrics.
pub struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_healthy: IntGaugeVec,
    pub access_log_dropped: IntCounter,
    pub auth_failures: IntCounterVec,
    pub ratelimited: IntCounterVec,
    /// Upstream failures by pool and kind (every failed connect attempt,
    /// and every failure once a backend was reached).
    pub upstream_errors: IntCounterVec,
    /// Client connections closed at accept by `server.max_connections`.
    pub connections_refused: IntCounter,
    pub redis_errors: IntCounter,
    pub redis_up: prometheus::IntGauge,
    pub config_reloads: IntCounterVec,
    pub cache_requests: IntCounterVec,
    pub cache_bytes: prometheus::IntGauge,
    pub cache_items: prometheus::IntGauge,
    pub cache_budget: prometheus::IntGauge,
    pub cache_evictions: IntCounter,
    pub waf_requests: IntCounterVec,
    pub waf_rule_hits: IntCounterVec,
}

// Registration only fails on a duplicate name, which would be a programming
// error caught by every test run; nothing a user controls reaches it.
#[allow(clippy::expect_used)]
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    requests: register_int_counter_vec!(
        "frontdesk_requests_total",
        "Requests answered, by route, method and status",
        &["route", "method", "status"]
    )
    .expect("register frontdesk_requests_total"),
    duration: register_histogram_vec!(
        "frontdesk_request_duration_seconds",
        "Time from request header to the end of the response, by route",
        &["route"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("register frontdesk_request_duration_seconds"),
    upstream_healthy: register_int_gauge_vec!(
        "frontdesk_upstream_healthy",
        "1 when a target passes its health check, 0 when it is taken out",
        &["upstream", "target"]
    )
    .expect("register frontdesk_upstream_healthy"),
    access_log_dropped: register_int_counter!(
        "frontdesk_access_log_dropped_total",
        "Access log lines dropped because the writer could not keep up"
    )
    .expect("register frontdesk_access_log_dropped_total"),
    auth_failures: register_int_counter_vec!(
        "frontdesk_auth_failures_total",
        "Requests refused by authentication (401) or by allow_groups (403), by route and reason",
        &["route", "reason"]
    )
    .expect("register frontdesk_auth_failures_total"),
    connections_refused: prometheus::register_int_counter!(
        "frontdesk_connections_refused_total",
        "Client connections closed as soon as they were accepted because server.max_connections were open"
    )
    .expect("register frontdesk_connections_refused_total"),
    upstream_errors: register_int_counter_vec!(
        "frontdesk_upstream_errors_total",
        "Upstream failures by upstream and kind: connect, connect_timeout, read_timeout, write_timeout, closed, reset, invalid_response, other",
        &["upstream", "kind"]
    )
    .expect("register frontdesk_upstream_errors_total"),
    ratelimited: register_int_counter_vec!(
        "frontdesk_ratelimited_total",
        "Requests refused by a rate limit or concurrency cap, by route and limit",
        &["route", "limit"]
    )
    .expect("register frontdesk_ratelimited_total"),
    redis_errors: register_int_counter!(
        "frontdesk_redis_errors_total",
        "Failed syncs of cluster rate-limit counts with Redis"
    )
    .expect("register frontdesk_redis_errors_total"),
    redis_up: prometheus::register_int_gauge!(
        "frontdesk_redis_up",
        "1 while cluster limits reach Redis, 0 during an outage"
    )
    .expect("register frontdesk_redis_up"),
    config_reloads: register_int_counter_vec!(
        "frontdesk_config_reloads_total",
        "Config reloads, by result (ok: swapped in; error: the file was refused and nothing changed)",
        &["result"]
    )
    .expect("register frontdesk_config_reloads_total"),
    cache_requests: register_int_counter_vec!(
        "frontdesk_cache_requests_total",
        "Requests on routes with a cache, by route and X-Cache-Status (HIT, MISS, EXPIRED, STALE, REVALIDATED, BYPASS)",
        &["route", "status"]
    )
    .expect("register frontdesk_cache_requests_total"),
    cache_bytes: prometheus::register_int_gauge!(
        "frontdesk_cache_bytes",
        "Bytes held by the response store (bodies and headers)"
    )
    .expect("register frontdesk_cache_bytes"),
    cache_items: prometheus::register_int_gauge!(
        "frontdesk_cache_items",
        "Responses held by the response store (every identity and variant counts)"
    )
    .expect("register frontdesk_cache_items"),
    cache_budget: prometheus::register_int_gauge!(
        "frontdesk_cache_budget_bytes",
        "The response store's byte budget ([server.cache] memory)"
    )
    .expect("register frontdesk_cache_budget_bytes"),
    cache_evictions: register_int_counter!(
        "frontdesk_cache_evictions_total",
        "Responses evicted (or refused admission) to keep the store within its budget"
    )
    .expect("register frontdesk_cache_evictions_total"),
    waf_requests: register_int_counter_vec!(
        "frontdesk_waf_requests_total",
        "Requests screened by the WAF, by route and verdict (pass, blocked, detected, denied_ip, allowed_ip, body_too_large)",
        &["route", "verdict"]
    )
    .expect("register frontdesk_waf_requests_total"),
    waf_rule_hits: register_int_counter_vec!(
        "frontdesk_waf_rule_hits_total",
        "WAF rules that fired, by rule id (in block and detect mode)",
        &["rule"]
    )
    .expect("register frontdesk_waf_rule_hits_total"),
}
});

/// Renders every registered metric in the Prometheus text format.
pub fn render_metrics() -> String {
    LazyLock::force(&METRICS);
    let stats = crate::cache::stats().unwrap_or(crate::cache::StoreStats {
        bytes: 0,
        items: 0,
        evictions: 0,
        budget: 0,
    });
    METRICS
        .cache_bytes
        .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
    METRICS
        .cache_items
        .set(i64::try_from(stats.items).unwrap_or(i64::MAX));
    METRICS
        .cache_budget
        .set(i64::try_from(stats.budget).unwrap_or(i64::MAX));
    let counted = METRICS.cache_evictions.get();
    if stats.evictions > counted {
        METRICS.cache_evictions.inc_by(stats.evictions - counted);
    }
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl AccessLogTarget {
    pub fn parse(value: &str, base_dir: &std::path::Path) -> AccessLogTarget {
        match value {
            "off" | "" => AccessLogTarget::Off,
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(base_dir.join(path)),
        }
    }
}

/// One access log line. Only these fields are ever logged.
#[derive(Debug, Serialize)]
pub struct AccessLogEntry<'a> {
    pub time: String,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub duration_ms: f64,
    pub route: Option<&'a str>,
    /// The authenticated consumer's name (never its credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub target: Option<String>,
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const ACCESS_LOG_QUEUE: usize = 65_536;

struct Writer {
    tx: SyncSender<Vec<u8>>,
}

/// A JSON-lines log written by its own thread (the access log, the WAF
/// audit log). The target is fixed by the first line written.
pub struct LineLog {
    name: &'static str,
    writer: OnceLock<Option<Writer>>,
}

impl LineLog {
    pub const fn new(name: &'static str) -> LineLog {
        LineLog {
            name,
            writer: OnceLock::new(),
        }
    }

    /// Queues one line; never blocks. Returns false when it was dropped.
    pub fn write<T: Serialize>(&self, target: &AccessLogTarget, entry: &T) -> bool {
        let writer = self.writer.get_or_init(|| start_writer(self.name, target));
        let Some(writer) = writer else { return true };
        let mut line = Vec::with_capacity(256);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return true;
        }
        line.push(b'\n');
        writer.tx.try_send(line).is_ok()
    }
}

static ACCESS_LOG: LineLog = LineLog::new("access log");

/// The WAF's audit log (`[waf] audit_log`).
pub static AUDIT_LOG: LineLog = LineLog::new("WAF audit log");

/// Sends one line to the access log (callers skip this when it is off).
/// Never blocks.
pub fn write_access_log(target: &AccessLogTarget, entry: &AccessLogEntry<'_>) {
    if !ACCESS_LOG.write(target, entry) {
        METRICS.access_log_dropped.inc();
    }
}

fn start_writer(name: &'static str, target: &AccessLogTarget) -> Option<Writer> {
    let sink = match target {
        AccessLogTarget::Off => return None,
        AccessLogTarget::Stdout => Sink::Stdout,
        AccessLogTarget::File(path) => {
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => Sink::File(BufWriter::with_capacity(64 * 1024, f)),
                Err(e) => {
                    log::error!("{name} {}: {e}; it is off", path.display());
                    return None;
                }
            }
        }
    };
    let (tx, rx) = sync_channel(ACCESS_LOG_QUEUE);
    let spawned = std::thread::Builder::new()
        .name(name.replace(' ', "-"))
        .spawn(move || drain_lines(rx, sink));
    match spawned {
        Ok(_) => Some(Writer { tx }),
        Err(e) => {
            log::error!("cannot start the {name} writer: {e}");
            None
        }
    }
}

/// Where a log's lines go. Stdout is shared by every log: each batch is
/// written under its lock, so lines of two logs never interleave.
enum Sink {
    Stdout,
    File(BufWriter<std::fs::File>),
}

/// Writes lines as they come, flushing whenever the queue runs dry so a line
/// is never held back waiting for the next request.
fn drain_lines(rx: Receiver<Vec<u8>>, mut sink: Sink) {
    while let Ok(line) = rx.recv() {
        match &mut sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&line);
                while let Ok(more) = rx.try_recv() {
                    let _ = out.write_all(&more);
                }
                let _ = out.flush();
            }
            Sink::File(out) => {
                let _ = out.write_all(&line);
                while let Ok(more) = rx.try_recv() {
                    let _ = out.write_all(&more);
                }
                let _ = out.flush();
            }
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
