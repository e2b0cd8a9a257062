//! Request routing: which route serves `(host, path, method)`.
//!
//! Precedence is fixed and deterministic: an exact host beats a wildcard host
//! (the longest suffix first), which beats routes without a host; within one
//! host group an exact path beats the longest matching segment-aware prefix,
//! which beats a regex (config order among regexes). A candidate whose path
//! matches but whose method list does not is skipped; when nothing admits the
//! method but some path matched, the answer is "405, Allow: ...".
//!
//! Paths are normalized first ([`normalize_path`]) so that the router, every
//! policy and the backend all see one spelling of the path:
//! `/pay/../admin` is `/admin` before any route is chosen.
//!
//! The router knows nothing of Pingora; it hands back a [`RouteId`] (an index
//! into the gateway's route list) and the matched prefix length.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::RegexSet;

/// Index of a route in the compiled gateway's route list.
pub type RouteId = usize;

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Segment-aware prefix: `/pay` matches `/pay` and `/pay/x`, never `/payx`.
    Prefix(String),
    Regex(String),
}

/// A route as the router needs it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Host patterns, lowercase: `api.example.com` or `*.example.com`. Empty = any host.
    pub hosts: Vec<String>,
    pub path: PathMatch,
    /// Upper-case methods; `None` = every method.
    pub methods: Option<Vec<String>>,
}

/// The router's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    Found {
        route: RouteId,
        /// Bytes of the path matched by a prefix route (for `strip_prefix`).
        prefix_len: usize,
    },
    /// Some route matched the path but none allows the method.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

#[derive(Debug, Clone)]
struct Candidate {
    route: RouteId,
    methods: Option<Vec<String>>,
}

impl Candidate {
    fn admits(&self, method: &str) -> bool {
        match &self.methods {
            None => true,
            // HEAD is a GET without the body: a route that allows GET allows HEAD.
            Some(m) => m
                .iter()
                .any(|x| x == method || (method == "HEAD" && x == "GET")),
        }
    }
}

/// Routes of one host group.
#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<String, Vec<Candidate>>,
    prefixes: HashMap<String, Vec<Candidate>>,
    regex_set: Option<RegexSet>,
    regex_routes: Vec<Candidate>,
    regex_sources: Vec<String>,
}

impl PathTable {
    fn add(&mut self, path: &PathMatch, cand: Candidate) {
        match path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(cand),
            PathMatch::Prefix(p) => self
                .prefixes
                .entry(canonical_prefix(p).to_string())
                .or_default()
                .push(cand),
            PathMatch::Regex(r) => {
                self.regex_sources.push(r.clone());
                self.regex_routes.push(cand);
            }
        }
    }

    fn finish(&mut self) -> Result<(), regex::Error> {
        if !self.regex_sources.is_empty() {
            self.regex_set = Some(RegexSet::new(&self.regex_sources)?);
        }
        Ok(())
    }

    /// Visits path-matching candidates from most to least specific until `f`
    /// returns `Some`.
    fn visit<'t, T>(
        &'t self,
        path: &str,
        mut f: impl FnMut(&'t Candidate, usize) -> Option<T>,
    ) -> Option<T> {
        if let Some(cands) = self.exact.get(path) {
            for c in cands {
                if let Some(v) = f(c, 0) {
                    return Some(v);
                }
            }
        }
        if !self.prefixes.is_empty() {
            // Walk up segment boundaries: /a/b/c, /a/b, /a, /.
            let mut p = path;
            if p.len() > 1 && p.ends_with('/') {
                p = &p[..p.len() - 1];
            }
            loop {
                if let Some(cands) = self.prefixes.get(p) {
                    let len = if p == "/" { 0 } else { p.len() };
                    for c in cands {
                        if let Some(v) = f(c, len) {
                            return Some(v);
                        }
                    }
                }
                if p == "/" || p.is_empty() {
                    break;
                }
                p = match p.rfind('/') {
                    Some(0) | None => "/",
                    Some(i) => &p[..i],
                };
            }
        }
        if let Some(set) = &self.regex_set {
            for i in set.matches(path).iter() {
                if let Some(v) = f(&self.regex_routes[i], 0) {
                    return Some(v);
                }
            }
        }
        None
    }
}

/// `/pay/` and `/pay` are the same prefix; `/` stays `/`.
fn canonical_prefix(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// The compiled routing table.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<String, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    wildcard_hosts: Vec<(String, PathTable)>,
    any_host: PathTable,
}

