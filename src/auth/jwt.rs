//! JWT bearer tokens, verified with the `jsonwebtoken` crate.
//!
//! Keys come from one source per policy: a PEM public key (RSA, EC or
//! Ed25519), an HMAC secret read from an environment variable (never from the
//! file), a JWKS file, or a JWKS URL. A URL key set is fetched on first need,
//! refreshed in the background every `jwks_refresh`, and fetched again when a
//! token names an unknown `kid` (at most once per `jwks_min_refetch`, so a
//! flood of made-up kids cannot hammer the identity provider). A failed fetch
//! keeps the last good key set.
//!
//! Defences: the header's `alg` must be on the policy's allow-list and of
//! the same family as the key (an RSA public key is never used as an HMAC
//! secret; `none` cannot be configured and does not parse). `exp` is required
//! by default; `nbf`, `iss`, `aud` and `required_claims` are checked with
//! `leeway`.
//!
//! Verified tokens are remembered in a bounded cache (TinyUFO, through
//! `pingora-memory-cache`) keyed by the token's SHA-256, until `exp` and at
//! most [`MAX_CACHE_TTL`], so a client repeating its token skips the
//! signature check. The cache belongs to the compiled policy: a reload
//! starts a fresh one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use pingora_memory_cache::MemoryCache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{cookie, query_param, AuthFailure, AuthMethod, Consumer, Credentials};

static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");

/// Longest time a verified token is remembered, whatever its `exp`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

type Claims = Map<String, Value>;

/// One verification key.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The one algorithm this key may be used with, when the JWK says.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// The keys a policy may verify with.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures (unknown
    /// types, `use: enc`) are skipped; a set with no usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                // Symmetric secrets do not belong in a published key set.
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::try_from(a).ok());
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable signature key among its {} keys",
                set.keys.len()
            ));
        }
        Ok(KeySet { keys })
    }

    /// Reads a PEM public key of any supported type.
    pub fn from_pem(pem: &[u8]) -> Result<KeySet, String> {
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(|_| "not a PEM RSA, EC or Ed25519 public key".to_string())?;
        Ok(KeySet {
            keys: vec![VerifyKey {
                kid: None,
                alg: None,
                key,
            }],
        })
    }

    pub fn from_secret(secret: &[u8]) -> Result<KeySet, String> {
        let key = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        Ok(KeySet {
            keys: vec![VerifyKey {
                kid: None,
                alg: None,
                key,
            }],
        })
    }

    /// Families of the keys held.
    pub fn families(&self) -> Vec<AlgorithmFamily> {
        let mut out: Vec<AlgorithmFamily> = Vec::new();
        for k in &self.keys {
            if !out.contains(&k.key.family()) {
                out.push(k.key.family());
            }
        }
        out
    }

    /// Keys usable for a token with this `kid` and `alg`. A static key (no
    /// kid) serves every token; a key with a kid only serves tokens naming it.
    fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            let kid_ok = match (kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) | (None, _) => true,
            };
            kid_ok && k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg)
        })
    }
}

/// A key set fetched from a URL.
pub struct RemoteJwks {
    pub url: String,
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    fetched_at: Mutex<Option<Instant>>,
    /// Serializes fetches; holds when the last one started.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    refresh: Duration,
    min_refetch: Duration,
}

impl RemoteJwks {
    pub fn new(
        url: &str,
        timeout: Duration,
        refresh: Duration,
        min_refetch: Duration,
    ) -> Result<RemoteJwks, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RemoteJwks {
            url: url.to_string(),
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetched_at: Mutex::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
            refresh,
            min_refetch,
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    fn is_stale(&self) -> bool {
        let at = self.fetched_at.lock().map(|g| *g).unwrap_or(None);
        at.is_none_or(|t| t.elapsed() >= self.refresh)
    }

    async fn fetch(&self) -> Result<usize, String> {
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        let set = KeySet::from_jwks(&body)?;
        let n = set.keys.len();
        self.keys.store(Arc::new(set));
        if let Ok(mut at) = self.fetched_at.lock() {
            *at = Some(Instant::now());
        }
        Ok(n)
    }

    async fn fetch_logged(&self) {
        match self.fetch().await {
            Ok(n) => log::info!("JWKS {}: {n} keys loaded", self.url),
            Err(e) => log::warn!(
                "JWKS {}: fetch failed, keeping the last good key set: {e}",
                self.url
            ),
        }
    }

    /// Fetches again unless a fetch started less than `min_refetch` ago.
    /// Concurrent callers wait for the fetch in progress instead of starting
    /// their own.
    pub async fn refetch(&self) {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_logged().await;
    }

    /// Starts a background refresh when the set is older than `refresh`.
    fn refresh_if_stale(self: &Arc<Self>) {
        if !self.is_stale() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.refetch().await;
            me.refreshing.store(false, Ordering::Release);
        });
    }
}

