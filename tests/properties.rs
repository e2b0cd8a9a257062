//! Property tests (proptest; bounded by case count, never by time) on the
//! parts that read what clients and config files send: the path
//! normalizer and the router, the config loader, the WAF's transforms,
//! rule-file parser and engine, credential extraction, and the cache key.
//! Each states an invariant, not just "no panic". `PROPTEST_CASES=N`
//! runs more cases; `benches/fuzz.sh` runs the long version.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use frontdesk::auth::{AuthVerdict, Credentials};
use frontdesk::cache::KeyParts;
use frontdesk::router::{normalize_path, RouteMatch};
use frontdesk::waf::rules::parse_file;
use frontdesk::waf::transform::{Summary, Transform};
use frontdesk::waf::{Engine, RequestView};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::cache::key::CacheHashKey;
use proptest::prelude::*;

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Paths built from the pieces attackers use: dot segments, encoded dots
/// and slashes, double encoding, backslashes, NULs, overlong UTF-8.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2f".to_string()),
        Just("%252e".to_string()),
        Just("%5c".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("%c0%af".to_string()),
        Just("%".to_string()),
        Just("%zz".to_string()),
        Just("%41".to_string()),
        Just("%7e".to_string()),
        "[a-zA-Z0-9_~-]{1,6}",
        Just("admin".to_string()),
        Just("public".to_string()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

fn segments_are_clean(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains("//")
        && !p.split('/').any(|s| s == "." || s == "..")
        && !p
            .split('/')
            .any(|s| s.eq_ignore_ascii_case("%2e") || s.eq_ignore_ascii_case("%2e%2e"))
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Normalization is idempotent, leaves no empty or dot segments (also
    /// not encoded ones), and a path it accepts never climbs above `/`.
    #[test]
    fn normalized_paths_are_final_and_clean(p in hostile_path()) {
        if let Ok(n) = normalize_path(&p) {
            let again = normalize_path(&n).expect("a normalized path normalizes");
            prop_assert_eq!(&*again, &*n, "not idempotent for {}", p);
            prop_assert!(segments_are_clean(&n), "{} -> {}", p, n);
        }
    }

    /// Any string at all: an error or a path, never a panic.
    #[test]
    fn any_path_string_is_handled(p in "\\PC{0,64}") {
        let _ = normalize_path(&p);
    }
}

const API_KEY: &str = "k-0123456789abcdef";

/// A gateway compiled from a config with an admin route, a public route
/// that strips its prefix, a cached route with JWT and API-key auth.
fn compiled() -> &'static frontdesk::gateway::Gateway {
    static GW: OnceLock<frontdesk::gateway::Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        // The HMAC secret is read from an environment variable; any one
        // that is always set will do for tokens nobody can sign.
        let text = format!(
            r#"
[server]
listen = ["127.0.0.1:1"]

[upstreams.app]
targets = ["127.0.0.1:2"]

[auth.token]
type = "jwt"
algorithms = ["HS256"]
secret_env = "PATH"
forward_claims = {{ role = "x-role" }}

[auth.keys]
type = "api_key"
header = "x-api-key"
keys = [{{ consumer = "ci", sha256 = "{}" }}]

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "app"

[[routes]]
name = "public"
path_prefix = "/public"
strip_prefix = true
upstream = "app"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = ["token", "keys"]
cache = "short"

[cache.short]
ttl = "10s"
"#,
            frontdesk::auth::api_key::hash_key(API_KEY)
        );
        let loaded = frontdesk::config::parse_str(&text, Path::new("props.toml"), Path::new("."))
            .expect("the property-test config parses");
        frontdesk::gateway::compile(&loaded)
            .expect("the property-test config compiles")
            .gateway
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    /// What the router decides for a raw path is what it decides for the
    /// normalized one (the proxy routes and inspects the normalized path),
    /// and a request routed to `admin` is, decoded, under `/admin`: no
    /// encoding or dot trick reaches it from elsewhere, and none keeps a
    /// path under `/admin` away from it.
    #[test]
    fn routing_follows_the_decoded_path(p in hostile_path(), m in prop::sample::select(vec!["GET", "POST", "DELETE"])) {
        let gw = compiled();
        if let Ok(n) = normalize_path(&p) {
            let a = gw.router.find("example.com", &n, m);
            let b = gw.router.find("example.com", &normalize_path(&n).unwrap(), m);
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            let to_admin = matches!(a, RouteMatch::Found { route, .. } if gw.routes[route].name == "admin");
            let under_admin = n == "/admin" || n.starts_with("/admin/");
            prop_assert_eq!(to_admin, under_admin, "{} -> {} -> {:?}", p, n, a);
        }
    }
}

/// The engine's hits on a request built from these parts.
fn inspect(
    e: &Engine,
    uri: &[u8],
    headers: &HeaderMap,
    body: (&str, &[u8]),
) -> Vec<frontdesk::waf::Hit> {
    let s = String::from_utf8_lossy(uri);
    let path = s.split('?').next().unwrap_or("/");
    let mut v = RequestView::new("POST", path, uri, headers, None);
    v.set_body(Some(body.0.as_bytes()), body.1);
    e.run(&v, &[])
}

fn shipped_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
        let mut rules = Vec::new();
        for e in std::fs::read_dir(dir).expect("rules/") {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&p).expect("rule file");
                rules.extend(parse_file(&p, &text).expect("shipped rules parse"));
            }
        }
        Engine::compile(&rules, 4).expect("shipped rules compile")
    })
}

