//! Response-cache figures (criterion): the per-request work the cache adds.
//!
//!     cargo bench --bench cache
//!
//! * `key`: building a request's cache key (framing + Blake2b), anonymous
//!   and with a verified identity;
//! * `decide`: the storability decision and meta for a response;
//! * `store/hit_16k`: a lookup that finds an entry and reads its body;
//! * `store/fill_4k_full_store`: admitting a 4 KiB response into a full
//!   store (each fill evicts).
//!
//! The whole hit path through the binary is measured by
//! `benches/cache-load.sh` (against NGINX proxy_cache and Varnish).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use frontdesk::auth::{AuthMethod, Consumer};
use frontdesk::cache::{CachePolicy, KeyParts, KeyQuery, MemoryStore, RouteCache};
use pingora::cache::trace::Span;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;

fn route_cache() -> RouteCache {
    RouteCache {
        policy: Arc::new(CachePolicy::new(
            "bench",
            Duration::from_secs(60),
            Duration::from_secs(3600),
            &["GET".into(), "HEAD".into()],
            &[200],
            (Duration::ZERO, Duration::ZERO),
            KeyQuery::All,
            false,
            false,
            8 << 20,
            Duration::from_secs(5),
        )),
        vary_on_auth: true,
        route: "catalog".into(),
    }
}

fn response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, None).unwrap();
    r.insert_header("content-type", "application/json").unwrap();
    r.insert_header("cache-control", "max-age=60").unwrap();
    r.insert_header("etag", "\"abc\"").unwrap();
    r.insert_header("content-length", "16384").unwrap();
    r
}

fn bench(c: &mut Criterion) {
    let rc = route_cache();
    let consumer = Consumer {
        name: "alice".into(),
        groups: vec![],
        method: AuthMethod::Jwt,
        policy: "users".into(),
        forward: vec![(
            http::HeaderName::from_static("x-consumer"),
            http::HeaderValue::from_static("alice"),
        )],
        claims: Default::default(),
    };
    let mut g = c.benchmark_group("cache");
    g.bench_function("key/anonymous", |b| {
        b.iter(|| {
            rc.key(&KeyParts {
                tls: false,
                host: "api.example.com",
                path: "/catalog/items/7",
                query: Some("page=2&sort=asc"),
                consumer: None,
            })
        })
    });
    g.bench_function("key/identity", |b| {
        b.iter(|| {
            rc.key(&KeyParts {
                tls: true,
                host: "api.example.com",
                path: "/catalog/items/7",
                query: Some("page=2&sort=asc"),
                consumer: Some(&consumer),
            })
        })
    });
    let resp = response();
    g.bench_function("decide", |b| {
        b.iter(|| rc.decide(&resp, "/catalog/items/7", false))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(64 << 20)));
    let span = Span::inactive().handle();
    let key = CacheKey::new("bench-hit", "");
    let now = SystemTime::now();
    let meta = CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, response());
    rt.block_on(async {
        let mut miss = store.get_miss_handler(&key, &meta, &span).await.unwrap();
        miss.write_body(Bytes::from(vec![b'x'; 16384]), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    });
    g.bench_function("store/hit_16k", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (meta, mut hit) = store.lookup(&key, &span).await.unwrap().unwrap();
                let body = hit.read_body().await.unwrap();
                (meta, body)
            })
        })
    });
    let small: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(1 << 20)));
    let body = Bytes::from(vec![b'y'; 4096]);
    let mut i = 0u64;
    g.bench_function("store/fill_4k_full_store", |b| {
        b.iter(|| {
            i += 1;
            let key = CacheKey::new(format!("fill-{i}"), "");
            rt.block_on(async {
                let mut miss = small.get_miss_handler(&key, &meta, &span).await.unwrap();
                miss.write_body(body.clone(), true).await.unwrap();
                miss.finish().await.unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
