//! Hot reload through the real binary: 20 reloads under steady traffic
//! (SIGHUP, `frontdesk reload`, `POST /reload`), no failed request, each new
//! config live within a second, rate-limit counts of an unchanged limit
//! carried over, and a broken file that changes nothing and says why.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{binary, client, metrics, upstream, Backend, Gateway, Traffic};

fn body(a: &Backend, b: &Backend, flip_to: &str, extra_route: bool) -> String {
    let mut s = format!(
        "{}{}\n[[routes]]\nname = \"common\"\npath_prefix = \"/common\"\nupstream = \"a\"\n\n[[routes]]\nname = \"flip\"\npath = \"/flip\"\nupstream = \"{flip_to}\"\n\n[[routes]]\nname = \"limited\"\npath = \"/limited\"\nupstream = \"a\"\nrate_limit = \"steady\"\n\n[rate_limits.steady]\nkey = \"route\"\nlimit = 5\nper = \"1h\"\n",
        upstream("a", &[a], ""),
        upstream("b", &[b], ""),
    );
    if extra_route {
        s.push_str("\n[[routes]]\nname = \"only-b\"\npath = \"/only-b\"\nupstream = \"b\"\n");
    }
    s
}

/// Rewrites the gateway's config with a new body (the harness's [server]
/// part stays).
fn rewrite(gw: &Gateway, old_body: &str, new_body: &str) {
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text
        .strip_suffix(old_body)
        .expect("config ends with the body");
    std::fs::write(&path, format!("{head}{new_body}")).unwrap();
}

async fn service_of(gw: &Gateway, path: &str) -> Option<String> {
    let resp = client().get(gw.url(path)).send().await.ok()?;
    let json: serde_json::Value = resp.json().await.ok()?;
    json["service"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_traffic_lose_no_request() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let body_a = body(&a, &b, "a", false);
    let body_b = body(&a, &b, "b", true);
    let gw = Gateway::start("", &body_a).await;

    // Counts taken before the reloads must survive them (the limit's section
    // does not change).
    for _ in 0..3 {
        assert_eq!(
            client()
                .get(gw.url("/limited"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // Steady traffic: one keep-alive client and one that opens a new
    // connection for every request.
    let traffic = Traffic::start(gw.url("/common/x"));

    let mut current = body_a.clone();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let (next, want) = if i % 2 == 0 {
            (body_b.clone(), "b")
        } else {
            (body_a.clone(), "a")
        };
        rewrite(&gw, &current, &next);
        current = next;
        let started = Instant::now();
        match i % 3 {
            0 => {
                let st = Command::new("kill")
                    .args(["-HUP", &gw.pid().to_string()])
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            1 => {
                let out = Command::new(binary())
                    .args(["reload", "-c"])
                    .arg(gw.config_path())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => {
                let resp = client().post(gw.admin_url("/reload")).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }
        loop {
            if service_of(&gw, "/flip").await.as_deref() == Some(want) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "reload {i}: config not live after 1 s\n{}",
                gw.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Routes only in config B are gone again (we ended on A).
    assert_eq!(
        client()
            .get(gw.url("/only-b"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // A broken file: nothing changes, the problem is reported.
    rewrite(
        &gw,
        &current,
        "[[routes]]\nname = \"broken\"\nupstream = \"nowhere\"\n",
    );
    let resp = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let problems: serde_json::Value = resp.json().await.unwrap();
    assert!(
        problems.to_string().contains("routes[0].upstream"),
        "{problems}"
    );
    let st = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service_of(&gw, "/flip").await.as_deref(), Some("a"));
    let status: serde_json::Value = client()
        .get(gw.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["config"]["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("routes[0].upstream")),
        "{status}"
    );
    assert_eq!(status["config"]["reloads_ok"], 20);
    let m = metrics(&gw).await;
    assert!(
        m.contains("frontdesk_config_reloads_total{result=\"ok\"} 20"),
        "{m}"
    );
    assert!(
        m.contains("frontdesk_config_reloads_total{result=\"error\"} 2"),
        "{m}"
    );
    assert!(gw.stderr().contains("still serving the previous config"));

    let (served, failed) = traffic.finish().await;
    eprintln!("reload test: {served} requests served, {failed} failed, slowest reload live after {worst:?}");
    assert_eq!(failed, 0, "requests failed during reloads");
    assert!(served > 200, "only {served} requests were sent");

    // The limit kept its count across 20 reloads: 3 used before, 2 left.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            client()
                .get(gw.url("/limited"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
}

#[test]
fn reload_refuses_a_bad_file_before_signalling() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, "[[routes]]\nname = \"r\"\nupstream = \"ghost\"\n").unwrap();
    let out = Command::new(binary())
        .args(["reload", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].upstream") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
}

/// A CA and a leaf for `name` signed by it: (ca_pem, leaf_pem, leaf_key).
fn signed_leaf(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_certificates_on_running_tls_listeners() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, old_cert, old_key) = signed_leaf("a.test");
    let (new_ca, new_cert, new_key) = signed_leaf("a.test");
    std::fs::write(dir.path().join("a.pem"), &old_cert).unwrap();
    std::fs::write(dir.path().join("a.key"), &old_key).unwrap();
    let tls_port = common::free_port();
    let d = dir.path().display();
    let gw = Gateway::start(
        &format!("[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncerts = [{{ cert = \"{d}/a.pem\", key = \"{d}/a.key\" }}]\n"),
        &format!("{}\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\n", upstream("pool", &[&b], "")),
    )
    .await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let trusting = |ca: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .resolve("a.test", addr)
            .build()
            .unwrap()
    };
    let url = format!("https://a.test:{tls_port}/x");
    assert_eq!(
        trusting(&old_ca).get(&url).send().await.unwrap().status(),
        200
    );
    assert!(trusting(&new_ca).get(&url).send().await.is_err());

    std::fs::write(dir.path().join("a.pem"), &new_cert).unwrap();
    std::fs::write(dir.path().join("a.key"), &new_key).unwrap();
    let resp = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // New handshakes get the new certificate; the listener never closed.
    assert_eq!(
        trusting(&new_ca).get(&url).send().await.unwrap().status(),
        200
    );
    assert!(trusting(&old_ca).get(&url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_without_waiting_out_the_grace_period() {
    let b = Backend::start("b").await;
    let mut gw = Gateway::start(
        "grace_period = \"30s\"",
        &format!(
            "{}\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\n",
            upstream("pool", &[&b], "")
        ),
    )
    .await;
    let slow = tokio::spawn({
        let url = gw.url("/slow?sleep_ms=1500");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    let exited = tokio::task::spawn_blocking(move || {
        let status = gw.wait_exit(Duration::from_secs(10));
        (status, gw)
    })
    .await
    .unwrap();
    let elapsed = term.elapsed();
    assert!(
        exited.0.is_some(),
        "still running 10 s after SIGTERM (grace period 30 s)\n{}",
        exited.1.stderr()
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(exited.0.and_then(|s| s.code()), Some(0), "a clean exit");
    eprintln!("SIGTERM to exit with one 1.5 s request in flight: {elapsed:?}");
}
