//! Response caching: the policy of each `[cache.NAME]` block, the cache key,
//! and the decisions RFC 9111 asks for — what may be stored, for how long,
//! and which variant a request gets. The proxy calls these from
//! pingora-cache's hooks; the bytes live in [`storage::MemoryStore`].
//!
//! Two decisions here are deliberate, and tested:
//!
//! * **Authenticated routes are cached per identity.** pingora-cache's
//!   `resp_cacheable` treats any request with `Authorization` as
//!   uncacheable unless the response says `public`/`s-maxage`/
//!   `must-revalidate` (a shared cache must not hand one user's answer to
//!   another). On a route with `auth` the gateway has verified who is
//!   calling before the cache is consulted, so the key includes that
//!   identity (the admitting policy, the consumer and every identity header
//!   the backend is sent) and a response is only ever served back to the
//!   same identity. With `vary_on_auth = false` the operator declares the
//!   route's answers the same for every authenticated caller and one copy
//!   is shared. Either way `private` and `no-store` are never stored.
//! * **`Set-Cookie` responses are never stored** unless `store_set_cookie`
//!   says so: a cookie is almost always meant for one client.
//!
//! The key is framed (each part length-prefixed) from: method family (HEAD
//! shares GET's entry), scheme, host, route, normalized path, the query as
//! `key_query` selects it (parameters sorted, so `?b=1&a=2` and `?a=2&b=1`
//! are one entry), and the identity. `Vary` from the backend selects a
//! variant under that key (pingora's secondary slots); `Vary: *` is never
//! stored.

pub mod storage;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName};
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::filters::{calculate_expires_header_time, calculate_serve_stale_durations};
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;
use pingora::cache::{CacheKey, CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora::cache::{CachePhase, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::auth::Consumer;
pub use storage::{MemoryStore, PurgeTag, StoreStats};

/// Which query parameters are part of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyQuery {
    All,
    None,
    /// Only these names (sorted).
    Only(Vec<String>),
}

/// A compiled `[cache.NAME]` block.
#[derive(Debug)]
pub struct CachePolicy {
    pub name: String,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub get: bool,
    pub head: bool,
    /// Storable statuses, as a bitmap over 100..=599.
    statuses: [u64; 8],
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    pub key_query: KeyQuery,
    pub store_set_cookie: bool,
    pub honor_client_no_cache: bool,
    pub max_object_size: usize,
    pub lock_timeout: Duration,
}

impl CachePolicy {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        ttl: Duration,
        max_ttl: Duration,
        methods: &[String],
        statuses: &[u16],
        stale: (Duration, Duration),
        key_query: KeyQuery,
        store_set_cookie: bool,
        honor_client_no_cache: bool,
        max_object_size: usize,
        lock_timeout: Duration,
    ) -> CachePolicy {
        let mut bitmap = [0u64; 8];
        for s in statuses {
            let i = usize::from(*s);
            if (100..612).contains(&i) {
                bitmap[(i - 100) / 64] |= 1 << ((i - 100) % 64);
            }
        }
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        CachePolicy {
            name: name.to_string(),
            ttl,
            max_ttl,
            get: methods.iter().any(|m| m.eq_ignore_ascii_case("GET")),
            head: methods.iter().any(|m| m.eq_ignore_ascii_case("HEAD")),
            statuses: bitmap,
            stale_while_revalidate: secs(stale.0),
            stale_if_error: secs(stale.1),
            key_query,
            store_set_cookie,
            honor_client_no_cache,
            max_object_size,
            lock_timeout,
        }
    }

    pub fn stores_status(&self, status: u16) -> bool {
        let i = usize::from(status);
        (100..612).contains(&i) && self.statuses[(i - 100) / 64] & (1 << ((i - 100) % 64)) != 0
    }

    /// Whether a request with this method is looked up at all.
    pub fn caches_method(&self, m: &http::Method) -> bool {
        (*m == http::Method::GET && self.get) || (*m == http::Method::HEAD && self.head)
    }
}

/// A route's cache: the policy and what the route decides about identity.
#[derive(Debug, Clone)]
pub struct RouteCache {
    pub policy: Arc<CachePolicy>,
    /// Keep one copy per verified identity.
    pub vary_on_auth: bool,
    pub route: Arc<str>,
}

/// What the key is built from, gathered by the proxy.
pub struct KeyParts<'a> {
    pub tls: bool,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub consumer: Option<&'a Consumer>,
}

fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

