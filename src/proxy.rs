//! The Pingora `ProxyHttp` implementation: the one room that holds a
//! `Session`. It walks a request through the policy rooms in the order the
//! design fixes and turns their verdicts into responses:
//!
//! * `request_filter`: snapshot, request id, header-size and path checks,
//!   route match (404/405), CORS preflight (answered here, never forwarded),
//!   body-size check (413), path rewrite decided, then authentication
//!   (401/403) for routes with `auth`, then the route's rate limits (429).
//!   The server-wide flood guard runs first of all, before routing.
//! * `upstream_peer` / `fail_to_connect`: a healthy target from the route's
//!   pool; connect failures retry another target up to `retries`.
//! * `upstream_request_filter`: rewritten path, client copies of identity
//!   headers removed, header transforms, the consumer's identity headers,
//!   X-Forwarded-*, X-Request-Id.
//! * `response_filter`: header transforms, CORS headers, X-Request-Id.
//! * `fail_to_proxy`: every error becomes a JSON body with the right status
//!   (502 upstream failure, 503 no healthy target, 504 timeout).
//! * `logging`: metrics and the access log line, exactly once per request.
//!
//! Everything a later step needs is decided once and kept in [`RequestCtx`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use pingora::cache::key::HashBinary;
use pingora::cache::storage::HitHandler;
use pingora::cache::{CacheKey, CacheMeta, CacheOptionOverrides, ForcedFreshness};
use pingora::cache::{NoCacheReason, RespCacheable};

use crate::auth::{AuthVerdict, ClientCertIdentity, Consumer, Credentials};
use crate::cache::{self, KeyParts};
use crate::gateway::{Gateway, GatewayHandle, Route};
use crate::observe::{self, AccessLogEntry, METRICS};
use crate::ratelimit::{self, Admission, LimitInput, Refusal};
use crate::router::{normalize_host, normalize_path, RouteMatch};
use crate::transform::{CorsVerdict, HeaderSink, PreflightVerdict};
use crate::upstream::HashOn;
use crate::waf::{AuditEntry, BodyOverflow, IpVerdict, Mode as WafMode, RequestView, Waf};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

// The names of headers the gateway adds, in the case they are sent with.
// Pingora keeps a header's wire case next to its name; given a `&'static
// str` it stores it without copying, where a `HeaderName` would be
// title-cased into a fresh buffer on every insert.
const X_REQUEST_ID_WIRE: &str = "X-Request-Id";
const X_FORWARDED_FOR_WIRE: &str = "X-Forwarded-For";
const X_FORWARDED_PROTO_WIRE: &str = "X-Forwarded-Proto";
const X_FORWARDED_HOST_WIRE: &str = "X-Forwarded-Host";
const X_CACHE_STATUS_WIRE: &str = "X-Cache-Status";

/// Requests being served right now (contexts alive), so that a graceful
/// shutdown can end as soon as the last one is done.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many requests are being served right now.
pub fn requests_in_flight() -> usize {
    IN_FLIGHT.load(std::sync::atomic::Ordering::Acquire)
}

/// The gateway's proxy service.
pub struct Frontdesk {
    pub handle: Arc<GatewayHandle>,
}

/// What earlier steps decided about one request.
pub struct RequestCtx {
    start: Instant,
    gateway: Option<Arc<Gateway>>,
    route: Option<Arc<Route>>,
    /// Who is calling, on routes with `auth`.
    consumer: Option<Arc<Consumer>>,
    /// What the route's rate limits took (in-flight slots are released when
    /// the context is dropped) and the quota left, for the response headers.
    admission: Option<Admission>,
    /// The socket peer (the client, or the proxy in front of us).
    peer_ip: Option<IpAddr>,
    request_id: String,
    /// The same id as a header value, built once and shared (a refcount
    /// bump) by the upstream request and the response.
    request_id_header: Option<HeaderValue>,
    /// Normalized host, for logs and X-Forwarded-Host.
    host: String,
    /// The path the upstream gets, when it differs from the client's.
    upstream_uri: Option<Uri>,
    client_ip: Option<IpAddr>,
    tls: bool,
    /// Targets tried so far (the last one is the current attempt).
    tried: Vec<SocketAddr>,
    /// Why the request failed, in words for the JSON body.
    failure: Option<(u16, String)>,
    cors_headers: Vec<(HeaderName, HeaderValue)>,
    vary_origin: bool,
    /// Request body bytes seen so far (for chunked bodies and the 413 cap).
    body_bytes: u64,
    /// The normalized path, kept when a later step needs it: the cache (key
    /// and purge tag) and the WAF (its `path` target).
    norm_path: Option<String>,
    /// Where the response came from (`X-Cache-Status`), on routes with a cache.
    cache_status: Option<&'static str>,
    /// The client is on `[waf] allow_ips`: no WAF for this request.
    waf_allowed: bool,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        RequestCtx {
            start: Instant::now(),
            gateway: None,
            route: None,
            consumer: None,
            admission: None,
            peer_ip: None,
            request_id: String::new(),
            request_id_header: None,
            host: String::new(),
            upstream_uri: None,
            client_ip: None,
            tls: false,
            tried: Vec::new(),
            failure: None,
            cors_headers: Vec::new(),
            vary_origin: false,
            body_bytes: 0,
            norm_path: None,
            cache_status: None,
            waf_allowed: false,
        }
    }

    /// The route chosen for this request, if any.
    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route.as_ref()
    }

    /// The authenticated consumer, if the route has auth and it passed.
    pub fn consumer(&self) -> Option<&Arc<Consumer>> {
        self.consumer.as_ref()
    }

    fn pool_name(&self) -> &str {
        self.route
            .as_ref()
            .map(|r| r.pool.name.as_str())
            .unwrap_or("-")
    }
}

