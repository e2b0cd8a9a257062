//! The response cache through the real binary, against an origin that
//! counts its hits and answers with the caching headers each test asks for
//! (in the query: `cc`, `vary`, `etag`, `cookie`, `size`, `sleep_ms`).
//! Hits and misses are read from `X-Cache-Status`, the origin's counters
//! and the body's `n` (which origin hit produced it). Bounds, never timings.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::{client, eventually, metric, metrics, Gateway};

/// An origin whose caching headers come from the request's query.
struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct OriginState {
    hits: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = OriginState {
            hits: Arc::new(AtomicUsize::new(0)),
            not_modified: Arc::new(AtomicUsize::new(0)),
            down: Arc::new(AtomicBool::new(false)),
        };
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if s.down.load(Ordering::SeqCst) {
                    // Down: connections are accepted and closed at once.
                    drop(stream);
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, s.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            hits: state.hits,
            not_modified: state.not_modified,
            down: state.down,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn upstream(&self) -> String {
        format!("[upstreams.origin]\ntargets = [\"{}\"]\n", self.addr)
    }
}

async fn answer(req: Request<Incoming>, s: OriginState) -> Result<Response<Full<Bytes>>, String> {
    if s.down.load(Ordering::SeqCst) {
        // Down: a kept-alive connection is closed without an answer.
        return Err("down".into());
    }
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if let Some(ms) = q.get("sleep_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut resp = Response::builder().header("content-type", "application/json");
    if let Some(cc) = q.get("cc") {
        resp = resp.header("cache-control", cc.as_str());
    }
    if let Some(v) = q.get("vary") {
        resp = resp.header("vary", v.as_str());
    }
    if q.contains_key("cookie") {
        resp = resp.header("set-cookie", "session=abc; HttpOnly");
    }
    if let Some(etag) = q.get("etag") {
        resp = resp.header("etag", format!("\"{etag}\""));
        if header("if-none-match") == format!("\"{etag}\"") {
            s.not_modified.fetch_add(1, Ordering::SeqCst);
            return Ok(resp.status(304).body(Full::new(Bytes::new())).unwrap());
        }
    }
    let n = s.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let mut body = json!({
        "n": n,
        "path": req.uri().path(),
        "consumer": header("x-consumer"),
        "accept_encoding": header("accept-encoding"),
    })
    .to_string();
    if let Some(size) = q.get("size").and_then(|v| v.parse::<usize>().ok()) {
        body = format!("{body}{}", " ".repeat(size.saturating_sub(body.len())));
    }
    Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
}

struct Got {
    status: u16,
    cache: String,
    age: Option<u64>,
    body: Value,
    raw_len: usize,
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Got {
    send(gw, reqwest::Method::GET, path, headers).await
}

async fn send(gw: &Gateway, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().request(method, gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let cache = h("x-cache-status").unwrap_or_default();
    let age = h("age").and_then(|a| a.parse().ok());
    let bytes = resp.bytes().await.unwrap_or_default();
    Got {
        status,
        cache,
        age,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        raw_len: bytes.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_and_what_is_never_stored() {
    let o = Origin::start().await;
    let body = format!(
        r#"{}
[[routes]]
name = "pub"
path_prefix = "/pub"
upstream = "origin"
cache = "short"

[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "origin"

[cache.short]
ttl = "30s"
max_ttl = "1h"
key_query = ["page", "sort"]
"#,
        o.upstream()
    );
    let gw = Gateway::start("", &body).await;

    let first = get(&gw, "/pub/a", &[]).await;
    assert_eq!((first.status, first.cache.as_str()), (200, "MISS"));
    let second = get(&gw, "/pub/a", &[]).await;
    assert_eq!((second.status, second.cache.as_str()), (200, "HIT"));
    assert_eq!(second.body["n"], first.body["n"]);
    assert!(second.age.is_some(), "a hit carries Age");
    assert_eq!(o.hits(), 1, "the second GET never reached the origin");

    // HEAD is answered from GET's entry, without a body.
    let head = send(&gw, reqwest::Method::HEAD, "/pub/a", &[]).await;
    assert_eq!(
        (head.status, head.cache.as_str(), head.raw_len),
        (200, "HIT", 0)
    );
    assert_eq!(o.hits(), 1);

    // Only the listed query parameters count, in any order.
    let a = get(&gw, "/pub/q?page=2&sort=asc&utm=x", &[]).await;
    let b = get(&gw, "/pub/q?sort=asc&utm=y&page=2", &[]).await;
    assert_eq!((a.cache.as_str(), b.cache.as_str()), ("MISS", "HIT"));
    let c = get(&gw, "/pub/q?page=3&sort=asc", &[]).await;
    assert_eq!(c.cache, "MISS");

    // private, no-store and Set-Cookie are never stored.
    for q in ["cc=private%2C%20max-age%3D60", "cc=no-store", "cookie=1"] {
        let before = o.hits();
        let one = get(&gw, &format!("/pub/never?{q}"), &[]).await;
        let two = get(&gw, &format!("/pub/never?{q}"), &[]).await;
        assert_eq!(o.hits(), before + 2, "{q} was stored");
        assert_eq!(one.status, 200);
        assert_ne!(two.cache, "HIT", "{q}");
        assert_ne!(two.body["n"], one.body["n"], "{q}");
    }

    // Vary: Accept-Encoding keeps the variants apart.
    let vary = "/pub/v?vary=Accept-Encoding";
    let gz = get(&gw, vary, &[("accept-encoding", "gzip")]).await;
    let br = get(&gw, vary, &[("accept-encoding", "br")]).await;
    assert_eq!((gz.cache.as_str(), br.cache.as_str()), ("MISS", "MISS"));
    let gz2 = get(&gw, vary, &[("accept-encoding", "gzip")]).await;
    let br2 = get(&gw, vary, &[("accept-encoding", "br")]).await;
    assert_eq!((gz2.cache.as_str(), br2.cache.as_str()), ("HIT", "HIT"));
    assert_eq!(gz2.body["accept_encoding"], "gzip");
    assert_eq!(br2.body["accept_encoding"], "br");
    assert_eq!(gz2.body["n"], gz.body["n"]);
    assert_eq!(br2.body["n"], br.body["n"]);

    // Authorization the gateway did not verify (no auth on this route):
    // the backend may have answered for that user, so it is stored only
    // when the response says it may be shared (RFC 9111 §3.5).
    let creds = [("authorization", "Basic dXNlcjpwYXNz")];
    let before = o.hits();
    get(&gw, "/pub/mine?cc=max-age%3D60", &creds).await;
    let again = get(&gw, "/pub/mine?cc=max-age%3D60", &creds).await;
    assert_eq!(o.hits(), before + 2);
    assert_ne!(again.cache, "HIT");
    get(&gw, "/pub/shareable?cc=public%2C%20max-age%3D60", &creds).await;
    assert_eq!(
        get(&gw, "/pub/shareable?cc=public%2C%20max-age%3D60", &[])
            .await
            .cache,
        "HIT"
    );

    // Vary: * is never stored.
    let before = o.hits();
    get(&gw, "/pub/star?vary=*", &[]).await;
    get(&gw, "/pub/star?vary=*", &[]).await;
    assert_eq!(o.hits(), before + 2);

    // Other methods pass through, marked BYPASS; routes without a cache carry no status.
    let post = send(&gw, reqwest::Method::POST, "/pub/a", &[]).await;
    assert_eq!((post.status, post.cache.as_str()), (200, "BYPASS"));
    let plain = get(&gw, "/plain/a", &[]).await;
    assert_eq!((plain.status, plain.cache.as_str()), (200, ""));

    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "frontdesk_cache_requests_total{route=\"pub\",status=\"HIT\"}"
        ) >= 5.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "frontdesk_cache_requests_total{route=\"pub\",status=\"MISS\"}"
        ) >= 5.0
    );
    assert!(metric(&m, "frontdesk_cache_items") >= 4.0, "{m}");
    assert!(metric(&m, "frontdesk_cache_bytes") > 0.0);
}

const SECRET: &str = "cache-test-secret-that-is-long-enough-42";

fn token(sub: &str, scope: &str, ttl: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "scope": scope, "iat": now, "exp": now + ttl }),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_routes_cache_per_identity() {
    std::env::set_var("FRONTDESK_CACHE_TEST_SECRET", SECRET);
    let o = Origin::start().await;
    let body = format!(
        r#"{}
[[routes]]
name = "catalog"
path_prefix = "/catalog"
upstream = "origin"
auth = "users"
cache = "short"

[[routes]]
name = "shared"
path_prefix = "/shared"
upstream = "origin"
auth = "users"
cache = "everyone"

[auth.users]
type = "jwt"
algorithms = ["HS256"]
secret_env = "FRONTDESK_CACHE_TEST_SECRET"
forward_claims = {{ scope = "x-scope" }}

[cache.short]
ttl = "30s"

[cache.everyone]
ttl = "30s"
vary_on_auth = false
"#,
        o.upstream()
    );
    let gw = Gateway::start("", &body).await;
    let bearer = |t: &str| format!("Bearer {t}");
    let (alice, bob) = (token("alice", "read", 600), token("bob", "read", 600));

    // No token: 401 from the gateway, never a body from the origin.
    let none = get(&gw, "/catalog/items/7", &[]).await;
    assert_eq!((none.status, none.cache.as_str()), (401, "BYPASS"));
    assert_eq!(o.hits(), 0);

    let a1 = get(
        &gw,
        "/catalog/items/7",
        &[("authorization", &bearer(&alice))],
    )
    .await;
    let a2 = get(
        &gw,
        "/catalog/items/7",
        &[("authorization", &bearer(&alice))],
    )
    .await;
    assert_eq!((a1.cache.as_str(), a2.cache.as_str()), ("MISS", "HIT"));
    assert_eq!(a2.body["consumer"], "alice");

    let b1 = get(&gw, "/catalog/items/7", &[("authorization", &bearer(&bob))]).await;
    assert_eq!(b1.cache, "MISS", "bob never gets alice's copy");
    assert_eq!(b1.body["consumer"], "bob");
    let b2 = get(&gw, "/catalog/items/7", &[("authorization", &bearer(&bob))]).await;
    assert_eq!(
        (b2.cache.as_str(), b2.body["consumer"].as_str()),
        ("HIT", Some("bob"))
    );
    assert_eq!(o.hits(), 2);

    // With a copy cached, no token and a bad token still get 401.
    for auth in ["", "Bearer not-a-token"] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", auth)]
        };
        let r = get(&gw, "/catalog/items/7", &headers).await;
        assert_eq!(r.status, 401);
        assert!(r.body.get("n").is_none(), "{:?}", r.body);
    }

    // The identity, not the credential: a fresh token for alice with the
    // same claims is a hit; one whose forwarded claims differ is not.
    let alice_again = token("alice", "read", 900);
    assert_ne!(alice_again, alice);
    let a3 = get(
        &gw,
        "/catalog/items/7",
        &[("authorization", &bearer(&alice_again))],
    )
    .await;
    assert_eq!(
        (a3.cache.as_str(), a3.body["n"].clone()),
        ("HIT", a1.body["n"].clone())
    );
    let alice_admin = token("alice", "admin", 600);
    let a4 = get(
        &gw,
        "/catalog/items/7",
        &[("authorization", &bearer(&alice_admin))],
    )
    .await;
    assert_eq!(a4.cache, "MISS");
    assert_eq!(o.hits(), 3);

    // vary_on_auth = false: one copy for every authenticated caller.
    let s1 = get(&gw, "/shared/list", &[("authorization", &bearer(&alice))]).await;
    let s2 = get(&gw, "/shared/list", &[("authorization", &bearer(&bob))]).await;
    assert_eq!((s1.cache.as_str(), s2.cache.as_str()), ("MISS", "HIT"));
    let s3 = get(&gw, "/shared/list", &[]).await;
    assert_eq!(s3.status, 401, "sharing a copy still needs a valid token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_revalidation_and_stale_copies() {
    let o = Origin::start().await;
    let body = format!(
        r#"{}
[[routes]]
name = "fresh"
path_prefix = "/fresh"
upstream = "origin"
cache = "plain"
rate_limit = "everyone"

[[routes]]
name = "swr"
path_prefix = "/swr"
upstream = "origin"
cache = "swr"
rate_limit = "swr-quota"

[[routes]]
name = "strict"
path_prefix = "/strict"
upstream = "origin"
cache = "strict"

[rate_limits.everyone]
key = "route"
limit = 1000
per = "1h"

[rate_limits.swr-quota]
key = "route"
limit = 1000
per = "1h"

[cache.plain]
ttl = "30s"
stale_if_error = "5m"

[cache.swr]
ttl = "30s"
stale_while_revalidate = "30s"

[cache.strict]
ttl = "30s"
honor_client_no_cache = true
"#,
        o.upstream()
    );
    let gw = Gateway::start("", &body).await;

    // Expiry without validators: a full refetch.
    let p = "/fresh/e?cc=max-age%3D1";
    assert_eq!(get(&gw, p, &[]).await.cache, "MISS");
    assert_eq!(get(&gw, p, &[]).await.cache, "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = get(&gw, p, &[]).await;
    assert_eq!(expired.cache, "EXPIRED");
    assert_eq!(get(&gw, p, &[]).await.cache, "HIT");

    // Expiry with an ETag: a 304 from the origin refreshes the entry.
    let p = "/fresh/r?cc=max-age%3D1&etag=v1";
    let first = get(&gw, p, &[]).await;
    assert_eq!(first.cache, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reval = get(&gw, p, &[]).await;
    assert_eq!((reval.status, reval.cache.as_str()), (200, "REVALIDATED"));
    assert_eq!(
        reval.body["n"], first.body["n"],
        "the stored body is served"
    );
    assert_eq!(o.not_modified.load(Ordering::SeqCst), 1);
    let after = get(&gw, p, &[]).await;
    assert_eq!(after.cache, "HIT", "the 304 made the entry fresh again");
    assert!(
        after.age.unwrap_or(99) <= 1,
        "age counts from the revalidation"
    );

    // Client no-cache: ignored by default, a revalidation where allowed.
    let nc = [("cache-control", "no-cache")];
    get(&gw, "/fresh/nc", &[]).await;
    assert_eq!(get(&gw, "/fresh/nc", &nc).await.cache, "HIT");
    get(&gw, "/strict/nc?etag=s1", &[]).await;
    let forced = get(&gw, "/strict/nc?etag=s1", &nc).await;
    assert_eq!(forced.cache, "REVALIDATED");

    // Stale-while-revalidate: the stale copy now, a fresh one in the background.
    let p = "/swr/s?cc=max-age%3D1";
    let first = get(&gw, p, &[]).await;
    assert_eq!(first.cache, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hits_before = o.hits();
    let stale = get(&gw, p, &[]).await;
    assert_eq!((stale.status, stale.cache.as_str()), (200, "STALE"));
    assert_eq!(stale.body["n"], first.body["n"]);
    assert!(
        eventually(Duration::from_secs(5), || async { o.hits() > hits_before }).await,
        "the background refresh reached the origin"
    );
    let refreshed = eventually(Duration::from_secs(5), || async {
        let r = get(&gw, p, &[]).await;
        r.cache == "HIT" && r.body["n"] != first.body["n"]
    })
    .await;
    assert!(refreshed, "the refreshed copy is served");

    // The background refresh is not a second request: not logged, not
    // counted, not rate limited.
    let last = client().get(gw.url(p)).send().await.unwrap();
    let quota = last
        .headers()
        .get("ratelimit")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    drop(last);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics(&gw).await;
    let swr_requests: f64 = m
        .lines()
        .filter(|l| l.starts_with("frontdesk_requests_total{") && l.contains("route=\"swr\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let swr_cache: f64 = m
        .lines()
        .filter(|l| l.starts_with("frontdesk_cache_requests_total{route=\"swr\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(swr_requests, swr_cache, "{m}");
    let logged = gw
        .access_log()
        .lines()
        .filter(|l| l.contains("\"route\":\"swr\""))
        .count();
    assert_eq!(logged as f64, swr_requests);
    let remaining: f64 = quota
        .split(";r=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or(-1.0);
    assert_eq!(remaining, 1000.0 - swr_requests, "{quota}");

    // Stale-if-error: the origin goes down; the expired copy is served.
    let p = "/fresh/down?cc=max-age%3D1";
    let first = get(&gw, p, &[]).await;
    assert_eq!(first.cache, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    o.down.store(true, Ordering::SeqCst);
    let stale = get(&gw, p, &[]).await;
    assert_eq!((stale.status, stale.cache.as_str()), (200, "STALE"));
    assert_eq!(stale.body["n"], first.body["n"]);
    let uncached = get(&gw, "/fresh/never-stored", &[]).await;
    assert_eq!(uncached.status, 502, "nothing stored: the error shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_backend_request() {
    let o = Origin::start().await;
    let body = format!(
        r#"{}
[[routes]]
name = "slow"
path_prefix = "/slow"
upstream = "origin"
cache = "c"

[cache.c]
ttl = "30s"
"#,
        o.upstream()
    );
    let gw = Gateway::start("", &body).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = gw.url("/slow/item?sleep_ms=500");
        tasks.push(tokio::spawn(async move {
            let r = client().get(url).send().await.expect("request");
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v["n"].clone())
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(
        bodies.iter().all(|(s, n)| *s == 200 && *n == json!(1)),
        "{bodies:?}"
    );
    assert_eq!(o.hits(), 1, "50 concurrent misses, one origin request");
}

async fn purge(gw: &Gateway, body: &str) -> (u16, Value) {
    let r = client()
        .post(gw.admin_url("/cache/purge"))
        .body(body.to_string())
        .send()
        .await
        .expect("purge");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_the_memory_budget() {
    std::env::set_var("FRONTDESK_CACHE_TEST_SECRET", SECRET);
    let o = Origin::start().await;
    let body = format!(
        r#"{}
[[routes]]
name = "catalog"
path_prefix = "/catalog"
upstream = "origin"
auth = "users"
cache = "c"

[[routes]]
name = "fill"
path_prefix = "/fill"
upstream = "origin"
cache = "c"

[[routes]]
name = "uncached"
path_prefix = "/u"
upstream = "origin"

[auth.users]
type = "jwt"
algorithms = ["HS256"]
secret_env = "FRONTDESK_CACHE_TEST_SECRET"

[cache.c]
ttl = "5m"
max_object_size = "64KiB"
"#,
        o.upstream()
    );
    let gw = Gateway::start("[server.cache]\nmemory = \"1MiB\"", &body).await;
    let users = [token("alice", "", 600), token("bob", "", 600)];
    // Two identities × two Vary variants of one path, and another path.
    for t in &users {
        for ae in ["gzip", "br"] {
            let h = [
                ("authorization", format!("Bearer {t}")),
                ("accept-encoding", ae.to_string()),
            ];
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(
                get(&gw, "/catalog/items/7?vary=Accept-Encoding", &h)
                    .await
                    .cache,
                "MISS"
            );
            assert_eq!(
                get(&gw, "/catalog/items/7?vary=Accept-Encoding", &h)
                    .await
                    .cache,
                "HIT"
            );
        }
        let h = [("authorization", format!("Bearer {t}"))];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        get(&gw, "/catalog/items/8", &h).await;
    }
    let (status, v) = purge(&gw, r#"{"route": "catalog", "path": "/catalog/items/7"}"#).await;
    assert_eq!((status, v["purged"].clone()), (200, json!(4)), "{v}");
    let h = [("authorization", format!("Bearer {}", users[0]))];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        get(&gw, "/catalog/items/7?vary=Accept-Encoding", &h)
            .await
            .cache,
        "MISS"
    );
    assert_eq!(
        get(&gw, "/catalog/items/8", &h).await.cache,
        "HIT",
        "other paths stay"
    );
    let (status, v) = purge(&gw, r#"{"route": "catalog"}"#).await;
    assert_eq!((status, v["purged"].clone()), (200, json!(3)), "{v}");
    assert_eq!(get(&gw, "/catalog/items/8", &h).await.cache, "MISS");

    // Purge requests that cannot be done say why.
    assert_eq!(purge(&gw, r#"{"route": "ghost"}"#).await.0, 404);
    let (status, v) = purge(&gw, r#"{"route": "uncached"}"#).await;
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap_or("").contains("has no cache"),
        "{v}"
    );
    assert_eq!(purge(&gw, "not json").await.0, 400);

    // A reload that changes a route's cache drops what it stored.
    get(&gw, "/fill/kept", &[]).await;
    assert_eq!(get(&gw, "/fill/kept", &[]).await.cache, "HIT");
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(
        gw.config_path(),
        text.replace("ttl = \"5m\"", "ttl = \"4m\""),
    )
    .unwrap();
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&gw, "/fill/kept", &[]).await.cache, "MISS");

    // A fill of 4 MiB through a 1 MiB store: evictions, never past the budget.
    let budget = 1024.0 * 1024.0;
    for i in 0..256 {
        let r = get(&gw, &format!("/fill/{i}?size=16000"), &[]).await;
        assert_eq!(r.status, 200);
        if i % 32 == 31 {
            let m = metrics(&gw).await;
            let bytes = metric(&m, "frontdesk_cache_bytes");
            assert!(
                bytes > 0.0 && bytes <= budget,
                "{bytes} bytes held after {i}"
            );
        }
    }
    let m = metrics(&gw).await;
    assert!(metric(&m, "frontdesk_cache_evictions_total") > 0.0, "{m}");
    assert!(metric(&m, "frontdesk_cache_items") < 100.0, "{m}");
    assert_eq!(metric(&m, "frontdesk_cache_budget_bytes"), budget);
    // Oversized responses pass through and are not kept.
    let big = get(&gw, "/fill/big?size=100000", &[]).await;
    assert_eq!(big.status, 200);
    assert_eq!(big.raw_len, 100000);
    assert_ne!(get(&gw, "/fill/big?size=100000", &[]).await.cache, "HIT");
}

#[test]
fn cache_config_problems_are_reported_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("frontdesk.toml");
    std::fs::write(
        &conf,
        r#"[upstreams.u]
targets = ["127.0.0.1:9"]

[[routes]]
name = "r"
upstream = "u"
cache = "ghost"

[cache.bad]
methods = ["POST"]
statuses = [206]
key_query = "some"
ttl = "2h"
max_object_size = "1GiB"
"#,
    )
    .unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        ":7:9: routes[0].cache: no [cache.ghost] block",
        "cache.bad.methods: \"POST\" cannot be cached",
        "cache.bad.statuses: 206 cannot be stored",
        "cache.bad.key_query: \"some\"",
        "cache.bad.ttl: ttl (2h) is longer than max_ttl (1h)",
        "cache.bad.max_object_size: must be between",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