/// The query as the key sees it: selected parameters, decoded, sorted by
/// name then value, re-encoded.
pub fn normalized_query(query: Option<&str>, which: &KeyQuery) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = match which {
        KeyQuery::None => return String::new(),
        KeyQuery::All => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
        KeyQuery::Only(names) => form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| names.iter().any(|n| n == k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    };
    pairs.sort();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl RouteCache {
    /// The cache key of a request on this route.
    pub fn key(&self, parts: &KeyParts<'_>) -> CacheKey {
        let mut primary = Vec::with_capacity(96 + parts.path.len());
        // Method family: HEAD is answered from GET's entry.
        push_part(&mut primary, b"GET");
        push_part(&mut primary, if parts.tls { b"https" } else { b"http" });
        push_part(&mut primary, parts.host.as_bytes());
        push_part(&mut primary, self.route.as_bytes());
        push_part(&mut primary, parts.path.as_bytes());
        push_part(
            &mut primary,
            normalized_query(parts.query, &self.policy.key_query).as_bytes(),
        );
        match (self.vary_on_auth, parts.consumer) {
            (true, Some(c)) => {
                push_part(&mut primary, b"id");
                push_part(&mut primary, c.policy.as_bytes());
                push_part(&mut primary, c.name.as_bytes());
                // What the backend is told about the caller: two tokens of
                // one subject with different claims get different copies.
                for (name, value) in &c.forward {
                    push_part(&mut primary, name.as_str().as_bytes());
                    push_part(&mut primary, value.as_bytes());
                }
            }
            (true, None) => push_part(&mut primary, b"anonymous"),
            (false, _) => push_part(&mut primary, b"shared"),
        }
        let mut key = CacheKey::new(primary, "");
        // pingora asks for the hash many times per request; compute it once.
        let bin = key.primary_bin();
        key.set_primary_bin_override(bin);
        key
    }

    /// Whether the response may be stored, and until when it is fresh.
    /// `unverified_authorization`: the request carried `Authorization` that
    /// the gateway did not verify (a route without `auth`): then the
    /// backend's own access control may have shaped the answer, and
    /// RFC 9111 §3.5 applies — stored only if the response says `public`,
    /// `s-maxage` or `must-revalidate`.
    pub fn decide(
        &self,
        resp: &ResponseHeader,
        path: &str,
        unverified_authorization: bool,
    ) -> RespCacheable {
        let policy = &self.policy;
        if !policy.stores_status(resp.status.as_u16()) {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("status not in statuses"));
        }
        let cc = CacheControl::from_resp_headers(resp);
        if let Some(cc) = &cc {
            if cc.no_store() {
                return RespCacheable::Uncacheable(NoCacheReason::Custom("no-store"));
            }
            if cc.private() {
                return RespCacheable::Uncacheable(NoCacheReason::Custom("private"));
            }
        }
        if unverified_authorization
            && !cc
                .as_ref()
                .is_some_and(|cc| cc.allow_caching_authorized_req())
        {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("authorization"));
        }
        let declared_len = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared_len.is_some_and(|n| n > policy.max_object_size) {
            return RespCacheable::Uncacheable(NoCacheReason::ResponseTooLarge);
        }
        if !policy.store_set_cookie && resp.headers.contains_key(header::SET_COOKIE) {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
        }
        if resp.headers.get_all(header::VARY).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|n| n.trim_ascii() == b"*")
        }) {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("vary *"));
        }
        let now = SystemTime::now();
        // RFC 9111 §4.2.1: s-maxage, then max-age (no-cache = 0: stored but
        // revalidated on every use), then Expires, then the policy's ttl.
        let own = cc.as_ref().and_then(|cc| cc.fresh_duration());
        let fresh_until = match own {
            Some(d) if d.is_zero() => now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
            Some(d) => now + d.min(policy.max_ttl),
            None => match calculate_expires_header_time(resp) {
                Some(t) => t.min(now + policy.max_ttl),
                None => now + policy.ttl.min(policy.max_ttl),
            },
        };
        // The response's own stale-while-revalidate / stale-if-error win
        // over the policy's; must-revalidate and friends turn both off.
        let defaults = CacheMetaDefaults::new(
            |_| None,
            policy.stale_while_revalidate,
            policy.stale_if_error,
        );
        let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
        let mut header = resp.clone();
        if let Some(cc) = &cc {
            cc.strip_private_headers(&mut header);
        }
        let mut meta = CacheMeta::new(fresh_until, now, swr, sie, header);
        meta.extensions_mut().insert(PurgeTag {
            route: self.route.clone(),
            path: path.into(),
            max_body: policy.max_object_size,
        });
        RespCacheable::Cacheable(meta)
    }
}

