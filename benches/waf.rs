//! WAF inspection cost per request (criterion), with the shipped rules
//! (`rules/*.toml`, paranoia 1):
//!
//!     cargo bench --bench waf
//!
//! * `load_get`: the load script's request (GET / with Host and User-Agent);
//! * `clean_get`: a browser-like GET with ten headers and a query whose
//!   page number is new every time;
//! * `varied_get`: what `benches/policy-load.sh waf --scenarios varied`
//!   sends (`benches/conf/varied-query.lua`): the load script's headers and
//!   a query with a new page number and a new id every time;
//! * `clean_json_post_2k`: a 2 KB JSON body (view built and parsed too);
//! * `attack_get`: a SQL injection in the query (every rule still runs).
//!
//! Each runs as a returning client's request (values the engine saw before
//! are remembered clean: the repeated headers, the JSON body) and, with the
//! suffix `_first_sight`, with nothing remembered.
//!
//! Each figure includes building the request view (query, cookies, body
//! parsing) and running every rule.

use criterion::{criterion_group, criterion_main, Criterion};
use frontdesk::waf::rules::parse_file;
use frontdesk::waf::{Engine, RequestView};
use http::HeaderMap;

fn engine() -> Engine {
    let mut rules = Vec::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("rules/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for p in files {
        let text = std::fs::read_to_string(&p).expect("read rule file");
        rules.extend(parse_file(&p, &text).expect("rule file parses"));
    }
    Engine::compile(&rules, 1).expect("rules compile")
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://shop.example.net/checkout?step=2"),
        ("origin", "https://shop.example.net"),
        ("cookie", "_ga=GA1.2.221088899.1719982817; locale=de-DE; theme=dark"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyXzg4NjI5ODEifQ.aI7Q2qMS4C9DdhIu7hNWdKhrLhqMMHGLFjZt16JPtGc"),
        ("traceparent", "00-77a992fdd16f649839adde6fddd4bece-53a8d58321c1ab13-01"),
    ] {
        h.insert(k, v.parse().unwrap());
    }
    h
}

fn json_2k() -> Vec<u8> {
    let mut items = Vec::new();
    for i in 0..17 {
        items.push(format!(
            r#"{{"sku": "SKU-{i:05}", "name": "Item number {i}, blue", "qty": {i}, "note": "please deliver to the back door after 5pm"}}"#
        ));
    }
    format!(
        r#"{{"customer": {{"name": "Emma McDonald", "email": "emma@example.net"}}, "items": [{}], "coupon": "SPRING-24"}}"#,
        items.join(", ")
    )
    .into_bytes()
}

const EXCLUDED: [u32; 0] = [];

fn bench(c: &mut Criterion) {
    let h = headers();
    let mut ph = h.clone();
    ph.insert("content-type", "application/json".parse().unwrap());
    let body = json_2k();
    assert!(body.len() > 1900 && body.len() < 2300, "{}", body.len());
    // What `benches/policy-load.sh waf` sends: wrk's GET / with a Host and
    // a browser User-Agent.
    let mut wrk = HeaderMap::new();
    wrk.insert("host", "127.0.0.1:8080".parse().unwrap());
    wrk.insert(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
            .parse()
            .unwrap(),
    );
    let mut g = c.benchmark_group("waf");
    // Each request twice over: as a returning client sends it (values seen
    // before are remembered clean) and at first sight (nothing remembered).
    for (suffix, e) in [
        ("", engine()),
        ("_first_sight", engine().without_clean_cache()),
    ] {
        g.bench_function(format!("load_get{suffix}"), |b| {
            b.iter(|| {
                let v = RequestView::new("GET", "/", b"/", &wrk, None);
                e.run(&v, &EXCLUDED)
            })
        });
        // A new page number every time: the query is never all remembered.
        let mut page = 0u64;
        g.bench_function(format!("clean_get{suffix}"), |b| {
            b.iter(|| {
                page += 1;
                let uri = format!("/api/v1/orders?page={page}&sort=-created_at&q=blue%20shoes");
                let v = RequestView::new("GET", "/api/v1/orders", uri.as_bytes(), &h, None);
                e.run(&v, &EXCLUDED)
            })
        });
        let (mut n, mut seed) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
        let words = [
            "blue", "shoes", "red", "dress", "running", "jacket", "leather", "boots",
        ];
        g.bench_function(format!("varied_get{suffix}"), |b| {
            b.iter(|| {
                n += 1;
                // xorshift: a new id every time, words from a short list.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let q = format!(
                    "{}+{}",
                    words[(seed % 8) as usize],
                    words[(seed >> 8) as usize % 8]
                );
                let uri = format!("/?page={n}&q={q}&sort=-created_at&id={:016x}", seed);
                let v = RequestView::new("GET", "/", uri.as_bytes(), &wrk, None);
                e.run(&v, &EXCLUDED)
            })
        });
        g.bench_function(format!("clean_json_post_2k{suffix}"), |b| {
            b.iter(|| {
                let mut v =
                    RequestView::new("POST", "/api/v1/orders", b"/api/v1/orders", &ph, None);
                v.set_body(Some(b"application/json"), &body);
                e.run(&v, &EXCLUDED)
            })
        });
        g.bench_function(format!("attack_get{suffix}"), |b| {
            b.iter(|| {
                let v = RequestView::new(
                    "GET",
                    "/api/v1/orders",
                    b"/api/v1/orders?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
                    &h,
                    None,
                );
                let hits = e.run(&v, &[]);
                assert!(!hits.is_empty());
                hits
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