/// Where a policy's keys come from.
pub enum KeySource {
    Static(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

#[derive(Clone)]
struct CachedToken {
    digest: [u8; 32],
    consumer: Arc<Consumer>,
    /// Unix seconds after which the token is no longer good (`exp` + leeway).
    expires: u64,
}

/// Settings of a JWT policy, as compiled from `[auth.NAME]`.
pub struct JwtSettings {
    pub algorithms: Vec<Algorithm>,
    pub issuer: Vec<String>,
    pub audience: Vec<String>,
    pub leeway: Duration,
    pub require_exp: bool,
    pub required_claims: Vec<String>,
    pub consumer_claim: String,
    pub groups_claim: Option<String>,
    /// (claim, header) pairs.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub cookie: Option<String>,
    pub query: Option<String>,
    pub token_cache: usize,
}

pub struct JwtPolicy {
    name: Arc<str>,
    settings: JwtSettings,
    keys: KeySource,
    /// One validation per allowed algorithm: jsonwebtoken wants every
    /// algorithm of a `Validation` to be of the key's family.
    validations: Vec<(Algorithm, Validation)>,
    cache: Option<MemoryCache<[u8; 32], CachedToken>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtPolicy {
    pub fn new(name: &str, settings: JwtSettings, keys: KeySource) -> JwtPolicy {
        let validations = settings
            .algorithms
            .iter()
            .map(|alg| (*alg, validation_for(*alg, &settings)))
            .collect();
        let cache = (settings.token_cache > 0).then(|| MemoryCache::new(settings.token_cache));
        JwtPolicy {
            name: name.into(),
            settings,
            keys,
            validations,
            cache,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_source(&self) -> &KeySource {
        &self.keys
    }

    pub fn forwarded_header_names(&self) -> Vec<HeaderName> {
        let mut v = vec![X_CONSUMER.clone()];
        v.extend(self.settings.forward_claims.iter().map(|(_, h)| h.clone()));
        v
    }

    /// The token: `Authorization: Bearer`, else the configured cookie or
    /// query parameter.
    fn token<'a>(&self, creds: &'a Credentials<'_>) -> Option<std::borrow::Cow<'a, str>> {
        let bearer = creds
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        if let Some(t) = bearer {
            return Some(t.into());
        }
        if let Some(name) = &self.settings.cookie {
            if let Some(t) = cookie(creds.headers, name).filter(|t| !t.is_empty()) {
                return Some(t.into());
            }
        }
        if let Some(name) = &self.settings.query {
            if let Some(t) = query_param(creds.query, name).filter(|t| !t.is_empty()) {
                return Some(t.into());
            }
        }
        None
    }

    pub async fn authenticate(
        &self,
        creds: &Credentials<'_>,
    ) -> Result<Arc<Consumer>, AuthFailure> {
        let Some(token) = self.token(creds) else {
            return Err(AuthFailure::missing(
                "no bearer token: send Authorization: Bearer <token>",
            ));
        };
        self.verify(&token).await
    }

    /// Verifies a token (or finds it in the cache) and builds its consumer.
    pub async fn verify(&self, token: &str) -> Result<Arc<Consumer>, AuthFailure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cache) = &self.cache {
            if let (Some(hit), _) = cache.get(&digest) {
                // The cache is keyed by a 64-bit hash of the digest: compare
                // the whole digest before trusting the entry.
                if hit.digest == digest && now_secs() <= hit.expires {
                    return Ok(hit.consumer);
                }
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_failure(token))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthFailure::new(
                "bad_algorithm",
                format!(
                    "token algorithm {:?} is not allowed here (allowed: {})",
                    header.alg,
                    self.algorithm_list()
                ),
            ));
        };
        let kid = header.kid.as_deref();
        let set = match &self.keys {
            KeySource::Static(set) => set.clone(),
            KeySource::Remote(remote) => {
                let set = remote.current();
                if set.candidates(kid, header.alg).next().is_some() {
                    remote.refresh_if_stale();
                    set
                } else {
                    // Unknown kid (or nothing fetched yet): the provider may
                    // have rotated its keys.
                    remote.refetch().await;
                    remote.current()
                }
            }
        };
        let mut last_err = None;
        for key in set.candidates(kid, header.alg) {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return self.admit(digest, data.claims),
                Err(e) => {
                    let failure = map_error(&e);
                    // Only a bad signature means "try the next key".
                    if failure.reason != "bad_signature" {
                        return Err(failure);
                    }
                    last_err = Some(failure);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| match kid {
            Some(k) => AuthFailure::new(
                "unknown_key",
                format!("token key id {k:?} is not in the key set"),
            ),
            None => AuthFailure::new(
                "unknown_key",
                format!("no key can verify a {:?} token", header.alg),
            ),
        }))
    }

    fn algorithm_list(&self) -> String {
        self.settings
            .algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn admit(&self, digest: [u8; 32], claims: Claims) -> Result<Arc<Consumer>, AuthFailure> {
        for c in &self.settings.required_claims {
            if !claims.contains_key(c) {
                return Err(AuthFailure::new(
                    "missing_claim",
                    format!("token lacks the required claim {c:?}"),
                ));
            }
        }
        let name = match claims.get(&self.settings.consumer_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(AuthFailure::new(
                    "missing_claim",
                    format!(
                        "token lacks the consumer claim {:?}",
                        self.settings.consumer_claim
                    ),
                ))
            }
        };
        let groups = match self
            .settings
            .groups_claim
            .as_ref()
            .and_then(|g| claims.get(g))
        {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            // A space-separated string, as OAuth's `scope` is.
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let mut forward = Vec::with_capacity(1 + self.settings.forward_claims.len());
        match HeaderValue::from_str(&name) {
            Ok(v) => forward.push((X_CONSUMER.clone(), v)),
            Err(_) => {
                return Err(AuthFailure::new(
                    "invalid_token",
                    "the consumer claim is not printable text",
                ))
            }
        }
        for (claim, header) in &self.settings.forward_claims {
            let text = match claims.get(claim) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            // A claim that cannot be a header value is not forwarded.
            if let Ok(v) = HeaderValue::from_str(&text) {
                forward.push((header.clone(), v));
            }
        }
        let consumer = Arc::new(Consumer {
            name,
            groups,
            method: AuthMethod::Jwt,
            policy: self.name.clone(),
            forward,
            claims,
        });
        if let Some(cache) = &self.cache {
            let now = now_secs();
            let expires = consumer
                .claims
                .get("exp")
                .and_then(Value::as_u64)
                .map(|e| e.saturating_add(self.settings.leeway.as_secs()))
                .unwrap_or(now + MAX_CACHE_TTL.as_secs());
            let ttl = Duration::from_secs(expires.saturating_sub(now)).min(MAX_CACHE_TTL);
            let entry = CachedToken {
                digest,
                consumer: consumer.clone(),
                expires,
            };
            cache.put(&digest, entry, Some(ttl));
        }
        Ok(consumer)
    }
}

fn validation_for(alg: Algorithm, settings: &JwtSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.leeway.as_secs();
    v.validate_nbf = true;
    v.required_spec_claims.clear();
    if settings.require_exp {
        v.required_spec_claims.insert("exp".into());
    }
    if !settings.issuer.is_empty() {
        v.set_issuer(&settings.issuer);
        v.required_spec_claims.insert("iss".into());
    }
    if settings.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&settings.audience);
        v.required_spec_claims.insert("aud".into());
    }
    v
}

/// Why the header of a token did not parse, in words.
fn header_failure(token: &str) -> AuthFailure {
    use base64::Engine;
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_string));
    match alg {
        Some(a) if a.eq_ignore_ascii_case("none") => AuthFailure::new(
            "bad_algorithm",
            "unsigned tokens (alg \"none\") are never accepted",
        ),
        Some(a) => AuthFailure::new(
            "bad_algorithm",
            format!("token algorithm {a:?} is not supported"),
        ),
        None => AuthFailure::new("invalid_token", "the token is not a well-formed JWT"),
    }
}

