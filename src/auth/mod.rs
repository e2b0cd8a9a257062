//! Who is calling: credentials in, a [`Consumer`] (or a refusal) out.
//!
//! A route names one or more auth policies (`auth = ["users", "partners"]`);
//! the first that accepts the request's credentials admits it, and its
//! consumer (name, groups, how it proved itself, headers to forward) goes
//! into the request context, where rate limits, the access log and the
//! upstream request read it. Three kinds of policy: JWT ([`jwt`], keys from a
//! PEM file, an HMAC secret in the environment, or a JWKS file or URL),
//! API keys ([`api_key`], stored only as SHA-256 digests) and client
//! certificates verified by a TLS listener with `client_ca` ([`mtls`]).
//!
//! The room knows nothing of Pingora: it takes plain [`Credentials`] (the
//! request's headers, query and the TLS client-certificate identity) and
//! returns a verdict. The proxy turns an [`AuthFailure`] into a 401 with a
//! `WWW-Authenticate` challenge, or a 403 when the consumer is outside the
//! route's `allow_groups`.

pub mod api_key;
pub mod compile;
pub mod jwt;
pub mod mtls;

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub use mtls::ClientCertIdentity;

/// How a consumer proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    Mtls,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Mtls => "mtls",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub groups: Vec<String>,
    pub method: AuthMethod,
    /// Name of the `[auth.*]` policy that admitted it.
    pub policy: Arc<str>,
    /// Headers for the backend (`x-consumer`, forwarded claims).
    pub forward: Vec<(HeaderName, HeaderValue)>,
    /// The verified token's claims (empty for API keys and certificates),
    /// for limits keyed by `claim:NAME`.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Why a request was not admitted. `reason` is a short, fixed label (a
/// metric label value); `message` is for the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: &'static str,
    pub message: String,
    /// The request carried a credential of this kind (as opposed to none).
    pub presented: bool,
}

impl AuthFailure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> AuthFailure {
        AuthFailure {
            reason,
            message: message.into(),
            presented: true,
        }
    }

    pub fn missing(message: impl Into<String>) -> AuthFailure {
        AuthFailure {
            reason: "missing",
            message: message.into(),
            presented: false,
        }
    }
}

/// What a request offers as proof of identity.
pub struct Credentials<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub client_cert: Option<&'a ClientCertIdentity>,
}

/// One compiled `[auth.NAME]` block.
pub enum AuthPolicy {
    Jwt(Box<jwt::JwtPolicy>),
    ApiKey(api_key::ApiKeyPolicy),
    Mtls(mtls::MtlsPolicy),
}

impl AuthPolicy {
    pub fn name(&self) -> &str {
        match self {
            AuthPolicy::Jwt(p) => p.name(),
            AuthPolicy::ApiKey(p) => p.name(),
            AuthPolicy::Mtls(p) => p.name(),
        }
    }

    pub async fn authenticate(
        &self,
        creds: &Credentials<'_>,
    ) -> Result<Arc<Consumer>, AuthFailure> {
        match self {
            AuthPolicy::Jwt(p) => p.authenticate(creds).await,
            AuthPolicy::ApiKey(p) => p.authenticate(creds),
            AuthPolicy::Mtls(p) => p.authenticate(creds),
        }
    }

    /// The `WWW-Authenticate` challenge for a refusal by this policy.
    pub fn challenge(&self, failure: &AuthFailure) -> HeaderValue {
        let desc = sanitize_quoted(&failure.message);
        let text = match self {
            AuthPolicy::Jwt(_) => format!(
                "Bearer realm=\"frontdesk\", error=\"invalid_token\", error_description=\"{desc}\""
            ),
            AuthPolicy::ApiKey(p) => format!(
                "ApiKey realm=\"frontdesk\", {}, error=\"invalid_key\", error_description=\"{desc}\"",
                p.location_param()
            ),
            AuthPolicy::Mtls(_) => {
                format!("TLS-Client-Certificate realm=\"frontdesk\", error_description=\"{desc}\"")
            }
        };
        HeaderValue::from_str(&text)
            .unwrap_or(HeaderValue::from_static("Bearer realm=\"frontdesk\""))
    }

    /// Request headers this policy sets for the backend; copies sent by the
    /// client are removed so that nobody can spoof an identity.
    pub fn identity_headers(&self) -> Vec<HeaderName> {
        match self {
            AuthPolicy::Jwt(p) => p.forwarded_header_names(),
            _ => Vec::new(),
        }
    }
}

/// Keeps only characters that are safe inside a quoted-string.
fn sanitize_quoted(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(200)
        .collect()
}

/// The auth part of a compiled route.
pub struct RouteAuth {
    pub policies: Vec<Arc<AuthPolicy>>,
    pub allow_groups: Option<Vec<String>>,
}

/// The outcome of [`RouteAuth::check`].
pub enum AuthVerdict {
    Admit(Arc<Consumer>),
    /// 401: no policy accepted the credentials. Carries one challenge per
    /// policy and the failure that best explains the refusal.
    Unauthorized {
        failure: AuthFailure,
        challenges: Vec<HeaderValue>,
    },
    /// 403: a valid consumer outside `allow_groups`.
    Forbidden {
        consumer: Arc<Consumer>,
        message: String,
    },
}

impl RouteAuth {
    /// Tries each policy in order; the first that accepts admits. When all
    /// refuse, the failure reported is the first one about a credential the
    /// client actually sent (a bad token says more than "no API key").
    pub async fn check(&self, creds: &Credentials<'_>) -> AuthVerdict {
        let mut best: Option<AuthFailure> = None;
        let mut challenges = Vec::with_capacity(self.policies.len());
        for policy in &self.policies {
            match policy.authenticate(creds).await {
                Ok(consumer) => return self.acl(consumer),
                Err(f) => {
                    challenges.push(policy.challenge(&f));
                    let better = match &best {
                        None => true,
                        Some(b) => !b.presented && f.presented,
                    };
                    if better {
                        best = Some(f);
                    }
                }
            }
        }
        AuthVerdict::Unauthorized {
            failure: best.unwrap_or_else(|| AuthFailure::missing("no credentials")),
            challenges,
        }
    }

    fn acl(&self, consumer: Arc<Consumer>) -> AuthVerdict {
        match &self.allow_groups {
            Some(allowed) if !consumer.groups.iter().any(|g| allowed.contains(g)) => {
                let message = format!(
                    "consumer '{}' is not in any group allowed here ({})",
                    consumer.name,
                    allowed.join(", ")
                );
                AuthVerdict::Forbidden { consumer, message }
            }
            _ => AuthVerdict::Admit(consumer),
        }
    }
}

/// The value of query parameter `name`, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The value of cookie `name` from the `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_cookie_extraction() {
        assert_eq!(
            query_param(Some("a=1&api_key=s%20ecret&b"), "api_key").as_deref(),
            Some("s ecret")
        );
        assert_eq!(query_param(Some("a=1"), "api_key"), None);
        assert_eq!(query_param(None, "api_key"), None);
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("x=1; token=abc.def"),
        );
        h.append(http::header::COOKIE, HeaderValue::from_static("other=2"));
        assert_eq!(cookie(&h, "token"), Some("abc.def"));
        assert_eq!(cookie(&h, "other"), Some("2"));
        assert_eq!(cookie(&h, "nope"), None);
    }

    #[test]
    fn challenge_text_is_a_valid_header() {
        assert_eq!(sanitize_quoted("bad \"x\"\n"), "bad 'x'?");
    }
}