/// A request id the client sent is kept when it is short and plain.
fn valid_request_id(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return None;
    }
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        .then(|| v.to_str().ok())
        .flatten()
}

fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut id = [0u8; 32];
    for b in id.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Only ASCII hex digits were written.
    String::from_utf8(id.to_vec()).unwrap_or_default()
}

impl RequestCtx {
    /// The request id as a header value (built on first use).
    fn request_id_value(&mut self) -> HeaderValue {
        if let Some(v) = &self.request_id_header {
            return v.clone();
        }
        let v = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(self.request_id.as_bytes()))
            .unwrap_or(HeaderValue::from_static("-"));
        self.request_id_header = Some(v.clone());
        v
    }
}

/// `X-Forwarded-For` for the upstream: what the client's header said, then
/// the peer. Written by hand: `Display` for addresses goes through the
/// formatting machinery, a measurable cost on every request.
fn forwarded_for(prev: Option<&HeaderValue>, peer: IpAddr) -> Option<HeaderValue> {
    let mut out = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
    if let Some(p) = prev {
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b", ");
    }
    match peer {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                let o = *octet;
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
    HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
}

/// Bytes of the request line and headers as they arrived (close enough for a cap).
fn header_block_size(req: &RequestHeader) -> usize {
    let line =
        req.method.as_str().len() + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    req.headers
        .iter()
        .fold(line, |acc, (k, v)| acc + k.as_str().len() + v.len() + 4)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        // Anything else is client-chosen text: one label keeps the metric bounded.
        _ => "OTHER",
    }
}

impl HeaderSink for RequestHeader {
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set(&mut self, name: &HeaderName, value: HeaderValue) {
        let _ = self.insert_header(name.clone(), value);
    }
    fn append(&mut self, name: &HeaderName, value: HeaderValue) {
        let _ = self.append_header(name.clone(), value);
    }
}

impl HeaderSink for ResponseHeader {
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set(&mut self, name: &HeaderName, value: HeaderValue) {
        let _ = self.insert_header(name.clone(), value);
    }
    fn append(&mut self, name: &HeaderName, value: HeaderValue) {
        let _ = self.append_header(name.clone(), value);
    }
}

/// Writes a JSON error (or an empty 204) straight to the client.
async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    message: Option<&str>,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let body = message.map(|m| {
        serde_json::json!({ "error": m, "status": status, "request_id": ctx.request_id })
            .to_string()
    });
    if let Some(m) = message {
        ctx.failure = Some((status, m.to_string()));
    }
    let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
    if let Some(b) = &body {
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(header::CONTENT_LENGTH, b.len())?;
    } else if status != 204 && status != 304 {
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
    }
    resp.insert_header(X_REQUEST_ID_WIRE, ctx.request_id_value())?;
    if ctx.route.as_ref().is_some_and(|r| r.cache.is_some()) {
        resp.insert_header(X_CACHE_STATUS_WIRE, "BYPASS")?;
        ctx.cache_status = Some("BYPASS");
    }
    for (k, v) in extra.iter().chain(ctx.cors_headers.iter()) {
        resp.append_header(k.clone(), v.clone())?;
    }
    if ctx.vary_origin {
        resp.append_header(header::VARY, "Origin")?;
    }
    // An unread request body would be drained before the connection is
    // reused; closing is cheaper and safe.
    if !session.as_downstream_mut().is_body_empty() {
        session.set_keepalive(None);
    }
    match body {
        Some(b) => {
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(Bytes::from(b)), true)
                .await?;
        }
        None => session.write_response_header(Box::new(resp), true).await?,
    }
    Ok(())
}

/// Status and message for an error that ended a request.
fn classify(e: &Error, ctx: &RequestCtx) -> (u16, String) {
    let pool = ctx.pool_name();
    let target = ctx
        .tried
        .last()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into());
    let timeout_of = |which: &str, d: Option<Duration>| {
        let d = d
            .map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_default();
        format!("upstream '{pool}' target {target} did not answer within {which} {d}")
    };
    let settings = ctx.route.as_ref().map(|r| &r.pool.settings);
    match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(code)) => {
            let msg = match &ctx.failure {
                Some((c, m)) if c == code => m.clone(),
                _ => http::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error")
                    .to_ascii_lowercase(),
            };
            (*code, msg)
        }
        (ErrorSource::Upstream, ErrorType::ConnectTimedout) => (
            504,
            timeout_of("connect_timeout", settings.map(|s| s.connect_timeout)),
        ),
        (ErrorSource::Upstream, ErrorType::ReadTimedout) => (
            504,
            timeout_of("read_timeout", settings.map(|s| s.read_timeout)),
        ),
        (ErrorSource::Upstream, ErrorType::WriteTimedout) => (
            504,
            timeout_of("write_timeout", settings.map(|s| s.write_timeout)),
        ),
        (ErrorSource::Upstream, et) => (
            502,
            format!("upstream '{pool}' target {target} failed: {}", describe(et)),
        ),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
        ) => (0, "client closed the connection".into()),
        (ErrorSource::Downstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            (408, "the client was too slow sending the request".into())
        }
        (ErrorSource::Downstream, _) => {
            (400, format!("malformed request: {}", describe(e.etype())))
        }
        _ => (500, format!("internal error: {}", describe(e.etype()))),
    }
}