fn map_error(e: &jsonwebtoken::errors::Error) -> AuthFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => AuthFailure::new("expired", "the token has expired"),
        K::ImmatureSignature => {
            AuthFailure::new("not_yet_valid", "the token is not valid yet (nbf)")
        }
        K::InvalidIssuer => AuthFailure::new("bad_issuer", "the token's issuer is not accepted"),
        K::InvalidAudience => {
            AuthFailure::new("bad_audience", "the token is not meant for this audience")
        }
        K::InvalidSignature => {
            AuthFailure::new("bad_signature", "the token's signature is invalid")
        }
        K::MissingRequiredClaim(c) => AuthFailure::new(
            "missing_claim",
            format!("token lacks the required claim {c:?}"),
        ),
        K::InvalidClaimFormat(c) => {
            AuthFailure::new("invalid_token", format!("token claim {c:?} is malformed"))
        }
        K::InvalidAlgorithm | K::UnsupportedAlgorithm => AuthFailure::new(
            "bad_algorithm",
            "the token's algorithm does not match the key",
        ),
        _ => AuthFailure::new("invalid_token", "the token is not a well-formed JWT"),
    }
}

/// Parses an allow-list entry; `none` is refused outright.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("\"none\" (unsigned tokens) is never accepted".into());
    }
    name.parse::<Algorithm>().map_err(|_| {
        format!(
            "{name:?} is not a JWT algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn settings(algs: &[Algorithm]) -> JwtSettings {
        JwtSettings {
            algorithms: algs.to_vec(),
            issuer: vec!["https://auth.example.com".into()],
            audience: vec!["orders-api".into()],
            leeway: Duration::from_secs(5),
            require_exp: true,
            required_claims: vec!["sub".into()],
            consumer_claim: "sub".into(),
            groups_claim: Some("roles".into()),
            forward_claims: vec![("email".into(), HeaderName::from_static("x-user-email"))],
            cookie: None,
            query: None,
            token_cache: 100,
        }
    }

    fn claims(exp_offset: i64) -> Value {
        let now = now_secs() as i64;
        json!({
            "sub": "alice", "roles": ["staff"], "email": "a@example.com",
            "iss": "https://auth.example.com", "aud": "orders-api",
            "exp": now + exp_offset,
        })
    }

    fn hs_policy() -> JwtPolicy {
        let keys = KeySet::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        JwtPolicy::new(
            "users",
            settings(&[Algorithm::HS256]),
            KeySource::Static(Arc::new(keys)),
        )
    }

    fn hs_token(c: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn valid_token_gives_a_consumer_and_is_cached() {
        let p = hs_policy();
        let t = hs_token(&claims(60));
        let c = block_on(p.verify(&t)).unwrap();
        assert_eq!(c.name, "alice");
        assert_eq!(c.groups, vec!["staff"]);
        assert!(c
            .forward
            .iter()
            .any(|(h, v)| h == "x-user-email" && v == "a@example.com"));
        let again = block_on(p.verify(&t)).unwrap();
        assert!(Arc::ptr_eq(&c, &again), "second sight comes from the cache");
    }

    #[test]
    fn refusals_have_reasons() {
        let p = hs_policy();
        let reason = |t: &str| block_on(p.verify(t)).unwrap_err().reason;
        assert_eq!(reason(&hs_token(&claims(-60))), "expired");
        let mut c = claims(60);
        c["iss"] = json!("https://evil.example.com");
        assert_eq!(reason(&hs_token(&c)), "bad_issuer");
        let mut c = claims(60);
        c["aud"] = json!("other");
        assert_eq!(reason(&hs_token(&c)), "bad_audience");
        let mut c = claims(60);
        c["nbf"] = json!(now_secs() + 3600);
        assert_eq!(reason(&hs_token(&c)), "not_yet_valid");
        let mut c = claims(60);
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(reason(&hs_token(&c)), "missing_claim");
        let other = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx").unwrap(),
        )
        .unwrap();
        assert_eq!(reason(&other), "bad_signature");
        assert_eq!(reason("garbage"), "invalid_token");
        // alg: none, hand-made.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                claims(60).to_string()
            )
        );
        assert_eq!(reason(&none), "bad_algorithm");
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &claims(60),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap();
        assert_eq!(reason(&hs384), "bad_algorithm");
    }

    #[test]
    fn algorithm_names() {
        assert!(parse_algorithm("none").is_err());
        assert!(parse_algorithm("NONE").is_err());
        assert_eq!(parse_algorithm("RS256").unwrap(), Algorithm::RS256);
        assert!(parse_algorithm("XS1").is_err());
    }

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"sym"},
            {"kty":"EC","crv":"P-256","kid":"ec1","use":"sig","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"XYZ","kid":"future"}
        ]}"#;
        let set = KeySet::from_jwks(doc).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("ec1"));
        assert_eq!(set.keys[0].alg, Some(Algorithm::ES256));
        assert!(KeySet::from_jwks(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::from_jwks(b"nope").is_err());
    }
}