impl Router {
    /// Builds the table. Routes keep their index in `specs` as their id;
    /// among equally specific routes the earlier one wins.
    pub fn new(specs: &[RouteSpec]) -> Result<Router, regex::Error> {
        let mut router = Router::default();
        let mut wildcards: HashMap<String, PathTable> = HashMap::new();
        for (id, spec) in specs.iter().enumerate() {
            let cand = Candidate {
                route: id,
                methods: spec.methods.clone(),
            };
            if spec.hosts.is_empty() {
                router.any_host.add(&spec.path, cand.clone());
            }
            for host in &spec.hosts {
                let table = match host.strip_prefix('*') {
                    Some(suffix) => wildcards.entry(suffix.to_string()).or_default(),
                    None => router.exact_hosts.entry(host.clone()).or_default(),
                };
                table.add(&spec.path, cand.clone());
            }
        }
        router.any_host.finish()?;
        for t in router.exact_hosts.values_mut() {
            t.finish()?;
        }
        let mut wildcards: Vec<(String, PathTable)> = wildcards.into_iter().collect();
        for (_, t) in wildcards.iter_mut() {
            t.finish()?;
        }
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        router.wildcard_hosts = wildcards;
        Ok(router)
    }

    /// Finds the route for a normalized path and a host as [`normalize_host`] returns it.
    pub fn find(&self, host: &str, path: &str, method: &str) -> RouteMatch {
        let mut allow: Vec<&str> = Vec::new();
        let mut path_matched = false;
        let tables = self
            .exact_hosts
            .get(host)
            .into_iter()
            .chain(
                self.wildcard_hosts
                    .iter()
                    .filter(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .map(|(_, t)| t),
            )
            .chain(std::iter::once(&self.any_host));
        for table in tables {
            let found = table.visit(path, |cand, prefix_len| {
                path_matched = true;
                if cand.admits(method) {
                    Some(RouteMatch::Found {
                        route: cand.route,
                        prefix_len,
                    })
                } else {
                    if let Some(ms) = &cand.methods {
                        for m in ms {
                            if !allow.contains(&m.as_str()) {
                                allow.push(m);
                            }
                        }
                    }
                    None
                }
            });
            if let Some(found) = found {
                return found;
            }
        }
        if path_matched {
            if allow.contains(&"GET") && !allow.contains(&"HEAD") {
                allow.push("HEAD");
            }
            RouteMatch::MethodNotAllowed {
                allow: allow.join(", "),
            }
        } else {
            RouteMatch::NotFound
        }
    }
}

/// Lower-cases a Host header value and drops the port and a trailing dot.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep through the closing bracket.
        match raw.find(']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        match raw.rfind(':') {
            Some(i) => &raw[..i],
            None => raw,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Why a path could not be normalized (the client gets 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalizes a request path (no query): percent-escapes of unreserved
/// characters are decoded and other escapes upper-cased (RFC 3986 §6.2.2),
/// runs of `/` collapse to one, and `.`/`..` segments are resolved (§5.2.4),
/// never climbing above the root. Decoding happens before dot removal, so
/// `%2e%2e` is treated as `..`. Idempotent; borrows when nothing changes.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no empty or dot segments.
    let needs_work = bytes.contains(&b'%')
        || raw.contains("//")
        || raw.contains("/./")
        || raw.contains("/../")
        || raw.ends_with("/.")
        || raw.ends_with("/..");
    if !needs_work {
        return Ok(Cow::Borrowed(raw));
    }

    // 1. Percent-escapes.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => (hex_val(h), hex_val(l)),
                _ => (None, None),
            };
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let v = hi * 16 + lo;
            if is_unreserved(v) {
                decoded.push(v);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }

    // 2 and 3. Empty and dot segments.
    let trailing_slash =
        decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in &segments {
        out.push('/');
        // Only ASCII bytes were produced by decoding; the rest are copied from
        // a valid &str split at ASCII '/', so this cannot fail.
        out.push_str(std::str::from_utf8(seg).map_err(|_| PathError::BadEscape)?);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hosts: &[&str], path: PathMatch, methods: Option<&[&str]>) -> RouteSpec {
        RouteSpec {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            path,
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn found(route: RouteId) -> impl Fn(RouteMatch) -> bool {
        move |m| matches!(m, RouteMatch::Found { route: r, .. } if r == route)
    }

    #[test]
    fn normalizes_paths() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/pay/../admin", "/admin"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/%7Euser/%61bc", "/~user/abc"),
            ("/pay/%2e%2e/admin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/", "/a%2Fb/"),
            ("//", "/"),
            ("/a/", "/a/"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/x/%2E", "/x/"),
        ];
        for (raw, want) in cases {
            let got = normalize_path(raw).unwrap();
            assert_eq!(got, want, "normalize({raw})");
            assert_eq!(normalize_path(&got).unwrap(), got, "idempotent({raw})");
        }
        assert_eq!(normalize_path("a"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%4"), Err(PathError::BadEscape));
        assert!(matches!(
            normalize_path("/plain/path"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("localhost"), "localhost");
    }

    #[test]
    fn precedence_exact_then_longest_prefix_then_regex() {
        let r = Router::new(&[
            spec(&[], PathMatch::Regex("^/v[0-9]+/items$".into()), None),
            spec(&[], PathMatch::Prefix("/v1".into()), None),
            spec(&[], PathMatch::Prefix("/v1/items".into()), None),
            spec(&[], PathMatch::Exact("/v1/items".into()), None),
            spec(&[], PathMatch::Prefix("/".into()), None),
        ])
        .unwrap();
        assert!(found(3)(r.find("h", "/v1/items", "GET")));
        assert!(found(2)(r.find("h", "/v1/items/7", "GET")));
        assert!(found(1)(r.find("h", "/v1/other", "GET")));
        assert!(
            found(4)(r.find("h", "/v2/items", "GET")),
            "prefix / beats regex"
        );
        let r =
            Router::new(&[spec(&[], PathMatch::Regex("^/v[0-9]+/items$".into()), None)]).unwrap();
        assert!(found(0)(r.find("h", "/v2/items", "GET")));
        assert_eq!(r.find("h", "/v2/items/x", "GET"), RouteMatch::NotFound);
    }

    #[test]
    fn prefixes_are_segment_aware() {
        let r = Router::new(&[spec(&[], PathMatch::Prefix("/pay".into()), None)]).unwrap();
        assert_eq!(
            r.find("h", "/pay", "GET"),
            RouteMatch::Found {
                route: 0,
                prefix_len: 4
            }
        );
        assert_eq!(
            r.find("h", "/pay/charge", "GET"),
            RouteMatch::Found {
                route: 0,
                prefix_len: 4
            }
        );
        assert!(found(0)(r.find("h", "/pay/", "GET")));
        assert_eq!(r.find("h", "/payx", "GET"), RouteMatch::NotFound);
        assert_eq!(r.find("h", "/", "GET"), RouteMatch::NotFound);
    }

    #[test]
    fn host_beats_any_host_and_wildcards_work() {
        let r = Router::new(&[
            spec(&[], PathMatch::Exact("/x".into()), None),
            spec(&["*.example.com"], PathMatch::Prefix("/".into()), None),
            spec(&["api.example.com"], PathMatch::Prefix("/".into()), None),
            spec(&["*.eu.example.com"], PathMatch::Prefix("/".into()), None),
        ])
        .unwrap();
        assert!(found(2)(r.find("api.example.com", "/x", "GET")));
        assert!(found(1)(r.find("www.example.com", "/x", "GET")));
        assert!(found(3)(r.find("a.eu.example.com", "/x", "GET")));
        assert!(
            found(0)(r.find("example.com", "/x", "GET")),
            "*.example.com needs a label"
        );
        assert!(found(0)(r.find("other.org", "/x", "GET")));
        assert_eq!(r.find("other.org", "/y", "GET"), RouteMatch::NotFound);
    }

    #[test]
    fn method_mismatch_gives_allow_or_falls_through() {
        let r = Router::new(&[
            spec(&[], PathMatch::Prefix("/pay".into()), Some(&["POST"])),
            spec(&[], PathMatch::Exact("/orders".into()), Some(&["GET"])),
            spec(
                &[],
                PathMatch::Exact("/orders".into()),
                Some(&["POST", "PUT"]),
            ),
            spec(&[], PathMatch::Prefix("/open".into()), Some(&["GET"])),
            spec(&[], PathMatch::Prefix("/".into()), Some(&["DELETE"])),
        ])
        .unwrap();
        assert!(found(0)(r.find("h", "/pay/charge", "POST")));
        assert!(found(2)(r.find("h", "/orders", "PUT")));
        assert!(found(1)(r.find("h", "/orders", "HEAD")), "GET admits HEAD");
        assert!(
            found(4)(r.find("h", "/pay/charge", "DELETE")),
            "less specific route admits"
        );
        assert_eq!(
            r.find("h", "/orders", "PATCH"),
            RouteMatch::MethodNotAllowed {
                allow: "GET, POST, PUT, DELETE, HEAD".into()
            }
        );
        assert_eq!(
            r.find("h", "/pay", "GET"),
            RouteMatch::MethodNotAllowed {
                allow: "POST, DELETE".into()
            }
        );
    }

    #[test]
    fn earlier_route_wins_a_tie() {
        let r = Router::new(&[
            spec(&[], PathMatch::Prefix("/a".into()), None),
            spec(&[], PathMatch::Prefix("/a/".into()), None),
        ])
        .unwrap();
        assert!(found(0)(r.find("h", "/a/b", "GET")));
    }
}
