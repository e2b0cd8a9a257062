//! The whole request-filter decision with only routing on: request id,
//! header-size check, path normalization, host, route match (1,000 routes),
//! path rewrite — what `request_filter` does before a request is forwarded;
//! and the cost of reloading a 1,000-route config.

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use frontdesk::config::parse_str;
use frontdesk::gateway::compile;
use frontdesk::proxy::{admit, RequestCtx};
use pingora::http::RequestHeader;

fn config() -> String {
    let mut s = String::from("[upstreams.pool]\ntargets = [\"127.0.0.1:9\"]\n\n");
    for i in 0..500 {
        s.push_str(&format!(
            "[[routes]]\nname = \"p{i}\"\npath_prefix = \"/svc{i}\"\nstrip_prefix = {}\nupstream = \"pool\"\n\n",
            i % 2 == 0
        ));
        s.push_str(&format!(
            "[[routes]]\nname = \"e{i}\"\npath = \"/svc{i}/v1/items\"\nmethods = [\"GET\"]\nupstream = \"pool\"\n\n"
        ));
    }
    s
}

fn request(path: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
    req.insert_header("host", "api.example.com").expect("host");
    req.insert_header("user-agent", "bench/1.0").expect("ua");
    req.insert_header("accept", "application/json")
        .expect("accept");
    req
}

fn bench_admit(c: &mut Criterion) {
    let loaded = parse_str(&config(), Path::new("bench.toml"), Path::new(".")).expect("parse");
    let gw = compile(&loaded).expect("compile").gateway;
    let mut g = c.benchmark_group("request_filter_routing_only");
    for (name, path) in [
        ("exact", "/svc321/v1/items"),
        ("prefix_kept", "/svc321/v2/orders/42"),
        ("prefix_stripped", "/svc320/v2/orders/42?page=2"),
        ("not_found", "/nothing/here"),
    ] {
        let req = request(path);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut ctx = RequestCtx::new();
                let reply = admit(&gw, black_box(&req), &mut ctx);
                black_box((reply.is_some(), ctx.route().is_some()))
            })
        });
    }
    g.finish();
}

/// What a reload costs for a 1,000-route file: parse with positions, then
/// compile beside the running snapshot (the path `frontdesk reload` takes,
/// minus the file read).
fn bench_reload(c: &mut Criterion) {
    let text = config();
    let loaded = parse_str(&text, Path::new("bench.toml"), Path::new(".")).expect("parse");
    let running = compile(&loaded).expect("compile").gateway;
    c.bench_function("reload_1000_routes", |b| {
        b.iter(|| {
            let loaded = parse_str(black_box(&text), Path::new("bench.toml"), Path::new("."))
                .expect("parse");
            let next = frontdesk::gateway::compile_with(&loaded, Some(&running)).expect("compile");
            black_box(next.gateway.routes.len())
        })
    });
}

criterion_group!(benches, bench_admit, bench_reload);
criterion_main!(benches);
