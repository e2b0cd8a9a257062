//! Upstream pools through the real binary: health checks take a dead target
//! out and bring it back, connect failures retry another target, timeouts
//! give 504, no healthy target 503, dead targets 502; admin and metrics.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{client, eventually, free_port, get_json, upstream, Backend, Gateway};

async fn spread(gw: &Gateway, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, json) = get_json(&gw.url("/x")).await;
        assert_eq!(status, 200, "{json}\n{}", gw.stderr());
        *seen
            .entry(json["service"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_target_out_and_bring_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let body = format!(
        "{}
[upstreams.pool.health_check]
path = \"/healthz\"
interval = \"100ms\"
unhealthy_threshold = 1
healthy_threshold = 1

[[routes]]
name = \"r\"
upstream = \"pool\"
",
        upstream("pool", &[&a, &b], "")
    );
    let gw = Gateway::start("", &body).await;
    let both = spread(&gw, 10).await;
    assert_eq!(both.len(), 2, "round robin uses both: {both:?}");

    b.set_healthy(false);
    let b_label = b.addr.to_string();
    let metric_line =
        format!("frontdesk_upstream_healthy{{target=\"{b_label}\",upstream=\"pool\"}} 0");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let m = client().get(gw.admin_url("/metrics")).send().await;
            match m {
                Ok(r) => r.text().await.unwrap_or_default().contains(&metric_line),
                Err(_) => false,
            }
        })
        .await,
        "metrics never showed b as unhealthy"
    );
    let before = b.hits();
    let only_a = spread(&gw, 10).await;
    assert_eq!(only_a.get("a"), Some(&10), "{only_a:?}");
    assert_eq!(
        b.hits(),
        before,
        "a target failing its check gets no traffic"
    );
    let (status, status_json) = get_json(&gw.admin_url("/status")).await;
    assert_eq!(status, 200);
    let targets = status_json["upstreams"]["pool"]["targets"]
        .as_array()
        .unwrap();
    assert!(targets
        .iter()
        .any(|t| t["address"] == b_label.as_str() && t["healthy"] == false));
    assert_eq!(
        get_json(&gw.admin_url("/readyz")).await.0,
        200,
        "a still serves"
    );

    // Everything down: 503 from the proxy, 503 from /readyz.
    a.set_healthy(false);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_json(&gw.admin_url("/readyz")).await.0 == 503
        })
        .await
    );
    let (status, json) = get_json(&gw.url("/x")).await;
    assert_eq!(status, 503, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no healthy target"),
        "{json}"
    );

    // Both come back.
    a.set_healthy(true);
    b.set_healthy(true);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..4 {
                let (status, json) = get_json(&gw.url("/x")).await;
                if status == 200 {
                    seen.insert(json["service"].as_str().unwrap_or("?").to_string());
                }
            }
            seen.len() == 2
        })
        .await,
        "a and b never came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_another_target() {
    let live = Backend::start("live").await;
    let dead = format!("127.0.0.1:{}", free_port());
    let body = format!(
        "[upstreams.pool]
targets = [\"{dead}\", \"{}\"]
retries = 1
connect_timeout = \"500ms\"

[upstreams.gone]
targets = [\"{dead}\"]
retries = 0

[[routes]]
name = \"r\"
path_prefix = \"/x\"
upstream = \"pool\"

[[routes]]
name = \"gone\"
path_prefix = \"/gone\"
upstream = \"gone\"
",
        live.addr
    );
    let gw = Gateway::start("", &body).await;
    for i in 0..10 {
        let (status, json) = get_json(&gw.url("/x")).await;
        assert_eq!(status, 200, "request {i}: {json}");
        assert_eq!(json["service"], "live");
    }
    assert_eq!(live.hits(), 10);

    let (status, json) = get_json(&gw.url("/gone")).await;
    assert_eq!(status, 502, "{json}");
    let msg = json["error"].as_str().unwrap();
    assert!(
        msg.contains("upstream 'gone'") && msg.contains("refused"),
        "{msg}"
    );
    assert!(json["request_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gives_504_and_the_gateway_keeps_serving() {
    let b = Backend::start("slow").await;
    let body = format!(
        "{}
[[routes]]
name = \"r\"
upstream = \"pool\"
",
        upstream("pool", &[&b], "read_timeout = \"300ms\"")
    );
    let gw = Gateway::start("", &body).await;
    let (status, json) = get_json(&gw.url("/x?sleep_ms=2000")).await;
    assert_eq!(status, 504, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("read_timeout"),
        "{json}"
    );
    let (status, _) = get_json(&gw.url("/x?sleep_ms=10")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_access_log() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}
[[routes]]
name = \"orders\"
path_prefix = \"/orders\"
upstream = \"pool\"
",
        upstream("pool", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    let c = client();
    for _ in 0..3 {
        let r = c
            .get(gw.url("/orders/1?api_key=query-secret"))
            .header("authorization", "Bearer very-secret-token")
            .header("cookie", "session=cookie-secret")
            .header("x-api-key", "key-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        c.get(gw.url("/missing")).send().await.unwrap().status(),
        404
    );

    // Metrics are recorded in the logging phase, just after the response.
    let metrics_url = gw.admin_url("/metrics");
    let settled = "frontdesk_requests_total{method=\"GET\",route=\"-\",status=\"404\"} 1";
    eventually(Duration::from_secs(3), || async {
        let m = client().get(&metrics_url).send().await;
        match m {
            Ok(r) => r.text().await.unwrap_or_default().contains(settled),
            Err(_) => false,
        }
    })
    .await;
    let metrics = c
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("frontdesk_requests_total{method=\"GET\",route=\"orders\",status=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("frontdesk_requests_total{method=\"GET\",route=\"-\",status=\"404\"} 1")
    );
    assert!(metrics.contains("frontdesk_request_duration_seconds_count{route=\"orders\"} 3"));
    assert!(metrics.contains(&format!(
        "frontdesk_upstream_healthy{{target=\"{}\",upstream=\"pool\"}} 1",
        b.addr
    )));

    let (status, st) = get_json(&gw.admin_url("/status")).await;
    assert_eq!(status, 200);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["config"]["hash"].as_str().unwrap().len(), 64);
    assert_eq!(st["routes"][0]["name"], "orders");
    assert_eq!(get_json(&gw.admin_url("/healthz")).await.0, 200);
    assert_eq!(get_json(&gw.admin_url("/readyz")).await.0, 200);

    // The access log has one JSON line per request and no credentials.
    assert!(
        eventually(Duration::from_secs(3), || async {
            gw.access_log().lines().count() >= 4
        })
        .await,
        "access log: {}",
        gw.access_log()
    );
    let log = gw.access_log();
    for secret in [
        "very-secret-token",
        "cookie-secret",
        "key-secret",
        "query-secret",
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the access log");
    }
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for field in [
        "time",
        "client",
        "method",
        "host",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "route",
        "upstream",
        "target",
        "request_id",
    ] {
        assert!(
            first.get(field).is_some(),
            "access log lacks {field}: {first}"
        );
    }
    assert_eq!(first["route"], "orders");
    assert_eq!(first["status"], 200);
    assert_eq!(first["target"], b.addr.to_string());
}