/// The `kind` label of `frontdesk_upstream_errors_total`.
fn upstream_error_kind(et: &ErrorType) -> &'static str {
    match et {
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::SocketError
        | ErrorType::BindError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::HandshakeError
        | ErrorType::InvalidCert
        | ErrorType::TLSWantX509Lookup => "connect",
        ErrorType::ReadTimedout => "read_timeout",
        ErrorType::WriteTimedout => "write_timeout",
        ErrorType::ConnectionClosed => "closed",
        ErrorType::ReadError | ErrorType::WriteError => "reset",
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::H2Error
        | ErrorType::InvalidH2
        | ErrorType::H2Downgrade => "invalid_response",
        _ => "other",
    }
}

fn describe(et: &ErrorType) -> &'static str {
    match et {
        ErrorType::ConnectRefused => "connection refused",
        ErrorType::ConnectNoRoute => "no route to host",
        ErrorType::TLSHandshakeFailure | ErrorType::HandshakeError => "TLS handshake failed",
        ErrorType::InvalidCert => "invalid certificate",
        ErrorType::ConnectionClosed => "connection closed before a complete response",
        ErrorType::InvalidHTTPHeader => "invalid HTTP header",
        ErrorType::H1Error | ErrorType::H2Error | ErrorType::InvalidH2 => "HTTP protocol error",
        ErrorType::ReadError => "read error",
        ErrorType::WriteError => "write error",
        other => other.as_str(),
    }
}

/// A response the gateway gives itself instead of forwarding.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The JSON error message; `None` for an empty body (preflight 204).
    pub message: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    fn error(status: u16, message: String) -> Reply {
        Reply {
            status,
            message: Some(message),
            headers: Vec::new(),
        }
    }
}

/// Everything `request_filter` decides, as a plain function of the snapshot
/// and the request header: request id, limits, route, CORS, path rewrite.
/// Fills `ctx`; returns the reply to send when the request goes no further.
/// Kept apart from the hook so it can be tested and benchmarked without a
/// Pingora session.
const SMUGGLING: &str = "the request has both Content-Length and Transfer-Encoding (a request smuggling pattern); send one of them";

/// Pingora drops Content-Length from a request that also has
/// Transfer-Encoding (and goes by the latter, closing the connection after
/// the response), so the header map no longer shows the conflict: look at
/// the header block as the client sent it.
fn te_hid_a_content_length(session: &Session) -> bool {
    let req = session.req_header();
    if !req.headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.split(|b| *b == b':')
            .next()
            .is_some_and(|name| name.trim_ascii().eq_ignore_ascii_case(b"content-length"))
    })
}

/// Request framing that two HTTP parsers could read differently (the
/// gateway and a backend): the request smuggling patterns. RFC 9112 §6.1
/// lets a server either reject a request with both Content-Length and
/// Transfer-Encoding or go by Transfer-Encoding; a gateway rejects it, and
/// anything but exactly one `chunked` coding, and any Content-Length that
/// is not one plain number.
fn framing_problem(req: &RequestHeader) -> Option<String> {
    let mut lengths = req.headers.get_all(header::CONTENT_LENGTH).iter();
    let mut codings = req.headers.get_all(header::TRANSFER_ENCODING).iter();
    let (length, coding) = (lengths.next(), codings.next());
    if length.is_some() && coding.is_some() {
        return Some(SMUGGLING.into());
    }
    if let Some(l) = length {
        if lengths.next().is_some() {
            return Some("the request has more than one Content-Length header".into());
        }
        let l = l.as_bytes();
        if l.is_empty() || !l.iter().all(u8::is_ascii_digit) {
            return Some("Content-Length must be one decimal number".into());
        }
    }
    let coding = coding?;
    if codings.next().is_some()
        || !coding
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return Some(
            "Transfer-Encoding must be exactly \"chunked\" (one header, one coding)".into(),
        );
    }
    (req.version == http::Version::HTTP_10)
        .then(|| "Transfer-Encoding is not allowed in HTTP/1.0".into())
}

