//! Routing, path rewriting, header transforms, CORS, request limits and the
//! JSON errors, through the real binary.

mod common;

use common::{client, get_json, upstream, Backend, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_and_strip_prefix() {
    let exact = Backend::start("exact").await;
    let prefix = Backend::start("prefix").await;
    let regex = Backend::start("regex").await;
    let host = Backend::start("host").await;
    let body = format!(
        "{}{}{}{}
[[routes]]
name = \"by-regex\"
path_regex = \"^/v[0-9]+/items$\"
upstream = \"regex\"

[[routes]]
name = \"v1\"
path_prefix = \"/v1\"
upstream = \"prefix\"

[[routes]]
name = \"v1-items-exact\"
path = \"/v1/items\"
upstream = \"exact\"

[[routes]]
name = \"pay\"
path_prefix = \"/pay\"
strip_prefix = true
upstream = \"exact\"

[[routes]]
name = \"api-host\"
host = \"api.example.com\"
path_prefix = \"/\"
upstream = \"host\"

[[routes]]
name = \"wild-host\"
host = \"*.example.org\"
path_prefix = \"/v1\"
upstream = \"regex\"
",
        upstream("exact", &[&exact], ""),
        upstream("prefix", &[&prefix], ""),
        upstream("regex", &[&regex], ""),
        upstream("host", &[&host], ""),
    );
    let gw = Gateway::start("", &body).await;

    let cases = [
        ("/v1/items", "exact", "/v1/items"),
        ("/v1/items?page=2", "exact", "/v1/items"),
        ("/v1/items/7", "prefix", "/v1/items/7"),
        ("/v2/items", "regex", "/v2/items"),
        ("/pay/charge", "exact", "/charge"),
        ("/pay", "exact", "/"),
        // Normalized before matching: dot segments, double slashes, escapes.
        ("/v2/x/../items", "regex", "/v2/items"),
        ("//v1//items", "exact", "/v1/items"),
        ("/%76%31/items", "exact", "/v1/items"),
    ];
    for (path, service, seen) in cases {
        let (status, json) = get_json(&gw.url(path)).await;
        assert_eq!(status, 200, "{path}: {json}");
        assert_eq!(json["service"], service, "{path}: {json}");
        assert_eq!(json["path"], seen, "{path}: {json}");
    }
    // The query string is forwarded untouched.
    let (_, json) = get_json(&gw.url("/pay/charge?amount=5&currency=EUR")).await;
    assert_eq!(json["query"], "amount=5&currency=EUR");

    // A host match beats every any-host route, even an exact path.
    let resp = client()
        .get(gw.url("/v1/items"))
        .header("host", "API.example.com:8080")
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["service"], "host");
    let resp = client()
        .get(gw.url("/v1/x"))
        .header("host", "eu.example.org")
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["service"], "regex", "wildcard host route");
    // /payx is not under the /pay prefix.
    let (status, _) = get_json(&gw.url("/payx")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_method_not_allowed_are_json() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}