proptest! {
    #![proptest_config(cases(1500))]

    /// Every transform takes any bytes; a step the byte summary skips
    /// would have changed nothing; lowercase and whitespace removal are
    /// idempotent.
    #[test]
    fn transforms_take_any_bytes(v in prop::collection::vec(any::<u8>(), 0..96)) {
        let s = Summary::of(&v);
        for t in Transform::ALL {
            let out = t.apply(std::borrow::Cow::Borrowed(&v));
            if t.leaves_unchanged(s) {
                prop_assert_eq!(out.as_ref(), v.as_slice(), "{:?}", t);
            }
            if matches!(t, Transform::Lowercase | Transform::RemoveWhitespace | Transform::RemoveNulls) {
                let twice = t.apply(std::borrow::Cow::Borrowed(out.as_ref()));
                prop_assert_eq!(twice.as_ref(), out.as_ref(), "{:?} not idempotent", t);
            }
        }
    }

    /// The engine inspects any request: any URI bytes, header values and
    /// bodies of every parsed kind, and the answer is the same twice (the
    /// second time partly from the clean-value memory).
    #[test]
    fn the_engine_inspects_any_request(
        uri in prop::collection::vec(any::<u8>(), 1..80),
        hv in prop::collection::vec(any::<u8>(), 0..60),
        body in prop::collection::vec(any::<u8>(), 0..200),
        ct in prop::sample::select(vec!["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml", "text/plain"]),
    ) {
        let mut uri = uri;
        uri.insert(0, b'/');
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&hv) {
            h.insert(HeaderName::from_static("x-any"), v.clone());
            h.insert(http::header::USER_AGENT, v);
        }
        let e = shipped_engine();
        let first = inspect(e, &uri, &h, (ct, &body));
        let again = inspect(e, &uri, &h, (ct, &body));
        prop_assert_eq!(first, again);
    }

    /// A rule file is any text: parsed or refused with `file:line`, and
    /// what parses compiles or is refused, never a panic.
    #[test]
    fn rule_files_are_parsed_or_refused(
        id in 1u32..1_000_000,
        target in prop::sample::select(vec!["args", "headers", "header:x", "uri", "bogus", ""]),
        op in prop::sample::select(vec!["regex", "phrases", "contains", "gt", "ip_match", "byte_range", "nope"]),
        value in "\\PC{0,24}",
        noise in "\\PC{0,16}",
    ) {
        let text = format!(
            "[[rule]]\nid = {id}\nmsg = \"m\"\ntargets = [{target:?}]\noperator = {op:?}\nvalue = {value:?}\nvalues = [{value:?}]\n{noise}\n"
        );
        match parse_file(Path::new("p.toml"), &text) {
            Ok(rules) => {
                if let Err(problems) = Engine::compile(&rules, 1) {
                    prop_assert!(problems.iter().all(|p| p.starts_with("p.toml:")), "{:?}", problems);
                }
            }
            Err(problems) => prop_assert!(problems.iter().all(|p| p.starts_with("p.toml")), "{:?}", problems),
        }
    }
}