pub fn admit(gw: &Gateway, req: &RequestHeader, ctx: &mut RequestCtx) -> Option<Reply> {
    ctx.request_id = match req
        .headers
        .get(&X_REQUEST_ID)
        .and_then(|v| valid_request_id(v).map(|id| (v, id)))
    {
        Some((value, id)) => {
            ctx.request_id_header = Some(value.clone());
            id.to_string()
        }
        None => new_request_id(),
    };

    let uri_len = req.uri.path_and_query().map_or(1, |p| p.as_str().len());
    if uri_len > gw.limits.max_uri_length {
        let msg = format!(
            "the request target ({uri_len} bytes) exceeds server.max_uri_length ({} bytes)",
            gw.limits.max_uri_length
        );
        return Some(Reply::error(414, msg));
    }
    if header_block_size(req) > gw.limits.max_header_size {
        let msg = format!(
            "request headers exceed server.max_header_size ({} bytes)",
            gw.limits.max_header_size
        );
        return Some(Reply::error(431, msg));
    }

    if let Some(problem) = framing_problem(req) {
        return Some(Reply::error(400, problem));
    }

    let path = match normalize_path(req.uri.path()) {
        Ok(p) => p,
        Err(e) => {
            return Some(Reply::error(400, e.to_string()));
        }
    };
    let raw_host = req
        .uri
        .host()
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    ctx.host = normalize_host(raw_host).into_owned();

    // A CORS preflight is routed by the method it asks about, so a route
    // limited to POST still gets its preflight answered.
    let origin = req.headers.get(header::ORIGIN).cloned();
    let preflight_method = (req.method == Method::OPTIONS && origin.is_some())
        .then(|| req.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method.as_str();
    let mut verdict = gw.router.find(
        &ctx.host,
        &path,
        preflight_method.as_deref().unwrap_or(method),
    );
    if preflight_method.is_some() {
        if let RouteMatch::Found { route, .. } = verdict {
            if gw.routes[route].cors.is_none() {
                // No CORS policy: an ordinary OPTIONS request.
                verdict = gw.router.find(&ctx.host, &path, method);
            }
        }
    }
    let (route, prefix_len) = match verdict {
        RouteMatch::Found { route, prefix_len } => (gw.routes[route].clone(), prefix_len),
        RouteMatch::NotFound => {
            let msg = format!("no route matches {method} {}{path}", ctx.host);
            return Some(Reply::error(404, msg));
        }
        RouteMatch::MethodNotAllowed { allow } => {
            let msg = format!("method {method} is not allowed here; allowed: {allow}");
            let allow = HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static(""));
            let mut reply = Reply::error(405, msg);
            reply.headers.push((header::ALLOW, allow));
            return Some(reply);
        }
    };

    if let (Some(cors), Some(origin)) = (&route.cors, &origin) {
        ctx.vary_origin = cors.varies_on_origin();
        if let Some(requested) = &preflight_method {
            let req_headers = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
            let answer = cors.preflight(origin, requested, req_headers);
            ctx.route = Some(route.clone());
            return Some(match answer {
                PreflightVerdict::Allow(headers) => Reply {
                    status: 204,
                    message: None,
                    headers,
                },
                PreflightVerdict::Deny(why) => Reply::error(403, why),
            });
        }
        if let CorsVerdict::Allow(h) = cors.actual(origin) {
            ctx.cors_headers = h;
        }
    } else if let Some(cors) = &route.cors {
        ctx.vary_origin = cors.varies_on_origin();
    }

    let declared_len = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared_len {
        if len > gw.limits.max_request_body {
            let msg = format!(
                "request body of {len} bytes exceeds server.max_request_body ({} bytes)",
                gw.limits.max_request_body
            );
            ctx.route = Some(route);
            return Some(Reply::error(413, msg));
        }
    }

    // The upstream sees the normalized path, minus the prefix if asked.
    let forwarded_path: &str = if route.strip_prefix {
        match &path[prefix_len..] {
            "" => "/",
            rest if rest.starts_with('/') => rest,
            // A prefix of "/" strips nothing.
            _ => &path,
        }
    } else {
        &path
    };
    if forwarded_path != req.uri.path() {
        let pq = match req.uri.query() {
            Some(q) => format!("{forwarded_path}?{q}"),
            None => forwarded_path.to_string(),
        };
        match Uri::try_from(pq) {
            Ok(u) => ctx.upstream_uri = Some(u),
            Err(_) => {
                return Some(Reply::error(
                    400,
                    "the request path cannot be forwarded".into(),
                ));
            }
        }
    }
    let waf_inspects = gw
        .waf
        .as_ref()
        .is_some_and(|w| w.mode_for(&route.waf) != WafMode::Off);
    if route.cache.is_some() || waf_inspects {
        ctx.norm_path = Some(path.into_owned());
    }
    ctx.route = Some(route);
    None
}

/// `[waf]` address lists, before routing.
fn screen_ip(waf: &Waf, session: &Session, ctx: &mut RequestCtx) -> Option<Reply> {
    if waf.mode == WafMode::Off {
        return None;
    }
    match waf.screen_ip(ctx.client_ip) {
        IpVerdict::Inspect => None,
        IpVerdict::Allowed => {
            ctx.waf_allowed = true;
            METRICS
                .waf_requests
                .with_label_values(&["-", "allowed_ip"])
                .inc();
            None
        }
        IpVerdict::Denied => {
            METRICS
                .waf_requests
                .with_label_values(&["-", "denied_ip"])
                .inc();
            if ctx.request_id.is_empty() {
                ctx.request_id = new_request_id();
            }
            let req = session.req_header();
            audit(waf, ctx, req, None, "denied_ip", &[], 0);
            Some(Reply::error(
                403,
                "request blocked: the client address is on the deny list".into(),
            ))
        }
    }
}