[[routes]]
name = \"payments\"
path_prefix = \"/pay\"
methods = [\"POST\"]
upstream = \"b\"

[[routes]]
name = \"read\"
path = \"/orders\"
methods = [\"GET\"]
upstream = \"b\"
",
        upstream("b", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    let resp = client()
        .get(gw.url("/nothing/here"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["status"], 404);
    assert_eq!(json["request_id"], "trace-abc-123");
    assert!(
        json["error"].as_str().unwrap().contains("/nothing/here"),
        "{json}"
    );

    let resp = client().get(gw.url("/pay/charge")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["status"], 405);
    assert!(json["request_id"].as_str().unwrap().len() >= 16);

    let resp = client().delete(gw.url("/orders")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(
        client()
            .post(gw.url("/pay/charge"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .head(gw.url("/orders"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(b.hits(), 2, "rejected requests never reach the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_transforms_and_forwarding_headers() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}
[[routes]]
name = \"r\"
path_prefix = \"/\"
upstream = \"b\"
transform = [\"clean\", \"extra\"]

[transforms.clean]
request.remove_headers = [\"x-debug\"]
request.set_headers = {{ \"x-gateway\" = \"frontdesk\" }}
response.remove_headers = [\"x-debug\", \"server\"]
response.set_headers = {{ \"strict-transport-security\" = \"max-age=63072000\" }}

[transforms.extra]
request.add_headers = {{ \"x-tag\" = \"second\" }}
",
        upstream("b", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    let resp = client()
        .get(gw.url("/x"))
        .header("x-debug", "please")
        .header("x-gateway", "client-lie")
        .header("x-tag", "first")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "bad id with spaces")
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(h.get("x-debug").is_none(), "response x-debug stripped");
    assert!(h.get("server").is_none(), "response server stripped");
    assert_eq!(h["strict-transport-security"], "max-age=63072000");
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(
        id, "bad id with spaces",
        "an invalid request id is replaced"
    );
    let json: serde_json::Value = resp.json().await.unwrap();
    let seen = &json["headers"];
    assert!(
        seen.get("x-debug").is_none(),
        "request x-debug stripped: {seen}"
    );
    assert_eq!(seen["x-gateway"], "frontdesk");
    assert_eq!(
        seen["x-tag"], "first, second",
        "add keeps the client's value"
    );
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(
        seen["x-request-id"],
        id.as_str(),
        "backend and client see one id"
    );

    // A valid client request id is kept end to end.
    let resp = client()
        .get(gw.url("/y"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["headers"]["x-request-id"], "abc-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_by_the_gateway() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}
[[routes]]
name = \"pay\"
path_prefix = \"/pay\"
methods = [\"POST\"]
upstream = \"b\"
cors = \"web\"

[[routes]]
name = \"plain\"
path_prefix = \"/plain\"
upstream = \"b\"

[cors.web]
allow_origins = [\"https://app.example.com\"]
allow_methods = [\"GET\", \"POST\"]
allow_headers = [\"authorization\", \"content-type\"]
max_age = \"10m\"
",
        upstream("b", &[&b], "")
    );
    let gw = Gateway::start("", &body).await;
    let c = client();
    let resp = c
        .request(reqwest::Method::OPTIONS, gw.url("/pay/charge"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "Content-Type, Authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["vary"], "Origin");

    // A preflight from an origin that is not allowed: refused, no CORS headers.
    let resp = c
        .request(reqwest::Method::OPTIONS, gw.url("/pay/charge"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(b.hits(), 0, "preflights never reach the backend");

    // Actual requests: allowed origin gets ACAO + Vary, others get nothing.
    let resp = c
        .post(gw.url("/pay/charge"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(resp.headers()["vary"], "Origin");
    let resp = c
        .post(gw.url("/pay/charge"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(b.hits(), 2);

    // A route without CORS passes OPTIONS through like any request.
    let resp = c
        .request(reqwest::Method::OPTIONS, gw.url("/plain"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(b.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_header_limits() {
    let b = Backend::start("b").await;
    let body = format!(
        "{}
[[routes]]
name = \"r\"
upstream = \"b\"
",
        upstream("b", &[&b], "")
    );
    let gw = Gateway::start(
        "max_request_body = \"1KiB\"\nmax_header_size = \"4KiB\"",
        &body,
    )
    .await;
    let c = client();
    let ok = c
        .post(gw.url("/up"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let resp = c
        .post(gw.url("/up"))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("max_request_body"),
        "{json}"
    );

    // A chunked body (no Content-Length) is counted as it streams.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'z'; 512])).collect();
    let stream = futures::stream::iter(chunks);
    let resp = c
        .post(gw.url("/up"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 413),
        // The gateway may close while the client is still sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    let resp = c
        .get(gw.url("/big-headers"))
        .header("x-big", "v".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["status"], 431);
    let resp = c.get(gw.url("/bad%zzpath")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
}
