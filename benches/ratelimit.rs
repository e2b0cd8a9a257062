//! Rate limiting figures.
//!
//!     cargo bench --bench ratelimit              # criterion: admission cost
//!     cargo bench --bench ratelimit -- --report  # accuracy and memory report
//!
//! The criterion part times one admission (local sliding window, one key and
//! many keys; a concurrency cap). The report measures what the issue asks
//! for: admitted/limit at 3× the limit (a local limit; and a cluster limit
//! shared by two gateway instances through a real `redis-server`, started
//! on a loopback port when it is installed), and the memory a local limit
//! uses with 1,000,000 distinct keys.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use frontdesk::ratelimit::cluster::{ClusterCounter, ClusterState, Fallback};
use frontdesk::ratelimit::{check, LimitInput, LimitKey, RateLimitPolicy, SketchSize};
use http::HeaderMap;

fn policy(limit: u64, per: Duration) -> Arc<RateLimitPolicy> {
    Arc::new(RateLimitPolicy::new(
        "bench",
        LimitKey::Ip,
        Some((limit, per, SketchSize::default(), None)),
        None,
    ))
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("ratelimit_admit");
    let one = [policy(u64::MAX / 2, Duration::from_secs(60))];
    g.bench_function("local/one_key", |b| {
        let input = LimitInput {
            client_ip: ip(1),
            consumer: None,
            headers: &headers,
        };
        b.iter(|| check(&one, &input).is_ok())
    });
    g.bench_function("local/100k_keys", |b| {
        let mut n = 0u32;
        b.iter(|| {
            n = (n + 1) % 100_000;
            let input = LimitInput {
                client_ip: ip(n),
                consumer: None,
                headers: &headers,
            };
            check(&one, &input).is_ok()
        })
    });
    let cap = [Arc::new(RateLimitPolicy::new(
        "cap",
        LimitKey::Ip,
        None,
        Some(1_000_000),
    ))];
    g.bench_function("in_flight", |b| {
        let input = LimitInput {
            client_ip: ip(1),
            consumer: None,
            headers: &headers,
        };
        b.iter(|| check(&cap, &input).map(|a| a.guards.len()).unwrap_or(0))
    });
    g.finish();
}

criterion_group!(benches, bench);

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Offers 3× the limit, evenly spaced, for `windows` windows of `per`,
/// calling `admit(i)` for request `i`; returns admitted / (limit × windows).
fn offer_three_times(
    limit: u64,
    per: Duration,
    windows: u32,
    mut admit: impl FnMut(u64) -> bool,
) -> f64 {
    let offered = 3 * limit * windows as u64;
    let gap = per * windows / offered as u32;
    let start = Instant::now();
    let mut admitted = 0u64;
    for i in 0..offered {
        if let Some(wait) = (gap * i as u32).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        if admit(i) {
            admitted += 1;
        }
    }
    admitted as f64 / (limit * windows as u64) as f64
}

fn local_accuracy(limit: u64, per: Duration, windows: u32) -> f64 {
    let p = [policy(limit, per)];
    let headers = HeaderMap::new();
    let input = LimitInput {
        client_ip: ip(7),
        consumer: None,
        headers: &headers,
    };
    offer_three_times(limit, per, windows, |_| check(&p, &input).is_ok())
}

fn cluster_accuracy(port: u16, limit: u64, per: Duration, windows: u32) -> Option<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async move {
        let url = format!("redis://127.0.0.1:{port}");
        let prefix = format!("fdbench{}", std::process::id());
        // Two gateways: two states, two counters, two sync loops.
        let nodes: Vec<Arc<ClusterCounter>> = (0..2)
            .map(|_| {
                let state = Arc::new(ClusterState::new(
                    &url,
                    Fallback::Local,
                    Duration::from_millis(100),
                    &prefix,
                ));
                Arc::new(ClusterCounter::new("bench", per, state, 1000))
            })
            .collect();
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut syncs = Vec::new();
        for node in &nodes {
            let node = node.clone();
            let mut conn = redis::aio::ConnectionManager::new(client.clone())
                .await
                .ok()?;
            syncs.push(tokio::spawn(async move {
                loop {
                    let _ = node.sync(&mut conn).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        // The syncs run on the runtime's workers; pacing blocks only this thread.
        let ratio = offer_three_times(limit, per, windows, |i| {
            matches!(
                nodes[(i % 2) as usize].admit("user", limit),
                frontdesk::ratelimit::cluster::ClusterAdmission::Admitted(_)
            )
        });
        for s in syncs {
            s.abort();
        }
        Some(ratio)
    })
}

fn report() {
    println!("# rate limiting report");
    for (limit, per) in [(100u64, 1u64), (50, 2)] {
        let per = Duration::from_secs(per);
        let r = local_accuracy(limit, per, 5);
        println!(
            "local   limit {limit}/{}s, 3x offered for 5 windows: admitted/limit = {r:.3}",
            per.as_secs()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16399);
    let redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .spawn();
    match redis {
        Ok(mut child) => {
            std::thread::sleep(Duration::from_millis(300));
            for (limit, per) in [(100u64, 1u64), (50, 2)] {
                let per = Duration::from_secs(per);
                match cluster_accuracy(port, limit, per, 5) {
                    Some(r) => println!(
                        "cluster limit {limit}/{}s, 2 gateways, 3x offered for 5 windows, 100 ms sync: admitted/limit = {r:.3}",
                        per.as_secs()
                    ),
                    None => println!("cluster: could not talk to redis-server"),
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(e) => println!("cluster: redis-server not available ({e}); skipped"),
    }

    let before = rss_kib();
    let p = [policy(10, Duration::from_secs(60))];
    let headers = HeaderMap::new();
    let after_new = rss_kib();
    let t = Instant::now();
    for n in 0..1_000_000u32 {
        let input = LimitInput {
            client_ip: ip(n),
            consumer: None,
            headers: &headers,
        };
        let _ = check(&p, &input);
    }
    let elapsed = t.elapsed();
    let after = rss_kib();
    println!(
        "memory  one local limit: {} KiB at creation, +{} KiB after 1,000,000 distinct keys ({:.0} ns per admission)",
        after_new.saturating_sub(before),
        after.saturating_sub(after_new),
        elapsed.as_nanos() as f64 / 1e6
    );
    let (err, prob) = frontdesk::ratelimit::estimator_error_bound(SketchSize::default());
    println!(
        "sketch  default 4 x 4096: over-count <= {:.4}% of the window's requests with probability {:.3}",
        err * 100.0,
        prob
    );
}

fn main() {
    if std::env::args().any(|a| a == "--report") {
        report();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
