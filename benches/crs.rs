//! OWASP Core Rule Set inspection cost per request (criterion), with
//! Debian's modsecurity-crs (CRS 3.3.4) at paranoia level 1 and the
//! gateway's API defaults:
//!
//!     cargo bench --bench crs            # CRS_DIR=/path/to/crs for another CRS
//!
//! * `clean_get`: a GET with 5 query parameters (one new every time) and
//!   six ordinary headers;
//! * `clean_json_post_2k`: a 2 KB JSON body (parsed into ARGS);
//! * `attack_get`: a SQL injection in the query, blocked by 942100 and the
//!   blocking evaluation.
//!
//! Each figure includes building the request view (query, cookies, body
//! parsing) and running every phase 1 and 2 rule, with the allocator the
//! `frontdesk` binary uses (mimalloc).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use frontdesk::waf::seclang::{Crs, CrsOptions};
use frontdesk::waf::RequestView;
use http::HeaderMap;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn crs() -> Option<Crs> {
    let dir = std::env::var("CRS_DIR").unwrap_or_else(|_| "/usr/share/modsecurity-crs".into());
    if !PathBuf::from(&dir).join("rules").is_dir() {
        eprintln!("no Core Rule Set at {dir} (apt-get install modsecurity-crs, or set CRS_DIR)");
        return None;
    }
    let opts = CrsOptions {
        dir: dir.into(),
        setup: None,
        paranoia: 1,
        detection_paranoia: 1,
        anomaly_threshold: 5,
        exclude: Vec::new(),
    };
    Some(Crs::load(&opts).unwrap_or_else(|e| panic!("{}", e.join("\n"))))
}

fn headers(content_type: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "ExampleShop/5.12.0 (com.example.shop; iOS 17.4.1) Alamofire/5.9.0",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("x-request-id", "7f1c2a9e-5b7d-4c1e-9a51-0d7c3b2f8e44"),
    ] {
        h.insert(k, v.parse().unwrap());
    }
    if let Some(ct) = content_type {
        h.insert("content-type", ct.parse().unwrap());
    }
    h
}

fn order_json_2k() -> Vec<u8> {
    let lines: Vec<String> = (0..16)
        .map(|i| {
            format!(
                r#"{{"sku": "SKU-{i:05}", "title": "Cotton t-shirt, size M", "quantity": {}, "gift_note": "Happy birthday from all of us"}}"#,
                i % 4 + 1
            )
        })
        .collect();
    format!(
        r#"{{"customer": {{"id": "cus_295fdab8", "email": "lea.martin@example.org"}}, "lines": [{}], "currency": "EUR"}}"#,
        lines.join(", ")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let Some(crs) = crs() else { return };
    let get_headers = headers(None);
    let post_headers = headers(Some("application/json"));
    let body = order_json_2k();
    assert!(body.len() > 1900 && body.len() < 2300, "{}", body.len());
    let mut g = c.benchmark_group("crs");
    let mut page = 0u64;
    g.bench_function("clean_get", |b| {
        b.iter(|| {
            page += 1;
            let uri = format!(
                "/api/v1/products?page={page}&per_page=50&sort=-created_at&category=shoes&q=blue%20running%20shoes"
            );
            let v = RequestView::new("GET", "/api/v1/products", uri.as_bytes(), &get_headers, None);
            let out = crs.run(&v, &[]);
            assert!(out.deny.is_none(), "{:?}", out.hits);
            out
        })
    });
    g.bench_function("clean_json_post_2k", |b| {
        b.iter(|| {
            let mut v = RequestView::new(
                "POST",
                "/api/v1/orders",
                b"/api/v1/orders",
                &post_headers,
                None,
            );
            v.set_body(Some(b"application/json"), &body);
            let out = crs.run(&v, &[]);
            assert!(out.deny.is_none(), "{:?}", out.hits);
            out
        })
    });
    g.bench_function("attack_get", |b| {
        b.iter(|| {
            let v = RequestView::new(
                "GET",
                "/api/v1/orders",
                b"/api/v1/orders?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
                &get_headers,
                None,
            );
            let out = crs.run(&v, &[]);
            assert!(out.deny.is_some());
            out
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
