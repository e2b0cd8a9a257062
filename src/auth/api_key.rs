//! API keys: a key in a header (or query parameter) names a consumer.
//!
//! Keys are never stored: the config holds the hex SHA-256 of each key
//! (`frontdesk hash-key` prints it), and a request's key is hashed and looked
//! up by digest. The lookup's timing depends only on the digest of what the
//! client sent, which says nothing about the stored keys; the final
//! comparison is constant-time as well. Keys are never logged.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{query_param, AuthFailure, AuthMethod, Consumer, Credentials};
use crate::config::ApiKeyEntry;

static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");

/// Where the key is carried.
#[derive(Debug, Clone)]
pub enum KeyLocation {
    Header(HeaderName),
    Query(String),
}

pub struct ApiKeyPolicy {
    name: Arc<str>,
    location: KeyLocation,
    keys: HashMap<[u8; 32], Arc<Consumer>>,
}

/// A problem with one key entry, for the config checker.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("sha256 must be 64 hex digits (run `frontdesk hash-key` and paste its output)")]
    BadDigest,
    #[error("consumer {0:?} is not a valid header value")]
    BadConsumer(String),
    #[error("the same key digest is listed twice")]
    Duplicate,
}

/// The hex SHA-256 of a key, as `frontdesk hash-key` prints it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeyPolicy {
    pub fn new(name: &str, location: KeyLocation) -> ApiKeyPolicy {
        ApiKeyPolicy {
            name: name.into(),
            location,
            keys: HashMap::new(),
        }
    }

    pub fn add(&mut self, entry: &ApiKeyEntry) -> Result<(), ApiKeyError> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(entry.sha256.trim(), &mut digest)
            .map_err(|_| ApiKeyError::BadDigest)?;
        let consumer_header = HeaderValue::from_str(&entry.consumer)
            .map_err(|_| ApiKeyError::BadConsumer(entry.consumer.clone()))?;
        if self.keys.contains_key(&digest) {
            return Err(ApiKeyError::Duplicate);
        }
        let consumer = Consumer {
            name: entry.consumer.clone(),
            groups: entry.groups.clone(),
            method: AuthMethod::ApiKey,
            policy: self.name.clone(),
            forward: vec![(X_CONSUMER.clone(), consumer_header)],
            claims: serde_json::Map::new(),
        };
        self.keys.insert(digest, Arc::new(consumer));
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `header="x-api-key"` or `query="api_key"`, for the challenge.
    pub fn location_param(&self) -> String {
        match &self.location {
            KeyLocation::Header(h) => format!("header=\"{h}\""),
            KeyLocation::Query(q) => format!("query=\"{q}\""),
        }
    }

    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<Arc<Consumer>, AuthFailure> {
        let presented: Option<std::borrow::Cow<'_, str>> = match &self.location {
            KeyLocation::Header(h) => creds
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().into()),
            KeyLocation::Query(q) => query_param(creds.query, q).map(Into::into),
        };
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            let where_ = match &self.location {
                KeyLocation::Header(h) => format!("the {h} header"),
                KeyLocation::Query(q) => format!("the {q} query parameter"),
            };
            return Err(AuthFailure::missing(format!(
                "no API key: send it in {where_}"
            )));
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        match self.keys.get_key_value(&digest) {
            Some((stored, consumer)) if bool::from(stored.ct_eq(&digest)) => Ok(consumer.clone()),
            _ => Err(AuthFailure::new("invalid_key", "the API key is not valid")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn policy() -> ApiKeyPolicy {
        let mut p = ApiKeyPolicy::new(
            "partners",
            KeyLocation::Header(HeaderName::from_static("x-api-key")),
        );
        p.add(&ApiKeyEntry {
            consumer: "acme".into(),
            groups: vec!["partners".into()],
            sha256: hash_key("s3cret"),
        })
        .unwrap();
        p
    }

    fn creds(headers: &HeaderMap) -> Credentials<'_> {
        Credentials {
            headers,
            query: None,
            client_cert: None,
        }
    }

    #[test]
    fn good_bad_and_missing_keys() {
        let p = policy();
        let mut h = HeaderMap::new();
        assert_eq!(p.authenticate(&creds(&h)).unwrap_err().reason, "missing");
        h.insert("x-api-key", HeaderValue::from_static("wrong"));
        assert_eq!(
            p.authenticate(&creds(&h)).unwrap_err().reason,
            "invalid_key"
        );
        h.insert("x-api-key", HeaderValue::from_static("s3cret"));
        let c = p.authenticate(&creds(&h)).unwrap();
        assert_eq!(c.name, "acme");
        assert_eq!(c.groups, vec!["partners"]);
    }

    #[test]
    fn entries_are_validated() {
        let mut p = policy();
        let bad = ApiKeyEntry {
            consumer: "x".into(),
            groups: vec![],
            sha256: "abc".into(),
        };
        assert!(matches!(p.add(&bad), Err(ApiKeyError::BadDigest)));
        let dup = ApiKeyEntry {
            consumer: "other".into(),
            groups: vec![],
            sha256: hash_key("s3cret"),
        };
        assert!(matches!(p.add(&dup), Err(ApiKeyError::Duplicate)));
    }
}
