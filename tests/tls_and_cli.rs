//! TLS listeners (certificate chosen by SNI, HTTP/2 through ALPN) and the
//! `check` command, through the real binary.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{binary, free_port, upstream, Backend, Gateway};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

struct TestPki {
    ca_pem: String,
    leaves: Vec<(String, String)>,
}

/// A CA and one leaf certificate per name, signed by it.
fn pki(names: &[&str]) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaves = names
        .iter()
        .map(|n| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![n.to_string()])
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    TestPki {
        ca_pem: ca.pem(),
        leaves,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_offers_h2() {
    let b = Backend::start("b").await;
    let pki = pki(&["a.test", "b.test"]);
    let dir = tempfile::tempdir().unwrap();
    for (i, (cert, key)) in pki.leaves.iter().enumerate() {
        std::fs::write(dir.path().join(format!("leaf{i}.pem")), cert).unwrap();
        std::fs::write(dir.path().join(format!("leaf{i}.key")), key).unwrap();
    }
    let tls_port = free_port();
    let d = dir.path().display();
    let server_extra = format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncerts = [{{ cert = \"{d}/leaf0.pem\", key = \"{d}/leaf0.key\" }}, {{ cert = \"{d}/leaf1.pem\", key = \"{d}/leaf1.key\" }}]\n"
    );
    let body = format!(
        "{}\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\n",
        upstream("pool", &[&b], "")
    );
    let gw = Gateway::start(&server_extra, &body).await;
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();

    // The client trusts only the CA and checks the name: a wrong certificate
    // for either name would fail the handshake.
    for name in ["a.test", "b.test"] {
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
            .resolve(name, addr)
            .build()
            .unwrap();
        let resp = client
            .get(format!("https://{name}:{tls_port}/hello"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}\n{}", gw.stderr()));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["headers"]["x-forwarded-proto"], "https");
        assert_eq!(json["headers"]["x-forwarded-host"], name);
    }

    // HTTP/1.1 over TLS still works for clients that do not offer h2.
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .resolve("a.test", addr)
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://a.test:{tls_port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontdesk.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_every_problem_with_key_and_line() {
    let bad = r#"[server]
listen = ["127.0.0.1:8080"]
threads = "four"

[upstreams.orders]
targets = ["127.0.0.1:9001"]
balance = "fastest"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "orders"

[[routes]]
name = "payments"
path_prefix = "/pay"
upstream = "payments"
cors = "web"
"#;
    let (code, stdout, stderr) = check(bad);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("ok"));
    for expected in [
        "frontdesk.toml:3:11: server.threads:",
        "frontdesk.toml:7:11: upstreams.orders.balance:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    // Once the types are right, reference problems are reported, all at once.
    let bad_refs = bad
        .replace("threads = \"four\"", "threads = 4")
        .replace("\"fastest\"", "\"round_robin\"");
    let (code, _, stderr) = check(&bad_refs);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":17:12: routes[1].upstream: no [upstreams.payments] block"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":18:8: routes[1].cors: no [cors.web] block"),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s)"), "{stderr}");

    let (code, stdout, _) = check(
        &bad_refs
            .replace("upstream = \"payments\"", "upstream = \"orders\"")
            .replace("cors = \"web\"\n", ""),
    );
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn check_reports_syntax_errors_and_missing_files() {
    let (code, _, stderr) = check("[server\nlisten = 1\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("frontdesk.toml:1:"), "{stderr}");
    assert!(stderr.contains("syntax"), "{stderr}");
    let out = Command::new(binary())
        .args(["check", "-c", "/nonexistent/frontdesk.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for conf in ["conf/demo.toml", "conf/frontdesk.toml"] {
        // `frontdesk demo` sets this itself; `check` needs it from outside.
        let out = Command::new(binary())
            .args(["check", "-c"])
            .arg(format!("{root}/{conf}"))
            .env(
                "FRONTDESK_DEMO_JWT_SECRET",
                "a-secret-for-checking-the-demo-config",
            )
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_plain_listeners_when_enabled() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\n",
        upstream("pool", &[&b], "")
    );
    let gw = Gateway::start("h2c = true", &body).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client.get(gw.url("/h2c")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["path"], "/h2c");
    // HTTP/1.1 clients still work on the same listener.
    let resp = common::client().get(gw.url("/h1")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}
