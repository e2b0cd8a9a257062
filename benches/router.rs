//! Route lookup with 1,000 routes: exact, prefix, regex and host-specific,
//! as a large API's table might look.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use frontdesk::router::{normalize_path, PathMatch, RouteSpec, Router};

fn thousand_routes() -> Vec<RouteSpec> {
    let mut specs = Vec::new();
    for i in 0..400 {
        specs.push(RouteSpec {
            hosts: vec![],
            path: PathMatch::Prefix(format!("/svc{i}/v1")),
            methods: None,
        });
    }
    for i in 0..400 {
        specs.push(RouteSpec {
            hosts: vec![],
            path: PathMatch::Exact(format!("/svc{i}/v1/items/list")),
            methods: Some(vec!["GET".into()]),
        });
    }
    for i in 0..150 {
        specs.push(RouteSpec {
            hosts: vec![format!("tenant{i}.example.com")],
            path: PathMatch::Prefix("/".into()),
            methods: None,
        });
    }
    for i in 0..50 {
        specs.push(RouteSpec {
            hosts: vec![],
            path: PathMatch::Regex(format!("^/legacy{i}/[0-9]+/detail$")),
            methods: None,
        });
    }
    specs
}

fn bench_router(c: &mut Criterion) {
    let router = Router::new(&thousand_routes()).expect("routes build");
    let mut g = c.benchmark_group("route_lookup_1000_routes");
    g.bench_function("exact", |b| {
        b.iter(|| {
            router.find(
                black_box("api.example.com"),
                black_box("/svc321/v1/items/list"),
                "GET",
            )
        })
    });
    g.bench_function("prefix_deep_path", |b| {
        b.iter(|| {
            router.find(
                black_box("api.example.com"),
                black_box("/svc321/v1/orders/42/lines/7"),
                "POST",
            )
        })
    });
    g.bench_function("host", |b| {
        b.iter(|| {
            router.find(
                black_box("tenant77.example.com"),
                black_box("/anything/here"),
                "GET",
            )
        })
    });
    g.bench_function("regex", |b| {
        b.iter(|| {
            router.find(
                black_box("api.example.com"),
                black_box("/legacy42/1234/detail"),
                "GET",
            )
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            router.find(
                black_box("api.example.com"),
                black_box("/nothing/matches/this"),
                "GET",
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("normalize_path");
    g.bench_function("clean", |b| {
        b.iter(|| normalize_path(black_box("/svc321/v1/orders/42")))
    });
    g.bench_function("dirty", |b| {
        b.iter(|| normalize_path(black_box("/svc321//v1/./orders/%34%32/../42")))
    });
    g.finish();
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