/// The variant of a stored response a request selects: the request's
/// values of the headers the response's `Vary` names.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<HeaderName> = Vec::new();
    for v in meta.headers().get_all(header::VARY) {
        for n in v.as_bytes().split(|b| *b == b',') {
            if let Ok(name) = HeaderName::from_bytes(n.trim_ascii()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut b = VarianceBuilder::new();
    for name in &names {
        // Several fields of one name count as one list (RFC 9110 §5.3).
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(v.as_bytes().trim_ascii());
        }
        b.add_owned_name_value(name.as_str().to_string(), value);
    }
    b.finalize()
}

/// Whether the client asked not to be served without revalidation.
pub fn client_wants_revalidation(req: &RequestHeader) -> bool {
    CacheControl::from_req_headers(req)
        .is_some_and(|cc| cc.no_cache() || matches!(cc.max_age(), Ok(Some(0))))
        || req
            .headers
            .get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
}

/// The `X-Cache-Status` word for where a response came from.
pub fn status_word(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

static STORE: OnceLock<&'static MemoryStore> = OnceLock::new();
static LOCK: OnceLock<&'static CacheKeyLockImpl> = OnceLock::new();
static PREDICTOR: OnceLock<&'static Predictor<16>> = OnceLock::new();

static BUDGET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(256 << 20);

/// Sets the byte budget of the process's store (`[server.cache] memory`,
/// at start-up). The store is created on first use, so a gateway without
/// cached routes never allocates it; once created its budget is fixed for
/// the life of the process (an upgrade applies a change).
pub fn configure_store(budget: usize) {
    BUDGET.store(budget, std::sync::atomic::Ordering::Relaxed);
}

/// The process's store.
pub fn store() -> &'static MemoryStore {
    STORE.get_or_init(|| {
        let budget = BUDGET.load(std::sync::atomic::Ordering::Relaxed);
        Box::leak(Box::new(MemoryStore::new(budget)))
    })
}

/// Drops every entry of `route` (nothing to do if the store was never used).
pub fn purge_route(route: &str) -> usize {
    STORE.get().map_or(0, |s| s.purge_route(route))
}

/// Drops every entry of `path` on `route`.
pub fn purge_path(route: &str, path: &str) -> usize {
    STORE.get().map_or(0, |s| s.purge_path(route, path))
}

/// What the store holds, if it was ever used.
pub fn stats() -> Option<StoreStats> {
    STORE.get().map(|s| s.stats())
}

/// The process's cache lock: concurrent misses for one key wait for the
/// first. A writer that holds it longer than this lets the waiters go.
pub fn lock() -> &'static CacheKeyLockImpl {
    *LOCK.get_or_init(|| {
        let lock: &'static CacheLock = Box::leak(CacheLock::new_boxed(Duration::from_secs(30)));
        lock
    })
}

