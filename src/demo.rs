//! `frontdesk demo`: three small services (auth, orders, payments) on
//! loopback behind one gateway, the classic "one front door" picture.
//!
//! Each service answers every request with JSON saying who it is and what it
//! received (method, path, query, the forwarding headers the gateway added),
//! so a newcomer can see routing, prefix stripping and header transforms with
//! nothing but curl. `/healthz` answers 200 for the health checks.
//!
//! The auth service also plays identity provider: `GET /auth/token?user=NAME`
//! returns an HS256 token signed with the secret in [`DEMO_SECRET_ENV`]
//! (which `frontdesk demo` sets to a random value when it is not set), the
//! one conf/demo.toml's `[auth.users]` verifies.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

/// The built-in services and the loopback address each listens on. The
/// addresses match the `[upstreams.*]` of conf/demo.toml.
pub const DEMO_SERVICES: &[(&str, &str)] = &[
    ("auth", "127.0.0.1:9101"),
    ("orders", "127.0.0.1:9102"),
    ("payments", "127.0.0.1:9103"),
];

/// The environment variable holding the demo's JWT secret.
pub const DEMO_SECRET_ENV: &str = "FRONTDESK_DEMO_JWT_SECRET";

/// Sets a random demo secret unless the operator gave one. Call before any
/// thread starts (it changes the process environment).
pub fn ensure_demo_secret() {
    if std::env::var_os(DEMO_SECRET_ENV).is_none() {
        std::env::set_var(DEMO_SECRET_ENV, format!("{:032x}", fastrand::u128(..)));
    }
}

/// A demo token for `user`, valid for an hour.
fn demo_token(user: &str) -> Option<String> {
    let secret = std::env::var(DEMO_SECRET_ENV).ok()?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs()
        + 3600;
    let claims = json!({
        "sub": user, "roles": ["customers"], "email": format!("{user}@example.com"),
        "iss": "frontdesk-demo", "aud": "demo-api", "exp": exp,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).ok()?;
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).ok()
}

pub struct DemoService {
    pub name: &'static str,
}

#[async_trait]
impl ServeHttp for DemoService {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Read (and discard) the body so keep-alive works for POSTs.
        let mut body_len = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_len += chunk.len();
        }
        let req = session.req_header();
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let body = if req.uri.path() == "/healthz" {
            json!({ "status": "ok", "service": self.name })
        } else if self.name == "auth" && req.uri.path() == "/auth/token" {
            let user = req
                .uri
                .query()
                .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "user"))
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "alice".to_string());
            json!({ "token": demo_token(&user), "token_type": "Bearer", "expires_in": 3600 })
        } else {
            json!({
                "service": self.name,
                "method": req.method.as_str(),
                "path": req.uri.path(),
                "query": req.uri.query(),
                "body_bytes": body_len,
                "seen_headers": {
                    "x-forwarded-for": header("x-forwarded-for"),
                    "x-forwarded-proto": header("x-forwarded-proto"),
                    "x-forwarded-host": header("x-forwarded-host"),
                    "x-request-id": header("x-request-id"),
                    "x-gateway": header("x-gateway"),
                    "x-debug": header("x-debug"),
                    "x-consumer": header("x-consumer"),
                    "x-user-email": header("x-user-email"),
                },
            })
        };
        // The token answer stays on one line so that `sed` can pick it out.
        let bytes = if body.get("token").is_some() {
            serde_json::to_vec(&body).unwrap_or_default()
        } else {
            serde_json::to_vec_pretty(&body).unwrap_or_default()
        };
        let mut resp = Response::new(bytes);
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "x-debug",
            http::HeaderValue::from_static("internal detail the gateway strips"),
        );
        headers.insert(
            http::header::SERVER,
            http::HeaderValue::from_static("demo-service"),
        );
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        resp
    }
}

/// What `frontdesk demo` prints once the gateway is up.
pub fn banner(listen: &str, admin: Option<&str>) -> String {
    let base = format!("http://{listen}");
    let mut s = String::new();
    s.push_str("Frontdesk demo: one front door for three services\n\n");
    s.push_str(&format!(
        "  gateway   {base}\n  services  auth 127.0.0.1:9101, orders 127.0.0.1:9102, payments 127.0.0.1:9103\n\n"
    ));
    s.push_str("Try:\n");
    s.push_str(&format!("  curl -s -i {base}/orders/42                   # 401: orders needs a token or an API key\n"));
    s.push_str(&format!(
        "  TOKEN=$(curl -s '{base}/auth/token?user=alice' | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/')\n                                                  # a token from the demo identity provider\n"
    ));
    s.push_str(&format!(
        "  curl -s {base}/orders/42 -H \"Authorization: Bearer $TOKEN\"   # routed to orders as consumer alice\n  curl -s -i {base}/orders/42 -H \"Authorization: Bearer $TOKEN\"   # again: X-Cache-Status: HIT (alice's copy, 10 s)\n"
    ));
    s.push_str(&format!(
        "  curl -s {base}/orders/42 -H 'x-api-key: demo-partner-key'     # or with a partner API key\n"
    ));
    s.push_str(&format!("  curl -s -X POST {base}/pay/charge -H \"Authorization: Bearer $TOKEN\"\n                                                  # routed to payments, /pay stripped -> /charge\n"));
    s.push_str(&format!("  curl -s -i {base}/pay/charge                  # 405: payments only takes POST (see Allow)\n"));
    s.push_str(&format!("  curl -s -i {base}/nowhere                     # 404 with a JSON error and a request id\n"));
    s.push_str(&format!(
        "  curl -s -i -X OPTIONS {base}/orders/1 -H 'Origin: https://app.example.com' -H 'Access-Control-Request-Method: GET'\n                                                  # CORS preflight answered by the gateway\n"
    ));
    if let Some(admin) = admin {
        s.push_str(&format!(
            "  curl -s http://{admin}/status                 # routes, targets and their health\n"
        ));
        s.push_str(&format!(
            "  curl -s http://{admin}/metrics | grep frontdesk_\n"
        ));
    }
    s.push_str(
        "\nThe access log (one JSON line per request) follows below. Ctrl-C stops everything.\n",
    );
    s
}