/// Reads the request body for inspection (up to `max_body`), keeping it in
/// Pingora's retry buffer so that it is forwarded intact afterwards.
/// `Ok(None)`: no body, or a declared one too large that is passed
/// uninspected. `Err(reply)`: a 413.
async fn read_body_for_waf(
    waf: &Waf,
    session: &mut Session,
) -> Result<Result<Option<Vec<u8>>, Reply>> {
    if session.as_downstream_mut().is_body_empty() {
        return Ok(Ok(None));
    }
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let too_large = || {
        Reply::error(
            413,
            format!(
                "request body exceeds what the WAF inspects ([waf] max_body = {} bytes); send a smaller body, or set body_overflow = \"pass\" or waf = \"off\" on the route",
                waf.max_body
            ),
        )
    };
    if declared.is_some_and(|n| n > waf.max_body) {
        return Ok(match waf.body_overflow {
            BodyOverflow::Block => Err(too_large()),
            // Never read: it streams to the backend as usual.
            BodyOverflow::Pass => Ok(None),
        });
    }
    session.as_downstream_mut().enable_retry_buffering();
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(waf.max_body));
    while let Some(chunk) = session.as_downstream_mut().read_request_body().await? {
        body.extend_from_slice(&chunk);
        // Only a body of undeclared length gets here: once it is over the
        // limit it cannot be forwarded intact (part of it is read), so it
        // is refused whatever body_overflow says.
        if body.len() > waf.max_body {
            return Ok(Err(too_large()));
        }
    }
    if session.as_downstream().retry_buffer_truncated() {
        // Never a truncated body to the backend.
        return Ok(Err(too_large()));
    }
    Ok(Ok(Some(body)))
}

/// `[waf]` signatures on the routed request (and its body).
async fn inspect(waf: &Waf, session: &mut Session, ctx: &mut RequestCtx) -> Result<Option<Reply>> {
    let Some(route) = ctx.route.clone() else {
        return Ok(None);
    };
    let mode = waf.mode_for(&route.waf);
    if mode == WafMode::Off {
        return Ok(None);
    }
    let body = if waf.inspector.reads_body() {
        match read_body_for_waf(waf, session).await? {
            Ok(b) => b,
            Err(reply) => {
                METRICS
                    .waf_requests
                    .with_label_values(&[route.name.as_str(), "body_too_large"])
                    .inc();
                return Ok(Some(reply));
            }
        }
    } else {
        None
    };
    let req = session.req_header();
    let raw_path = req.uri.path();
    let path = ctx.norm_path.as_deref().unwrap_or(raw_path);
    let uri = req
        .uri
        .path_and_query()
        .map_or(raw_path.as_bytes(), |pq| pq.as_str().as_bytes());
    let mut view = RequestView::new(req.method.as_str(), path, uri, &req.headers, ctx.client_ip);
    view.protocol = crate::waf::request::protocol_name(req.version);
    if let Some(b) = &body {
        let ct = req.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
        view.set_body(ct, b);
    }
    let verdict = waf.inspect(&view, &route.waf, mode);
    for h in &verdict.hits {
        METRICS
            .waf_rule_hits
            .with_label_values(&[h.id.to_string().as_str()])
            .inc();
    }
    let word = if verdict.block {
        "blocked"
    } else if verdict.detected {
        "detected"
    } else {
        // Resolved with the route, from the same `mode_for` as above: set
        // for every route that gets here.
        if let Some(c) = &route.waf_passed {
            c.inc();
        }
        return Ok(None);
    };
    METRICS
        .waf_requests
        .with_label_values(&[route.name.as_str(), word])
        .inc();
    audit(
        waf,
        ctx,
        session.req_header(),
        Some(route.name.as_str()),
        word,
        &verdict.hits,
        verdict.score,
    );
    if !verdict.block {
        return Ok(None);
    }
    let ids: Vec<String> = verdict.hits.iter().map(|h| h.id.to_string()).collect();
    Ok(Some(Reply::error(
        verdict.status,
        format!(
            "request blocked by the WAF (rules {}; anomaly score {} >= {})",
            ids.join(", "),
            verdict.score,
            waf.anomaly_threshold
        ),
    )))
}

fn audit(
    waf: &Waf,
    ctx: &RequestCtx,
    req: &RequestHeader,
    route: Option<&str>,
    action: &str,
    hits: &[crate::waf::Hit],
    score: u32,
) {
    if waf.audit_log == observe::AccessLogTarget::Off {
        return;
    }
    let entry = AuditEntry {
        time: observe::now_rfc3339(),
        request_id: &ctx.request_id,
        client: ctx.client_ip,
        method: req.method.as_str(),
        host: &ctx.host,
        path: req.uri.path(),
        route,
        action,
        score,
        threshold: waf.anomaly_threshold,
        rules: crate::waf::audit_rules(hits),
    };
    observe::AUDIT_LOG.write(&waf.audit_log, &entry);
}

