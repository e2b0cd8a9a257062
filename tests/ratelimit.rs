//! Rate limits through the real binary: 429 with the right headers, the
//! backend seeing at most the limit, independent keys, window-edge
//! smoothing, concurrency caps, the flood guard, trusted proxies, and
//! fleet-wide limits shared by two gateways through a real Redis (stopped
//! and restarted mid-test). Bounds, never timings.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{client, free_port, metrics, upstream, Backend, Gateway};

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_get_429_with_headers_and_keys_are_independent() {
    let b = Backend::start("auth").await;
    let body = format!(
        r#"{}
[[routes]]
name = "login"
path = "/auth/login"
upstream = "auth"
rate_limit = ["per-ip-login", "login-global"]

[[routes]]
name = "tenants"
path_prefix = "/t"
upstream = "auth"
rate_limit = "per-tenant"

[rate_limits.per-ip-login]
key = "ip"
limit = 5
per = "1m"

[rate_limits.login-global]
key = "route"
limit = 1000
per = "1m"

[rate_limits.per-tenant]
key = "header:x-tenant"
limit = 3
per = "1h"
"#,
        upstream("auth", &[&b], "")
    );
    let gw = Gateway::start("trusted_proxies = [\"127.0.0.1/32\"]", &body).await;

    // A burst of 12 from one client: 5 admitted, then 429s.
    let mut admitted = 0;
    let mut refused = None;
    for i in 0..12 {
        let resp = get(&gw, "/auth/login", &[]).await;
        match resp.status().as_u16() {
            200 => {
                admitted += 1;
                assert!(
                    header(&resp, "ratelimit-policy").contains("\"per-ip-login\";q=5;w=60"),
                    "{:?}",
                    resp.headers()
                );
                let state = header(&resp, "ratelimit");
                assert!(
                    state.contains(&format!("\"per-ip-login\";r={}", 4 - i)),
                    "request {i}: {state}"
                );
            }
            429 => refused = Some(resp),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(b.hits(), 5, "the backend saw exactly the limit");
    let refused = refused.expect("some requests were refused");
    let retry: u64 = header(&refused, "retry-after")
        .parse()
        .expect("Retry-After");
    // A full window fades over the next one: the next request fits 72 s on
    // (when 5 × (1 − 0.2) + 1 ≤ 5), within two windows in any case.
    assert!((60..=120).contains(&retry), "Retry-After {retry}");
    assert!(header(&refused, "ratelimit").contains("\"per-ip-login\";r=0"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert!(
        body["error"].as_str().unwrap().contains("per-ip-login"),
        "{body}"
    );

    // Another client (through a trusted proxy) has its own bucket.
    let resp = get(&gw, "/auth/login", &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(b.hits(), 6);

    // Header keys: two tenants never share a bucket.
    for _ in 0..3 {
        assert_eq!(
            get(&gw, "/t/x", &[("x-tenant", "acme")]).await.status(),
            200
        );
    }
    assert_eq!(
        get(&gw, "/t/x", &[("x-tenant", "acme")]).await.status(),
        429
    );
    assert_eq!(
        get(&gw, "/t/x", &[("x-tenant", "globex")]).await.status(),
        200
    );

    let m = metrics(&gw).await;
    assert!(
        m.contains("frontdesk_ratelimited_total{limit=\"per-ip-login\",route=\"login\"} 7"),
        "{m}"
    );
    assert!(m.contains("frontdesk_ratelimited_total{limit=\"per-tenant\",route=\"tenants\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_edge_is_smoothed() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\nrate_limit = \"l\"\n\n[rate_limits.l]\nkey = \"ip\"\nlimit = 10\nper = \"2s\"\n",
        upstream("pool", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    // pingora-limits starts a window at the first request after the previous
    // one expired; after 2 s of quiet, our first request opens one.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let t0 = std::time::Instant::now();
    assert_eq!(get(&gw, "/x", &[]).await.status(), 200);
    let burst = |n: usize| {
        let gw = &gw;
        async move {
            let mut ok = 0;
            for _ in 0..n {
                if get(gw, "/x", &[]).await.status() == 200 {
                    ok += 1;
                }
            }
            ok
        }
    };
    // Late in the first window: the rest of the limit.
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(t0.elapsed())).await;
    let late = burst(15).await;
    // Early in the next window. A fixed window would admit another 10 here,
    // 20 in a few hundred milliseconds; the sliding estimate still counts
    // most of the previous window.
    tokio::time::sleep(Duration::from_millis(2150).saturating_sub(t0.elapsed())).await;
    let early = burst(15).await;
    assert_eq!(late, 9, "the first window admits the limit");
    assert!(
        early <= 3,
        "just past the edge {early} more were admitted (limit 10)"
    );
    assert_eq!(b.hits(), 1 + late + early);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_caps_release_on_every_path_and_the_flood_guard_runs_first() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}\n[[routes]]\nname = \"uploads\"\nupstream = \"pool\"\nrate_limit = \"uploads\"\n\n[rate_limits.uploads]\nkey = \"route\"\nmax_in_flight = 2\n",
        upstream("pool", &[&b], "read_timeout = \"1s\"")
    );
    let gw = Gateway::start("max_requests_per_ip = { limit = 40, per = \"1m\" }", &body).await;
    // Two slow requests hold both slots; a third is refused at once.
    let slow = |gw_url: String| async move {
        client()
            .get(format!("{gw_url}?sleep_ms=700"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let a = tokio::spawn(slow(gw.url("/slow")));
    let c = tokio::spawn(slow(gw.url("/slow")));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let third = get(&gw, "/fast", &[]).await;
    assert_eq!(third.status(), 429);
    let body: serde_json::Value = third.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("in flight"),
        "{body}"
    );
    assert_eq!(a.await.unwrap().unwrap(), 200);
    assert_eq!(c.await.unwrap().unwrap(), 200);
    // Released after success:
    assert_eq!(get(&gw, "/fast", &[]).await.status(), 200);
    // ... after an upstream timeout (504) ...
    assert_eq!(get(&gw, "/x?sleep_ms=1500", &[]).await.status(), 504);
    // ... and after the client gives up mid-request.
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(impatient
            .get(gw.url("/x?sleep_ms=600"))
            .send()
            .await
            .is_err());
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        get(&gw, "/fast", &[]).await.status(),
        200,
        "slots came back"
    );
    assert_eq!(get(&gw, "/fast", &[]).await.status(), 200);

    // The flood guard: 40 per minute per IP, before routing (even 404s count).
    let mut statuses = Vec::new();
    for _ in 0..45 {
        statuses.push(get(&gw, "/nowhere-at-all", &[]).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let resp = get(&gw, "/fast", &[]).await;
    assert_eq!(resp.status(), 429);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("server.max_requests_per_ip"),
        "{body}"
    );
}

/// A `redis-server` on a loopback port, stopped on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Redis {
                    port,
                    child: Some(child),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_through_redis() {
    let mut redis = Redis::start(free_port());
    let b = Backend::start("b").await;
    let body = |prefix: &str| {
        format!(
            "{}\n[[routes]]\nname = \"api\"\nupstream = \"pool\"\nrate_limit = \"fleet\"\n\n[rate_limits.fleet]\nkey = \"header:x-user\"\nlimit = 20\nper = \"1h\"\nscope = \"cluster\"\n\n[cluster]\nredis = \"redis://127.0.0.1:{}\"\non_redis_error = \"local\"\nsync_interval = \"50ms\"\nkey_prefix = \"{prefix}\"\n",
            upstream("pool", &[&b], ""),
            redis.port
        )
    };
    let prefix = format!("fdtest{}", std::process::id());
    let gw1 = Gateway::start("", &body(&prefix)).await;
    let gw2 = Gateway::start("", &body(&prefix)).await;

    // 60 requests for one user, alternating between the gateways at a pace
    // the 50 ms sync can follow: about one limit is admitted in all, not two.
    let mut admitted = 0;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        if get(gw, "/x", &[("x-user", "alice")]).await.status() == 200 {
            admitted += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        (20..=26).contains(&admitted),
        "two gateways admitted {admitted} against one limit of 20\n{}",
        gw1.stderr()
    );

    // Redis goes away: each gateway falls back to its own estimate (20 each),
    // nothing hangs, and the outage is counted.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut during = 0;
    for _ in 0..25 {
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            get(&gw1, "/x", &[("x-user", "bob")]),
        )
        .await
        .expect("no request hangs while Redis is down");
        if resp.status() == 200 {
            during += 1;
        }
    }
    assert_eq!(
        during, 20,
        "the local fallback applies the limit on this node"
    );
    let m = metrics(&gw1).await;
    assert!(m.contains("frontdesk_redis_up 0"), "{m}");
    assert!(!m.contains("frontdesk_redis_errors_total 0"), "{m}");
    assert!(gw1.stderr().contains("unreachable"), "{}", gw1.stderr());

    // Redis is back on the same port: the gateways reconnect by themselves
    // and share counts again.
    let _redis = Redis::start(redis.port);
    let mut back = false;
    for _ in 0..100 {
        if metrics(&gw1).await.contains("frontdesk_redis_up 1")
            && metrics(&gw2).await.contains("frontdesk_redis_up 1")
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the gateways reconnected to Redis");
    let mut admitted = 0;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        if get(gw, "/x", &[("x-user", "carol")]).await.status() == 200 {
            admitted += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!((20..=26).contains(&admitted), "after recovery: {admitted}");
    assert!(gw1.stderr().contains("reachable again"), "{}", gw1.stderr());
}

#[test]
fn check_reports_rate_limit_problems() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    std::fs::write(
        &conf,
        r#"[server]
trusted_proxies = ["10.0.0.0/8", "not-a-cidr"]
max_requests_per_ip = { limit = 0, per = "1s" }

[upstreams.a]
targets = ["127.0.0.1:9"]

[[routes]]
name = "r"
upstream = "a"
rate_limit = ["ghost", "fleet"]

[rate_limits.bad-key]
key = "cookie"
limit = 5
per = "1s"

[rate_limits.fleet]
limit = 5
per = "1s"
scope = "cluster"

[rate_limits.nothing]
key = "ip"

[rate_limits.fast]
limit = 5
per = "100ms"
"#,
    )
    .unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "server.trusted_proxies[1]: \"not-a-cidr\" is not an address or CIDR",
        "server.max_requests_per_ip.limit: must be at least 1",
        "routes[0].rate_limit: no [rate_limits.ghost] block",
        "rate_limits.bad-key.key: \"cookie\" is not a limit key",
        "rate_limits.fleet.scope: scope = \"cluster\" needs a [cluster] section",
        "rate_limits.nothing: give limit + per",
        "rate_limits.fast.per: must be at least 1s",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