/// Config text around a valid base: values of the wrong type, unknown
/// keys, bad durations and sizes, broken TOML.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "threads",
        "max_request_body",
        "max_header_size",
        "keepalive_timeout",
        "grace_period",
        "trusted_proxies",
        "access_log",
        "listen",
        "h2c",
        "bogus_key",
    ]);
    let value = prop::sample::select(vec![
        "1",
        "0",
        "-1",
        "99999999999",
        "\"1KiB\"",
        "\"12 parsecs\"",
        "\"10s\"",
        "\"-5s\"",
        "true",
        "[]",
        "[\"10.0.0.0/8\"]",
        "[\"not-a-cidr\"]",
        "\"\"",
        "{ a = 1 }",
        "\"\\r\\nX: y\"",
        "'''",
    ]);
    let route_extra = prop::sample::select(vec![
        "",
        "methods = [\"GET\"]",
        "methods = [\"FROB\"]",
        "strip_prefix = \"yes\"",
        "request_headers = { set = { \"x-a\" = \"b\\r\\nInjected: 1\" } }",
        "request_headers = { set = { \"bad header\" = \"v\" } }",
        "timeout = \"1s\"",
        "path_prefix = \"no-slash\"",
        "upstream = \"missing\"",
        "cache = \"nowhere\"",
        "waf = \"sometimes\"",
    ]);
    // Header operations whose names or values may smuggle a CR/LF (a
    // response splitting / header injection through the config).
    let header_name = prop::sample::select(vec!["x-a", "x-b\\r\\nInjected", "bad name", "x-c"]);
    let header_value = prop::sample::select(vec![
        "ok",
        "a\\r\\nInjected: 1",
        "a\\nb",
        "a\\rb",
        "tab\\tok",
        "",
    ]);
    let ops = prop::sample::select(vec![
        "request.set_headers",
        "request.add_headers",
        "response.set_headers",
        "response.add_headers",
    ]);
    (
        prop::collection::vec((key, value), 0..4),
        route_extra,
        prop::option::of((ops, header_name, header_value)),
    )
        .prop_map(|(server, route, transform)| {
            let mut t = String::from("[server]\nlisten = [\"127.0.0.1:1\"]\n");
            for (k, v) in server {
                t.push_str(&format!("{k} = {v}\n"));
            }
            t.push_str("\n[upstreams.app]\ntargets = [\"127.0.0.1:2\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n");
            t.push_str(route);
            t.push('\n');
            if let Some((op, name, value)) = transform {
                t.push_str(&format!("transform = \"t\"\n\n[transforms.t]\n{op} = {{ \"{name}\" = \"{value}\" }}\n"));
            }
            t
        })
}

proptest! {
    #![proptest_config(cases(600))]

    /// Any such config is loaded or refused with a message that names a
    /// line; what is accepted compiles into a gateway with its route, and
    /// a header operation carrying CR or LF is never accepted.
    #[test]
    fn configs_are_accepted_or_refused_with_a_line(text in config_text()) {
        let injects = text
            .split("[transforms.t]")
            .nth(1)
            .is_some_and(|t| t.contains("\\r") || t.contains("\\n"));
        match frontdesk::config::parse_str(&text, Path::new("c.toml"), Path::new(".")) {
            Ok(loaded) => match frontdesk::gateway::compile(&loaded) {
                Ok(c) => {
                    prop_assert!(!injects, "accepted a CR/LF header operation:\n{}", text);
                    prop_assert_eq!(c.gateway.routes.len(), 1);
                }
                Err(e) => prop_assert!(e.to_string().contains("c.toml"), "{}", e),
            },
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("c.toml:"), "no file:line in {:?} for\n{}", msg, text);
            }
        }
    }
}

fn orders_route() -> &'static frontdesk::gateway::Route {
    compiled()
        .routes
        .iter()
        .find(|r| r.name == "orders")
        .expect("orders route")
}

