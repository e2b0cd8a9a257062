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
//! * `POST /cache/purge`: `{"route": "catalog", "path": "/catalog/items/7"}`
//!   drops every stored copy of that path (every identity, query string and
//!   `Vary` variant); `{"route": "catalog"}` drops the whole route. Answers
//!   `{"purged": N, ...}`.
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

/// The largest purge request body read.
const MAX_PURGE_BODY: usize = 64 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    route: String,
    path: Option<String>,
}

fn bad_request(message: String) -> Response<Vec<u8>> {
    json_reply(
        StatusCode::BAD_REQUEST,
        json!({ "error": message, "status": 400 }),
    )
}

impl AdminApp {
    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_PURGE_BODY {
                        return json_reply(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            json!({ "error": "purge request bodies are at most 64KiB", "status": 413 }),
                        );
                    }
                }
                Ok(None) => break,
                Err(e) => return bad_request(format!("could not read the request body: {e}")),
            }
        }
        let req: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return bad_request(format!(
                    "expected JSON like {{\"route\": \"catalog\", \"path\": \"/catalog/items/7\"}}: {e}"
                ))
            }
        };
        let gw = self.handle.load();
        let Some(route) = gw.routes.iter().find(|r| r.name == req.route) else {
            let names: Vec<&str> = gw.routes.iter().map(|r| r.name.as_str()).collect();
            return json_reply(
                StatusCode::NOT_FOUND,
                json!({
                    "error": format!("no route named {:?} (routes: {})", req.route, names.join(", ")),
                    "status": 404
                }),
            );
        };
        if route.cache.is_none() {
            return bad_request(format!(
                "route {:?} has no cache (set cache = \"NAME\" on it)",
                req.route
            ));
        }
        let purged = match &req.path {
            Some(p) => match crate::router::normalize_path(p) {
                Ok(normal) => {
                    // The path without its query: every query string of it goes.
                    let path = normal.split('?').next().unwrap_or(&normal);
                    crate::cache::purge_path(&route.name, path)
                }
                Err(e) => return bad_request(format!("path {p:?}: {e}")),
            },
            None => crate::cache::purge_route(&route.name),
        };
        log::info!(
            "cache purge: route {:?} path {:?}: {purged} entries dropped",
            req.route,
            req.path
        );
        json_reply(
            StatusCode::OK,
            json!({ "purged": purged, "route": req.route, "path": req.path }),
        )
    }

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
            .map(|r| {
                json!({
                    "name": r.name,
                    "upstream": r.pool.name,
                    "cache": r.cache.as_ref().map(|c| c.policy.name.as_str()),
                })
            })
            .collect();
        let cache = crate::cache::stats().map(|s| {
            json!({ "bytes": s.bytes, "items": s.items, "evictions": s.evictions, "budget_bytes": s.budget })
        });
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
                "cache": cache,
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
        if req.method == http::Method::POST && req.uri.path() == "/cache/purge" {
            return self.purge(session).await;
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "the admin endpoints answer GET (and POST /reload, POST /cache/purge)", "status": 405 }),
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