/// Runs the route's auth policies; fills `ctx.consumer` or returns the
/// 401/403 reply.
async fn authenticate(session: &Session, ctx: &mut RequestCtx) -> Option<Reply> {
    let route = ctx.route.clone()?;
    let auth = route.auth.as_ref()?;
    let client_cert = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|d| d.extension.get::<ClientCertIdentity>());
    let req = session.req_header();
    let creds = Credentials {
        headers: &req.headers,
        query: req.uri.query(),
        client_cert,
    };
    match auth.check(&creds).await {
        AuthVerdict::Admit(consumer) => {
            ctx.consumer = Some(consumer);
            None
        }
        AuthVerdict::Unauthorized {
            failure,
            challenges,
        } => {
            // A background revalidation whose token expired meanwhile is
            // not a client's failed attempt.
            if !session.as_downstream().is_subrequest() {
                METRICS
                    .auth_failures
                    .with_label_values(&[route.name.as_str(), failure.reason])
                    .inc();
            }
            let mut reply = Reply::error(401, failure.message);
            reply.headers = challenges
                .into_iter()
                .map(|c| (header::WWW_AUTHENTICATE, c))
                .collect();
            Some(reply)
        }
        AuthVerdict::Forbidden { consumer, message } => {
            METRICS
                .auth_failures
                .with_label_values(&[route.name.as_str(), "forbidden_group"])
                .inc();
            ctx.consumer = Some(consumer);
            Some(Reply::error(403, message))
        }
    }
}

/// Runs the route's rate limits; keeps the admission in `ctx` or returns
/// the 429 (503 when a cluster limit's store is down and set to deny).
fn limit(session: &Session, ctx: &mut RequestCtx) -> Option<Reply> {
    let route = ctx.route.clone()?;
    if route.rate_limits.is_empty() {
        return None;
    }
    let input = LimitInput {
        client_ip: ctx.client_ip?,
        consumer: ctx.consumer.as_deref(),
        headers: &session.req_header().headers,
    };
    match ratelimit::check(&route.rate_limits, &input) {
        Ok(admission) => {
            ctx.admission = Some(admission);
            None
        }
        Err(refusal) => Some(refusal_reply(
            &refusal,
            &route.name,
            route.rate_limit_policy.as_ref(),
        )),
    }
}

