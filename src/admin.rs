//! The admin listener: what operators and orchestrators ask the gateway.
//!
//! * `GET /healthz`: the process is alive (always 200).
//! * `GET /readyz`: a config is loaded and every pool has a healthy target
//!   (200), or which pools have none (503).
//! * `GET /metrics`: Prometheus text format.
//! * `GET /status`: JSON with the version, the config hash and load time,
//!   the routes and every target's health.
//!
//! Bind it to a loopback or management address: it is not authenticated.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::gateway::GatewayHandle;
use crate::observe;

pub struct AdminApp {
    pub handle: Arc<GatewayHandle>,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", value.to_string().into_bytes())
}

impl AdminApp {
    fn readyz(&self) -> Response<Vec<u8>> {
        let gw = self.handle.load();
        let down: Vec<&str> = gw
            .pools
            .values()
            .filter(|p| !p.has_healthy_target())
            .map(|p| p.name.as_str())
            .collect();
        if down.is_empty() {
            json_reply(StatusCode::OK, json!({ "status": "ready" }))
        } else {
            json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "status": "not ready", "upstreams_without_healthy_target": down }),
            )
        }
    }

    fn status(&self) -> Response<Vec<u8>> {
        let gw = self.handle.load();
        let upstreams: serde_json::Map<String, serde_json::Value> = gw
            .pools
            .values()
            .map(|p| {
                let targets: Vec<_> = p
                    .targets
                    .iter()
                    .map(|t| {
                        json!({
                            "target": t.configured,
                            "address": t.label,
                            "healthy": p.is_healthy(t),
                        })
                    })
                    .collect();
                (p.name.clone(), json!({ "targets": targets }))
            })
            .collect();
        let routes: Vec<_> = gw
            .routes
            .iter()
            .map(|r| json!({ "name": r.name, "upstream": r.pool.name }))
            .collect();
        json_reply(
            StatusCode::OK,
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "config": {
                    "path": gw.source.display().to_string(),
                    "hash": gw.config_hash,
                    "loaded_at": humantime::format_rfc3339_seconds(gw.loaded_at).to_string(),
                },
                "routes": routes,
                "upstreams": upstreams,
            }),
        )
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "the admin endpoints answer GET", "status": 405 }),
            );
        }
        match req.uri.path() {
            "/healthz" => json_reply(StatusCode::OK, json!({ "status": "ok" })),
            "/readyz" => self.readyz(),
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                observe::render_metrics().into_bytes(),
            ),
            "/status" => self.status(),
            other => json_reply(
                StatusCode::NOT_FOUND,
                json!({
                    "error": format!("no admin endpoint {other}; try /healthz, /readyz, /metrics, /status"),
                    "status": 404
                }),
            ),
        }
    }
}