/// Remembers keys whose responses were not storable, so the next request
/// for them skips the lookup and the lock.
pub fn predictor() -> &'static Predictor<16> {
    PREDICTOR.get_or_init(|| Box::leak(Box::new(Predictor::new(4096, None))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_cache(ttl: u64, max_ttl: u64, vary_on_auth: bool) -> RouteCache {
        RouteCache {
            policy: Arc::new(CachePolicy::new(
                "p",
                Duration::from_secs(ttl),
                Duration::from_secs(max_ttl),
                &["GET".into(), "HEAD".into()],
                &[200, 404],
                (Duration::from_secs(10), Duration::from_secs(300)),
                KeyQuery::All,
                false,
                false,
                1 << 20,
                Duration::from_secs(5),
            )),
            vary_on_auth,
            route: "r".into(),
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh_secs(rc: &RouteCache, r: &ResponseHeader) -> Option<u64> {
        match rc.decide(r, "/p", false) {
            RespCacheable::Cacheable(m) => Some(m.fresh_sec()),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn freshness_follows_rfc9111_and_the_caps() {
        let rc = route_cache(30, 100, true);
        assert_eq!(fresh_secs(&rc, &resp(200, &[])), Some(30));
        let s = fresh_secs(&rc, &resp(200, &[("cache-control", "max-age=50")])).unwrap();
        assert!((49..=50).contains(&s));
        let s = fresh_secs(&rc, &resp(200, &[("cache-control", "max-age=5000")])).unwrap();
        assert!((99..=100).contains(&s), "capped by max_ttl: {s}");
        let s = fresh_secs(
            &rc,
            &resp(200, &[("cache-control", "max-age=50, s-maxage=70")]),
        )
        .unwrap();
        assert!((69..=70).contains(&s));
        assert_eq!(
            fresh_secs(&rc, &resp(200, &[("cache-control", "no-cache")])),
            Some(0)
        );
        assert_eq!(
            fresh_secs(
                &rc,
                &resp(200, &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")])
            ),
            Some(0)
        );
        for uncacheable in [
            resp(200, &[("cache-control", "private, max-age=60")]),
            resp(200, &[("cache-control", "no-store")]),
            resp(200, &[("set-cookie", "a=b")]),
            resp(200, &[("vary", "Accept, *")]),
            resp(500, &[("cache-control", "max-age=60")]),
        ] {
            assert_eq!(fresh_secs(&rc, &uncacheable), None, "{uncacheable:?}");
        }
        assert_eq!(fresh_secs(&rc, &resp(404, &[])), Some(30));
        let big = resp(200, &[("content-length", "2000000")]);
        assert_eq!(fresh_secs(&rc, &big), None, "larger than max_object_size");
    }

    #[test]
    fn unverified_authorization_needs_the_response_to_allow_sharing() {
        let rc = route_cache(30, 100, false);
        let stored = |headers: &[(&str, &str)]| {
            matches!(
                rc.decide(&resp(200, headers), "/p", true),
                RespCacheable::Cacheable(_)
            )
        };
        assert!(!stored(&[]));
        assert!(!stored(&[("cache-control", "max-age=60")]));
        assert!(stored(&[("cache-control", "public, max-age=60")]));
        assert!(stored(&[("cache-control", "s-maxage=60")]));
    }

    #[test]
    fn stale_windows_come_from_the_response_or_the_policy() {
        let rc = route_cache(30, 100, true);
        let RespCacheable::Cacheable(m) = rc.decide(&resp(200, &[]), "/p", false) else {
            panic!()
        };
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (10, 300)
        );
        let r = resp(
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=3")],
        );
        let RespCacheable::Cacheable(m) = rc.decide(&r, "/p", false) else {
            panic!()
        };
        assert_eq!(m.stale_while_revalidate_sec(), 3);
        let r = resp(200, &[("cache-control", "max-age=1, must-revalidate")]);
        let RespCacheable::Cacheable(m) = rc.decide(&r, "/p", false) else {
            panic!()
        };
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (0, 0)
        );
    }

    #[test]
    fn queries_are_normalized() {
        let all = KeyQuery::All;
        assert_eq!(normalized_query(Some("b=2&a=1"), &all), "a=1&b=2");
        assert_eq!(normalized_query(Some("a=%41"), &all), "a=A");
        assert_eq!(normalized_query(Some("x=1"), &KeyQuery::None), "");
        let only = KeyQuery::Only(vec!["page".into(), "sort".into()]);
        assert_eq!(
            normalized_query(Some("utm=x&sort=asc&page=2"), &only),
            "page=2&sort=asc"
        );
    }

    #[test]
    fn keys_separate_what_must_not_mix() {
        let rc = route_cache(30, 100, true);
        let parts = |host, path, query| KeyParts {
            tls: false,
            host,
            path,
            query,
            consumer: None,
        };
        let k = |p: KeyParts| rc.key(&p).primary_bin();
        assert_eq!(
            k(parts("a", "/x", Some("b=1&a=2"))),
            k(parts("a", "/x", Some("a=2&b=1")))
        );
        assert_ne!(k(parts("a", "/x", None)), k(parts("b", "/x", None)));
        assert_ne!(k(parts("a", "/x", None)), k(parts("a", "/y", None)));
        // Framing: the host/path boundary cannot be shifted.
        assert_ne!(k(parts("ab", "/c", None)), k(parts("a", "b/c", None)));
        let mut tls = parts("a", "/x", None);
        tls.tls = true;
        assert_ne!(k(tls), k(parts("a", "/x", None)));
    }

    #[test]
    fn variance_reads_the_named_request_headers() {
        let rc = route_cache(30, 100, true);
        let RespCacheable::Cacheable(m) =
            rc.decide(&resp(200, &[("vary", "Accept-Encoding")]), "/p", false)
        else {
            panic!()
        };
        let mut gzip = RequestHeader::build("GET", b"/p", None).unwrap();
        gzip.insert_header("accept-encoding", "gzip").unwrap();
        let mut br = RequestHeader::build("GET", b"/p", None).unwrap();
        br.insert_header("accept-encoding", "br").unwrap();
        let none = RequestHeader::build("GET", b"/p", None).unwrap();
        let v = |r: &RequestHeader| variance(&m, r);
        assert!(v(&gzip).is_some());
        assert_ne!(v(&gzip), v(&br));
        assert_ne!(v(&gzip), v(&none));
        assert_eq!(v(&gzip), v(&gzip.clone()));
        let RespCacheable::Cacheable(plain) = rc.decide(&resp(200, &[]), "/p", false) else {
            panic!()
        };
        assert_eq!(variance(&plain, &gzip), None);
    }
}
