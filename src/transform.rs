//! Reshaping requests and responses: header operations and CORS.
//!
//! A route names `[transforms.*]` blocks; their operations are compiled once
//! (names parsed into `HeaderName`, values into `HeaderValue`) and merged in
//! order into one [`HeaderOps`] per direction, so the request path only
//! applies ready-made operations. CORS decides, from the `Origin` header and a
//! `[cors.*]` policy, whether a preflight is answered and which
//! `Access-Control-*` headers a response carries. Nothing here touches a
//! Pingora session: `proxy` hands in header maps.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Header changes for one direction, applied remove → set → add.
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

/// Why a header name or value from the config was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderOpError {
    #[error("{0:?} is not a valid header name")]
    Name(String),
    #[error("the value of {0:?} is not a valid header value (control characters?)")]
    Value(String),
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn push_remove(&mut self, name: &str) -> Result<(), HeaderOpError> {
        self.remove.push(parse_name(name)?);
        Ok(())
    }

    pub fn push_set(&mut self, name: &str, value: &str) -> Result<(), HeaderOpError> {
        self.set
            .push((parse_name(name)?, parse_value(name, value)?));
        Ok(())
    }

    pub fn push_add(&mut self, name: &str, value: &str) -> Result<(), HeaderOpError> {
        self.add
            .push((parse_name(name)?, parse_value(name, value)?));
        Ok(())
    }

    /// Appends another block's operations (later blocks win on `set`).
    pub fn extend(&mut self, other: &HeaderOps) {
        self.remove.extend(other.remove.iter().cloned());
        self.set.extend(other.set.iter().cloned());
        self.add.extend(other.add.iter().cloned());
    }

    /// Applies the operations through a [`HeaderSink`] (a Pingora header, or
    /// a plain `HeaderMap` in tests).
    pub fn apply<S: HeaderSink>(&self, target: &mut S) {
        for name in &self.remove {
            target.remove(name);
        }
        for (name, value) in &self.set {
            target.set(name, value.clone());
        }
        for (name, value) in &self.add {
            target.append(name, value.clone());
        }
    }
}

/// The three things a header operation needs from a header container.
pub trait HeaderSink {
    fn remove(&mut self, name: &HeaderName);
    fn set(&mut self, name: &HeaderName, value: HeaderValue);
    fn append(&mut self, name: &HeaderName, value: HeaderValue);
}

impl HeaderSink for HeaderMap {
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
    fn set(&mut self, name: &HeaderName, value: HeaderValue) {
        self.insert(name.clone(), value);
    }
    fn append(&mut self, name: &HeaderName, value: HeaderValue) {
        HeaderMap::append(self, name.clone(), value);
    }
}

fn parse_name(name: &str) -> Result<HeaderName, HeaderOpError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderOpError::Name(name.to_string()))
}

fn parse_value(name: &str, value: &str) -> Result<HeaderValue, HeaderOpError> {
    HeaderValue::from_str(value).map_err(|_| HeaderOpError::Value(name.to_string()))
}

/// A compiled `[cors.*]` policy.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub name: String,
    any_origin: bool,
    origins: Vec<String>,
    allow_methods: HeaderValue,
    allow_methods_list: Vec<String>,
    allow_headers: Option<HeaderValue>,
    allow_headers_list: Vec<String>,
    expose_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
}

/// What the gateway does with a request that carries `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsVerdict {
    /// Not a CORS request, or the origin is not allowed: add nothing.
    NoHeaders,
    /// Allowed simple/actual request: add these headers to the response.
    Allow(Vec<(HeaderName, HeaderValue)>),
}

/// The answer to a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightVerdict {
    /// 204 with these headers.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Refused; the string says why (for the JSON body).
    Deny(String),
}

