//! `[auth.NAME]` blocks into [`AuthPolicy`] values: key files read, secrets
//! taken from the environment, digests checked. Problems are reported
//! through a callback with the key they concern (relative to the block), so
//! the gateway can locate them in the file; every problem is reported, not
//! just the first.

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::AlgorithmFamily;

use super::api_key::{ApiKeyPolicy, KeyLocation};
use super::jwt::{parse_algorithm, JwtPolicy, JwtSettings, KeySet, KeySource, RemoteJwks};
use super::mtls::MtlsPolicy;
use super::AuthPolicy;
use crate::config::{ApiKeySection, ApiKeysFile, AuthSection, JwtSection};
use crate::gateway::resolve_path;

/// Compiles one block. `report(key, message)` records a problem; the block
/// is returned only when it had none.
pub fn policy(
    name: &str,
    section: &AuthSection,
    base_dir: &Path,
    has_client_ca: bool,
    report: &mut dyn FnMut(&str, String),
) -> Option<AuthPolicy> {
    match section {
        AuthSection::Jwt(j) => jwt(name, j, base_dir, report).map(|p| AuthPolicy::Jwt(Box::new(p))),
        AuthSection::ApiKey(a) => api_key(name, a, base_dir, report).map(AuthPolicy::ApiKey),
        AuthSection::Mtls(m) => {
            if !has_client_ca {
                report(
                    "type",
                    "mtls needs a [[server.tls]] listener with client_ca = \"...\" (the CA bundle that signs client certificates)".into(),
                );
                return None;
            }
            Some(AuthPolicy::Mtls(MtlsPolicy::new(name, m.consumer_from)))
        }
    }
}

fn header_name(s: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(s.as_bytes()).ok()
}

fn jwt(
    name: &str,
    j: &JwtSection,
    base_dir: &Path,
    report: &mut dyn FnMut(&str, String),
) -> Option<JwtPolicy> {
    let mut ok = true;
    let mut algorithms = Vec::new();
    for a in &j.algorithms {
        match parse_algorithm(a) {
            Ok(alg) => algorithms.push(alg),
            Err(e) => {
                report("algorithms", e);
                ok = false;
            }
        }
    }
    if j.algorithms.is_empty() {
        report(
            "algorithms",
            "list the algorithms to accept, e.g. [\"RS256\"]".into(),
        );
        ok = false;
    }
    let sources = [
        j.jwks.is_some(),
        j.public_key.is_some(),
        j.secret_env.is_some(),
    ];
    let keys = match sources.iter().filter(|s| **s).count() {
        0 => {
            report(
                "",
                "give one key source: jwks (file or URL), public_key (PEM file) or secret_env (HS* secret)".into(),
            );
            None
        }
        1 => key_source(j, base_dir, report),
        _ => {
            report("", "give only one of jwks, public_key, secret_env".into());
            None
        }
    };
    // The allow-list must fit the key material: an HMAC algorithm with a
    // public key is exactly the RS/HS confusion attack.
    let families: Option<Vec<AlgorithmFamily>> = match &keys {
        Some(KeySource::Static(set)) => Some(set.families()),
        _ => None,
    };
    for alg in &algorithms {
        let fam = alg.family();
        let fits = match (&families, j.secret_env.is_some()) {
            (_, true) => fam == AlgorithmFamily::Hmac,
            (Some(f), false) => f.contains(&fam),
            // A JWKS: asymmetric algorithms only (HMAC keys are not published).
            (None, false) => fam != AlgorithmFamily::Hmac,
        };
        if !fits {
            let why = if fam == AlgorithmFamily::Hmac {
                "HMAC algorithms need secret_env"
            } else if j.secret_env.is_some() {
                "a shared secret can only verify HS256/HS384/HS512"
            } else {
                "the key is of another type"
            };
            report("algorithms", format!("{alg:?} does not fit the key: {why}"));
            ok = false;
        }
    }
    let mut forward_claims = Vec::new();
    for (claim, header) in &j.forward_claims {
        match header_name(header) {
            Some(h) if h != http::header::HOST && h != http::header::AUTHORIZATION => {
                forward_claims.push((claim.clone(), h))
            }
            _ => {
                report(
                    "forward_claims",
                    format!("{header:?} is not a header name the gateway may set"),
                );
                ok = false;
            }
        }
    }
    if j.consumer_claim.is_empty() {
        report("consumer_claim", "must name a claim, e.g. \"sub\"".into());
        ok = false;
    }
    let keys = keys?;
    if !ok {
        return None;
    }
    let settings = JwtSettings {
        algorithms,
        issuer: j.issuer.0.clone(),
        audience: j.audience.0.clone(),
        leeway: j.leeway,
        require_exp: j.require_exp,
        required_claims: j.required_claims.clone(),
        consumer_claim: j.consumer_claim.clone(),
        groups_claim: j.groups_claim.clone(),
        forward_claims,
        cookie: j.cookie.clone(),
        query: j.query.clone(),
        token_cache: j.token_cache,
    };
    Some(JwtPolicy::new(name, settings, keys))
}