/// The reply for a refused request, counted in the metrics.
fn refusal_reply(refusal: &Refusal, route: &str, policy_header: Option<&HeaderValue>) -> Reply {
    METRICS
        .ratelimited
        .with_label_values(&[route, refusal.policy()])
        .inc();
    match refusal {
        Refusal::Rate {
            quota,
            retry_after_secs,
        } => {
            let mut reply = Reply::error(
                429,
                format!(
                    "rate limit '{}' exceeded: {} requests per {}s; retry in {retry_after_secs}s",
                    quota.policy, quota.limit, quota.window_secs
                ),
            );
            reply
                .headers
                .push((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
            push_quota_headers(&mut reply.headers, policy_header, std::slice::from_ref(quota));
            reply
        }
        Refusal::InFlight { policy, max } => {
            let mut reply = Reply::error(
                429,
                format!("limit '{policy}': at most {max} requests in flight; retry when one finishes"),
            );
            reply
                .headers
                .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
            reply
        }
        Refusal::StoreDown { policy } => Reply::error(
            503,
            format!(
                "limit '{policy}' cannot be checked: the cluster store (Redis) is unreachable and on_redis_error = \"deny\""
            ),
        ),
    }
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn push_quota_headers(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    policy: Option<&HeaderValue>,
    quotas: &[ratelimit::Quota],
) {
    if let (Some(p), Some(state)) = (policy, ratelimit::state_header(quotas)) {
        headers.push((RATELIMIT_POLICY.clone(), p.clone()));
        headers.push((RATELIMIT.clone(), state));
    }
}

#[async_trait]
impl ProxyHttp for Frontdesk {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let gw = self.handle.snapshot();
        // Pingora sets 60 s (or None while shutting down); apply ours.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(gw.limits.keepalive_timeout_secs));
        }
        // How long the client may pause while sending its body (a slow
        // body is cut off with 408 instead of holding a connection).
        session
            .as_downstream_mut()
            .set_read_timeout(Some(gw.limits.client_timeout));
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx.peer_ip.map(|peer| {
            ratelimit::client_ip(peer, &session.req_header().headers, &gw.trusted_proxies)
        });
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        // A background cache revalidation re-enters every hook with a copy
        // of the request that was already counted and admitted: it is
        // authenticated again (the cache key needs the identity) but not
        // counted against any limit a second time.
        let subrequest = session.as_downstream().is_subrequest();
        // The flood guard comes first: a flood costs one sketch update each.
        let mut verdict = match (&gw.flood_guard, ctx.client_ip) {
            (Some(guard), Some(ip)) if !subrequest => guard.check(ip).err().map(|r| {
                ctx.request_id = new_request_id();
                refusal_reply(&r, "-", guard.policy_header.as_ref())
            }),
            _ => None,
        };
        if verdict.is_none() && !subrequest {
            if let Some(waf) = &gw.waf {
                verdict = screen_ip(waf, session, ctx);
            }
        }
        if verdict.is_none() && !subrequest && te_hid_a_content_length(session) {
            ctx.request_id = new_request_id();
            verdict = Some(Reply::error(400, SMUGGLING.into()));
        }
        if verdict.is_none() {
            verdict = admit(&gw, session.req_header(), ctx);
        }
        ctx.gateway = Some(gw.clone());
        // Signatures before identity: a hostile request never costs a
        // token check, and the route may turn the WAF off or narrow it.
        if verdict.is_none() && !subrequest && !ctx.waf_allowed {
            if let Some(waf) = &gw.waf {
                verdict = inspect(waf, session, ctx).await?;
            }
        }
        if verdict.is_none() {
            verdict = authenticate(session, ctx).await;
        }
        if verdict.is_none() && !subrequest {
            verdict = limit(session, ctx);
        }
        match verdict {
            None => Ok(false),
            Some(reply) => {
                respond(
                    session,
                    ctx,
                    reply.status,
                    reply.message.as_deref(),
                    &reply.headers,
                )
                .await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Ok(());
        };
        ctx.cache_status = Some("BYPASS");
        let req = session.req_header();
        if !rc.policy.caches_method(&req.method) || session.is_upgrade_req() {
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(rc.policy.lock_timeout);
        session.cache.enable(
            cache::store(),
            None,
            Some(cache::predictor()),
            Some(cache::lock()),
            Some(overrides),
        );
        // No `set_max_file_size_bytes`: pingora would abort a chunked
        // response mid-transfer once it passes the cap. The store stops
        // keeping a copy instead, and a declared Content-Length over the
        // cap is refused up front (`RouteCache::decide`).
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Error::e_explain(ErrorType::InternalError, "cache enabled without a policy");
        };
        let req = session.req_header();
        Ok(rc.key(&KeyParts {
            tls: ctx.tls,
            host: &ctx.host,
            path: ctx.norm_path.as_deref().unwrap_or(req.uri.path()),
            query: req.uri.query(),
            consumer: ctx.consumer.as_deref(),
        }))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache::variance(meta, req)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        let honor = ctx
            .route
            .as_ref()
            .and_then(|r| r.cache.as_ref())
            .is_some_and(|rc| rc.policy.honor_client_no_cache);
        if is_fresh && honor && cache::client_wants_revalidation(session.req_header()) {
            return Ok(Some(ForcedFreshness::ForceExpired));
        }
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let req = session.req_header();
        let path = ctx.norm_path.as_deref().unwrap_or(req.uri.path());
        let route_verifies = ctx.route.as_ref().is_some_and(|r| r.auth.is_some());
        let unverified_authorization =
            !route_verifies && req.headers.contains_key(header::AUTHORIZATION);
        Ok(rc.decide(resp, path, unverified_authorization))
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // Stale-while-revalidate: pingora has checked the entry's
            // window (the policy's or the response's own) already.
            None => true,
            // Stale-if-error: only when the backend failed (or no target
            // could be picked: upstream_peer's 502/503), not the client.
            Some(e) => {
                e.esource() == &ErrorSource::Upstream
                    || matches!(e.etype(), ErrorType::HTTPStatus(502..=504))
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let pool = &route.pool;
        // Only consistent hashing looks at the key; skip building it otherwise.
        let key: Vec<u8> = if !pool.uses_hash_key() {
            Vec::new()
        } else {
            match &pool.settings.hash_on {
                HashOn::ClientIp => ctx
                    .client_ip
                    .map(|ip| ip.to_string().into_bytes())
                    .unwrap_or_default(),
                HashOn::Path => session.req_header().uri.path().as_bytes().to_vec(),
                HashOn::Header(name) => session
                    .req_header()
                    .headers
                    .get(name)
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default(),
            }
        };
        match pool.select(&key, &ctx.tried) {
            Some(addr) => {
                ctx.tried.push(addr);
                Ok(Box::new(pool.peer(addr)))
            }
            None if ctx.tried.is_empty() => {
                let msg = format!(
                    "upstream '{}' has no healthy target (all {} failed their health checks)",
                    pool.name,
                    pool.targets.len()
                );
                ctx.failure = Some((503, msg));
                Error::e_explain(ErrorType::HTTPStatus(503), "no healthy target")
            }
            None => {
                // Every healthy target was tried: report the last connect failure.
                let (status, msg) = ctx
                    .failure
                    .clone()
                    .unwrap_or((502, format!("upstream '{}' failed", pool.name)));
                ctx.failure = Some((status, msg));
                Error::e_explain(ErrorType::HTTPStatus(status), "all targets failed")
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.failure = Some(classify(&e, ctx));
        METRICS
            .upstream_errors
            .with_label_values(&[ctx.pool_name(), upstream_error_kind(e.etype())])
            .inc();
        let retries = ctx.route.as_ref().map_or(0, |r| r.pool.settings.retries);
        if ctx.tried.len() <= retries {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = ctx.upstream_uri.clone() {
            upstream.set_uri(uri);
        }
        if let Some(route) = &ctx.route {
            for name in route.identity_headers.iter() {
                upstream.remove_header(name);
            }
            route.request_ops.apply(upstream);
        }
        if let Some(consumer) = &ctx.consumer {
            for (name, value) in &consumer.forward {
                upstream.insert_header(name.clone(), value.clone())?;
            }
        }
        if let Some(ip) = ctx.peer_ip {
            let prev = session.req_header().headers.get(&X_FORWARDED_FOR);
            if let Some(v) = forwarded_for(prev, ip) {
                upstream.insert_header(X_FORWARDED_FOR_WIRE, v)?;
            }
        }
        upstream.insert_header(
            X_FORWARDED_PROTO_WIRE,
            HeaderValue::from_static(if ctx.tls { "https" } else { "http" }),
        )?;
        if !ctx.host.is_empty() {
            upstream.insert_header(X_FORWARDED_HOST_WIRE, ctx.host.as_str())?;
        }
        upstream.insert_header(X_REQUEST_ID_WIRE, ctx.request_id_value())?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(chunk), Some(gw)) = (body.as_ref(), ctx.gateway.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > gw.limits.max_request_body {
                let msg = format!(
                    "request body exceeds server.max_request_body ({} bytes)",
                    gw.limits.max_request_body
                );
                ctx.failure = Some((413, msg));
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
            route.response_ops.apply(resp);
        }
        for (k, v) in &ctx.cors_headers {
            resp.insert_header(k.clone(), v.clone())?;
        }
        if ctx.vary_origin {
            resp.append_header(header::VARY, "Origin")?;
        }
        resp.insert_header(X_REQUEST_ID_WIRE, ctx.request_id_value())?;
        if ctx.cache_status.is_some() {
            let word = cache::status_word(session.cache.phase());
            ctx.cache_status = Some(word);
            resp.insert_header(X_CACHE_STATUS_WIRE, word)?;
        }
        if let (Some(admission), Some(route)) = (&ctx.admission, &ctx.route) {
            if let (Some(policy), Some(state)) = (
                &route.rate_limit_policy,
                ratelimit::state_header(&admission.quotas),
            ) {
                resp.insert_header("RateLimit-Policy", policy.clone())?;
                resp.insert_header("RateLimit", state)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, message) = classify(e, ctx);
        if status > 0 && session.response_written().is_none() {
            session.set_keepalive(None);
            if let Err(write_err) = respond(session, ctx, status, Some(&message), &[]).await {
                log::debug!("could not send the error response: {write_err}");
            }
        }
        ctx.failure = Some((status, message));
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // Client hang-ups and our own 4xx verdicts are not gateway errors.
        matches!(e.etype(), ErrorType::HTTPStatus(c) if *c < 500)
            || (e.esource() == &ErrorSource::Downstream && ctx.route.is_some())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // Background cache revalidations re-enter every hook; count a request once.
        if session.as_downstream().is_subrequest() {
            return;
        }
        let elapsed = ctx.start.elapsed();
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            // Nothing was sent: the client went away first (nginx's 499).
            None => ctx
                .failure
                .as_ref()
                .map(|f| f.0)
                .filter(|s| *s > 0)
                .unwrap_or(499),
        };
        // A failure once a backend was reached (connect failures were
        // counted per attempt in fail_to_connect).
        if let Some(e) = e.filter(|e| e.esource() == &ErrorSource::Upstream) {
            let kind = upstream_error_kind(e.etype());
            if !matches!(e.etype(), ErrorType::HTTPStatus(_))
                && !matches!(kind, "connect" | "connect_timeout")
            {
                METRICS
                    .upstream_errors
                    .with_label_values(&[ctx.pool_name(), kind])
                    .inc();
            }
        }
        let req = session.req_header();
        let route_name = ctx.route.as_ref().map(|r| r.name.as_str());
        let mut status_buf = itoa_status(status);
        METRICS
            .requests
            .with_label_values(&[
                route_name.unwrap_or("-"),
                method_label(&req.method),
                status_str(&mut status_buf),
            ])
            .inc();
        if let Some(route) = &ctx.route {
            route.duration.observe(elapsed.as_secs_f64());
            if let Some(word) = ctx.cache_status {
                METRICS
                    .cache_requests
                    .with_label_values(&[route.name.as_str(), word])
                    .inc();
            }
        }
        let Some(gw) = ctx.gateway.as_ref() else {
            return;
        };
        if gw.access_log == observe::AccessLogTarget::Off {
            return;
        }
        let error = e.map(|e| e.etype().as_str().to_string());
        observe::write_access_log(
            &gw.access_log,
            &AccessLogEntry {
                time: observe::now_rfc3339(),
                client: ctx.client_ip,
                method: req.method.as_str(),
                host: &ctx.host,
                path: req.uri.path(),
                status,
                bytes: session.body_bytes_sent(),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                route: route_name,
                consumer: ctx.consumer.as_ref().map(|c| c.name.as_str()),
                upstream: ctx.route.as_ref().map(|r| r.pool.name.as_str()),
                target: ctx.tried.last().map(|t| t.to_string()),
                request_id: &ctx.request_id,
                error,
            },
        );
    }
}

/// Status code as text without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn status_str(buf: &mut [u8; 3]) -> &str {
    std::str::from_utf8(buf).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert_eq!(
            valid_request_id(&HeaderValue::from_static("abc-123_x.y:z")),
            Some("abc-123_x.y:z")
        );
        assert_eq!(valid_request_id(&HeaderValue::from_static("")), None);
        assert_eq!(valid_request_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(
            valid_request_id(&HeaderValue::from_str(&"a".repeat(129)).unwrap()),
            None
        );
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let v4: IpAddr = "10.0.7.255".parse().unwrap();
        assert_eq!(forwarded_for(None, v4).unwrap(), "10.0.7.255");
        let prev = HeaderValue::from_static("203.0.113.1");
        assert_eq!(
            forwarded_for(Some(&prev), "0.0.0.9".parse().unwrap()).unwrap(),
            "203.0.113.1, 0.0.0.9"
        );
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(forwarded_for(None, v6).unwrap(), "::1");
    }

    #[test]
    fn status_text() {
        let mut b = itoa_status(404);
        assert_eq!(status_str(&mut b), "404");
        let mut b = itoa_status(99);
        assert_eq!(status_str(&mut b), "099");
    }
}