impl CorsPolicy {
    pub fn new(
        name: &str,
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        allow_credentials: bool,
        max_age: Option<Duration>,
    ) -> Result<CorsPolicy, String> {
        let any_origin = origins.iter().any(|o| o == "*");
        if any_origin && allow_credentials {
            return Err(
                "allow_credentials = true cannot be combined with allow_origins = [\"*\"] (browsers refuse it); list the origins"
                    .to_string(),
            );
        }
        for o in origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(format!(
                    "origin {o:?} must be \"*\" or look like \"https://app.example.com\""
                ));
            }
            if o != "*" && o.trim_end_matches('/') != o {
                return Err(format!("origin {o:?} must not end with '/'"));
            }
        }
        let methods_upper: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        let headers_lower: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        let join = |v: &[String]| -> Result<Option<HeaderValue>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&v.join(", "))
                .map(Some)
                .map_err(|_| format!("{v:?} contains characters not allowed in a header"))
        };
        Ok(CorsPolicy {
            name: name.to_string(),
            any_origin,
            origins: origins.iter().filter(|o| *o != "*").cloned().collect(),
            allow_methods: join(&methods_upper)?.unwrap_or(HeaderValue::from_static("GET")),
            allow_methods_list: methods_upper,
            allow_headers: join(&headers_lower)?,
            allow_headers_list: headers_lower,
            expose_headers: join(expose)?,
            allow_credentials,
            max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.allow_credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Headers for an actual (non-preflight) request from `origin`.
    pub fn actual(&self, origin: &HeaderValue) -> CorsVerdict {
        let Ok(origin_str) = origin.to_str() else {
            return CorsVerdict::NoHeaders;
        };
        if !self.origin_allowed(origin_str) {
            return CorsVerdict::NoHeaders;
        }
        let mut h = vec![(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        )];
        if self.allow_credentials {
            h.push((
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(e) = &self.expose_headers {
            h.push((http::header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
        CorsVerdict::Allow(h)
    }

    /// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`).
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        request_method: &str,
        request_headers: Option<&HeaderValue>,
    ) -> PreflightVerdict {
        let origin_str = origin.to_str().unwrap_or("");
        if !self.origin_allowed(origin_str) {
            return PreflightVerdict::Deny(format!(
                "origin {origin_str:?} is not allowed by CORS policy '{}'",
                self.name
            ));
        }
        let method = request_method.to_ascii_uppercase();
        if !self.allow_methods_list.contains(&method) {
            return PreflightVerdict::Deny(format!(
                "method {method} is not allowed by CORS policy '{}'",
                self.name
            ));
        }
        if let Some(req) = request_headers.and_then(|v| v.to_str().ok()) {
            for name in req.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let lower = name.to_ascii_lowercase();
                if !self.allow_headers_list.contains(&lower) {
                    return PreflightVerdict::Deny(format!(
                        "request header {lower:?} is not allowed by CORS policy '{}'",
                        self.name
                    ));
                }
            }
        }
        let mut h = vec![
            (
                http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin_value(origin),
            ),
            (
                http::header::ACCESS_CONTROL_ALLOW_METHODS,
                self.allow_methods.clone(),
            ),
        ];
        if let Some(v) = &self.allow_headers {
            h.push((http::header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone()));
        }
        if self.allow_credentials {
            h.push((
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(v) = &self.max_age {
            h.push((http::header::ACCESS_CONTROL_MAX_AGE, v.clone()));
        }
        PreflightVerdict::Allow(h)
    }

    /// Whether responses must carry `Vary: Origin` (the answer depends on it).
    pub fn varies_on_origin(&self) -> bool {
        !self.any_origin || self.allow_credentials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], creds: bool) -> CorsPolicy {
        CorsPolicy::new(
            "web",
            &origins.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &["GET".into(), "POST".into()],
            &["Authorization".into(), "content-type".into()],
            &["x-request-id".into()],
            creds,
            Some(Duration::from_secs(600)),
        )
        .unwrap()
    }

    #[test]
    fn header_ops_apply_in_order() {
        let mut ops = HeaderOps::default();
        ops.push_remove("x-debug").unwrap();
        ops.push_set("x-gateway", "frontdesk").unwrap();
        ops.push_add("via", "frontdesk").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        h.insert("x-gateway", HeaderValue::from_static("client-lie"));
        h.insert("via", HeaderValue::from_static("proxy-a"));
        ops.apply(&mut h);
        assert!(h.get("x-debug").is_none());
        assert_eq!(h["x-gateway"], "frontdesk");
        assert_eq!(h.get_all("via").iter().count(), 2);
        assert!(ops.push_remove("bad header").is_err());
        assert!(ops.push_set("x", "a\nb").is_err());
    }

    #[test]
    fn preflight_allows_and_denies() {
        let p = policy(&["https://app.example.com"], false);
        let origin = HeaderValue::from_static("https://app.example.com");
        match p.preflight(
            &origin,
            "post",
            Some(&HeaderValue::from_static("Content-Type, authorization")),
        ) {
            PreflightVerdict::Allow(h) => {
                let get = |n: HeaderName| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
                assert_eq!(
                    get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
                    origin
                );
                assert_eq!(
                    get(http::header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(),
                    "GET, POST"
                );
                assert_eq!(get(http::header::ACCESS_CONTROL_MAX_AGE).unwrap(), "600");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.preflight(&origin, "DELETE", None),
            PreflightVerdict::Deny(_)
        ));
        assert!(matches!(
            p.preflight(
                &HeaderValue::from_static("https://evil.example"),
                "GET",
                None
            ),
            PreflightVerdict::Deny(_)
        ));
        assert!(matches!(
            p.preflight(&origin, "GET", Some(&HeaderValue::from_static("x-secret"))),
            PreflightVerdict::Deny(_)
        ));
    }

    #[test]
    fn actual_requests_get_origin_or_nothing() {
        let p = policy(&["https://app.example.com"], true);
        let ok = p.actual(&HeaderValue::from_static("https://app.example.com"));
        let CorsVerdict::Allow(h) = ok else { panic!() };
        assert!(h
            .iter()
            .any(|(k, v)| *k == http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS && v == "true"));
        assert_eq!(
            p.actual(&HeaderValue::from_static("https://evil.example")),
            CorsVerdict::NoHeaders
        );
        assert!(p.varies_on_origin());
        let any = policy(&["*"], false);
        let CorsVerdict::Allow(h) = any.actual(&HeaderValue::from_static("https://x.y")) else {
            panic!()
        };
        assert_eq!(h[0].1, "*");
        assert!(!any.varies_on_origin());
    }

    #[test]
    fn rejects_wildcard_with_credentials_and_bad_origins() {
        let bad = |o: &str, c: bool| {
            CorsPolicy::new("p", &[o.to_string()], &[], &[], &[], c, None).is_err()
        };
        assert!(bad("*", true));
        assert!(bad("app.example.com", false));
        assert!(bad("https://app.example.com/", false));
        assert!(!bad("https://app.example.com", false));
    }
}