fn key_source(
    j: &JwtSection,
    base_dir: &Path,
    report: &mut dyn FnMut(&str, String),
) -> Option<KeySource> {
    if let Some(var) = &j.secret_env {
        return match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => match KeySet::from_secret(secret.as_bytes()) {
                Ok(set) => Some(KeySource::Static(Arc::new(set))),
                Err(e) => {
                    report("secret_env", e);
                    None
                }
            },
            _ => {
                report(
                    "secret_env",
                    format!("environment variable {var} is not set (or empty): it must hold the HMAC secret"),
                );
                None
            }
        };
    }
    if let Some(pem) = &j.public_key {
        let path = resolve_path(base_dir, pem);
        return match std::fs::read(&path) {
            Ok(bytes) => match KeySet::from_pem(&bytes) {
                Ok(set) => Some(KeySource::Static(Arc::new(set))),
                Err(e) => {
                    report("public_key", format!("{}: {e}", path.display()));
                    None
                }
            },
            Err(e) => {
                report("public_key", format!("cannot read {}: {e}", path.display()));
                None
            }
        };
    }
    let jwks = j.jwks.as_deref()?;
    if jwks.starts_with("http://") || jwks.starts_with("https://") {
        if jwks.parse::<http::Uri>().is_err() {
            report("jwks", format!("{jwks:?} is not a valid URL"));
            return None;
        }
        return match RemoteJwks::new(jwks, j.jwks_timeout, j.jwks_refresh, j.jwks_min_refetch) {
            Ok(r) => Some(KeySource::Remote(Arc::new(r))),
            Err(e) => {
                report("jwks", e);
                None
            }
        };
    }
    let path = resolve_path(base_dir, jwks);
    match std::fs::read(&path) {
        Ok(bytes) => match KeySet::from_jwks(&bytes) {
            Ok(set) => Some(KeySource::Static(Arc::new(set))),
            Err(e) => {
                report("jwks", format!("{}: {e}", path.display()));
                None
            }
        },
        Err(e) => {
            report(
                "jwks",
                format!(
                    "cannot read {} (a JWKS file, or an http(s) URL): {e}",
                    path.display()
                ),
            );
            None
        }
    }
}

fn api_key(
    name: &str,
    a: &ApiKeySection,
    base_dir: &Path,
    report: &mut dyn FnMut(&str, String),
) -> Option<ApiKeyPolicy> {
    let location = match (&a.header, &a.query) {
        (Some(_), Some(_)) => {
            report("", "give header or query, not both".into());
            return None;
        }
        (Some(h), None) => match header_name(h) {
            Some(h) => KeyLocation::Header(h),
            None => {
                report("header", format!("{h:?} is not a header name"));
                return None;
            }
        },
        (None, Some(q)) if !q.is_empty() => KeyLocation::Query(q.clone()),
        (None, Some(_)) => {
            report("query", "must name a query parameter".into());
            return None;
        }
        (None, None) => KeyLocation::Header(HeaderName::from_static("x-api-key")),
    };
    let mut policy = ApiKeyPolicy::new(name, location);
    let mut ok = true;
    for (i, k) in a.keys.iter().enumerate() {
        if let Err(e) = policy.add(k) {
            report(&format!("keys[{i}]"), e.to_string());
            ok = false;
        }
    }
    if let Some(file) = &a.keys_file {
        let path = resolve_path(base_dir, file);
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| {
                toml::from_str::<ApiKeysFile>(&text)
                    .map_err(|e| format!("{}: {}", path.display(), e.message().trim()))
            });
        match parsed {
            Ok(f) => {
                for (i, k) in f.keys.iter().enumerate() {
                    if let Err(e) = policy.add(k) {
                        report("keys_file", format!("{} keys[{i}]: {e}", path.display()));
                        ok = false;
                    }
                }
            }
            Err(e) => {
                report("keys_file", e);
                ok = false;
            }
        }
    }
    if ok && policy.is_empty() {
        report("keys", "no keys: add keys = [...] or keys_file".into());
        ok = false;
    }
    ok.then_some(policy)
}