proptest! {
    #![proptest_config(cases(500))]

    /// Credentials are any header bytes and any query: refused or admitted,
    /// never a panic; only the configured key admits.
    #[test]
    fn credentials_from_any_headers(auth in prop::collection::vec(any::<u8>(), 0..120), key in "\\PC{0,40}", q in "\\PC{0,40}") {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&auth) {
            h.insert(http::header::AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&key) {
            h.insert(HeaderName::from_static("x-api-key"), v);
        }
        let creds = Credentials { headers: &h, query: Some(&q), client_cert: None };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let verdict = rt.block_on(orders_route().auth.as_ref().expect("auth").check(&creds));
        let admitted = matches!(verdict, AuthVerdict::Admit(_));
        prop_assert!(!admitted || key == API_KEY, "admitted {:?} / {:?}", auth, key);
    }

    /// Two different callers, or two different requests, never share a
    /// cache key, whatever bytes their names, claims, hosts and paths hold.
    #[test]
    fn cache_keys_never_collide(
        a in ("\\PC{0,12}", "\\PC{0,12}", "[ -~]{0,12}"),
        b in ("\\PC{0,12}", "\\PC{0,12}", "[ -~]{0,12}"),
        host in "[a-z.:0-9]{0,12}",
        path in "/[ -~]{0,16}",
    ) {
        let cache = orders_route().cache.as_ref().expect("cache");
        let consumer = |(policy, name, role): (String, String, String)| frontdesk::auth::Consumer {
            name,
            groups: Vec::new(),
            method: frontdesk::auth::AuthMethod::Jwt,
            policy: policy.into(),
            forward: HeaderValue::from_str(&role)
                .map(|v| vec![(HeaderName::from_static("x-role"), v)])
                .unwrap_or_default(),
            claims: Default::default(),
        };
        let (ca, cb) = (consumer(a.clone()), consumer(b.clone()));
        let parts = |c| KeyParts { tls: false, host: &host, path: &path, query: None, consumer: Some(c) };
        let same_caller = ca.policy == cb.policy && ca.name == cb.name && ca.forward == cb.forward;
        let (ka, kb) = (cache.key(&parts(&ca)), cache.key(&parts(&cb)));
        prop_assert_eq!(ka.primary_bin() == kb.primary_bin(), same_caller, "{:?} vs {:?}", a, b);
        // Another path, same caller: another key.
        let other = format!("{path}x");
        let kc = cache.key(&KeyParts { tls: false, host: &host, path: &other, query: None, consumer: Some(&ca) });
        prop_assert_ne!(ka.primary_bin(), kc.primary_bin());
        let anon = cache.key(&KeyParts { tls: false, host: &host, path: &path, query: None, consumer: None });
        prop_assert_ne!(ka.primary_bin(), anon.primary_bin());
    }
}

/// What `frontdesk check` accepts starts: generated configs (the strategy
/// above, a fixed seed) that load and compile are run by the real binary,
/// which must come up and accept connections.
#[test]
fn accepted_configs_start() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = config_text();
    let mut started = 0;
    for _ in 0..200 {
        if started == 12 {
            break;
        }
        let text = strategy.new_tree(&mut runner).expect("a config").current();
        let accepted = frontdesk::config::parse_str(&text, Path::new("c.toml"), Path::new("."))
            .ok()
            .is_some_and(|l| frontdesk::gateway::compile(&l).is_ok());
        if !accepted {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = common::free_port();
        let d = dir.path().display();
        let text = text.replacen(
            "listen = [\"127.0.0.1:1\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]\npid_file = \"{d}/pid\"\nupgrade_socket = \"{d}/upgrade.sock\"\naccess_log = \"off\""),
            1,
        );
        // TOML refuses a key given twice, and the generated keys may set
        // access_log too: keep ours.
        let text = dedupe_server_keys(&text);
        let conf = dir.path().join("frontdesk.toml");
        std::fs::write(&conf, &text).expect("write");
        let (code, out) = common::check(&conf);
        assert_eq!(code, Some(0), "check refused what compiled:\n{text}\n{out}");
        let mut child = std::process::Command::new(common::binary())
            .args(["run", "-c"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start frontdesk");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let up = loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            if child.try_wait().ok().flatten().is_some() || std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        assert!(
            up,
            "check accepted a config that does not start:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        started += 1;
    }
    assert!(
        started >= 5,
        "only {started} generated configs were accepted"
    );
}

/// Keeps the first occurrence of each key in `[server]`.
fn dedupe_server_keys(text: &str) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut in_server = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_server = line == "[server]";
        } else if in_server {
            if let Some((k, _)) = line.split_once('=') {
                if !seen.insert(k.trim().to_string()) {
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
