//! The admin listener: what operators and orchestrators ask the gateway.
//!
//! * `GET /healthz`: the process is alive (always 200).
//! * `GET /readyz`: a config is loaded and every pool has a healthy target
//!   (200), or which pools have none (503).
//! * `GET /metrics`: Prometheus text format.
//! * `GET /status`: JSON with the version, the config hash and load time,
//!   the last reload's outcome, the routes and every target's health.
//! * `POST /reload`: re-read and swap the config (as SIGHUP does); 200 with
//!   the new config hash, or 400 with every problem of the file (nothing
//!   changes then).
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
    async fn reload(&self) -> Response<Vec<u8>> {
        let handle = self.handle.clone();
        match tokio::task::spawn_blocking(move || handle.reload()).await {
            Ok(Ok(gw)) => json_reply(
                StatusCode::OK,
                json!({ "status": "reloaded", "hash": gw.config_hash, "routes": gw.routes.len() }),
            ),
            Ok(Err(e)) => json_reply(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": "the config file has problems; the previous config stays in use",
                    "status": 400,
                    "problems": e.to_string().lines().collect::<Vec<_>>(),
                }),
            ),
            Err(e) => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": format!("reload task failed: {e}"), "status": 500 }),
            ),
        }
    }

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
        let reload = self.handle.reload_status();
        json_reply(
            StatusCode::OK,
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "config": {
                    "path": gw.source.display().to_string(),
                    "hash": gw.config_hash,
                    "loaded_at": humantime::format_rfc3339_seconds(gw.loaded_at).to_string(),
                    "reloads_ok": reload.reloads_ok,
                    "reloads_failed": reload.reloads_failed,
                    "last_reload_attempt": reload.last_attempt.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    "last_reload_error": reload.last_error,
                    "listener_change_pending_upgrade": reload.pending_listener_change,
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
        if req.method == http::Method::POST && req.uri.path() == "/reload" {
            return self.reload().await;
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "the admin endpoints answer GET (and POST /reload)", "status": 405 }),
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
