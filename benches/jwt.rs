//! JWT verification cost per request: RS256, ES256 and HS256, on first sight
//! (signature checked; the verified-token cache off) and for a repeated
//! token (answered from the cache: one SHA-256 of the token and a lookup).
//!
//!     cargo bench --bench jwt

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use frontdesk::auth::jwt::{JwtPolicy, JwtSettings, KeySet, KeySource};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

fn settings(alg: Algorithm, token_cache: usize) -> JwtSettings {
    JwtSettings {
        algorithms: vec![alg],
        issuer: vec!["https://auth.example.com".into()],
        audience: vec!["orders-api".into()],
        leeway: Duration::from_secs(30),
        require_exp: true,
        required_claims: vec!["sub".into()],
        consumer_claim: "sub".into(),
        groups_claim: Some("roles".into()),
        forward_claims: vec![(
            "email".into(),
            http::HeaderName::from_static("x-user-email"),
        )],
        cookie: None,
        query: None,
        token_cache,
    }
}

fn claims() -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::json!({
        "sub": "alice", "roles": ["staff", "customers"], "email": "alice@example.com",
        "iss": "https://auth.example.com", "aud": "orders-api", "exp": now + 86_400,
    })
}

/// (algorithm, signing key, verification key set)
fn keys() -> Vec<(Algorithm, EncodingKey, KeySet)> {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa key");
    let rsa_priv = rsa.private_key_to_pem().expect("pem");
    let rsa_pub = rsa.public_key_to_pem().expect("pem");
    let ec = rcgen::KeyPair::generate().expect("ec key");
    let secret = b"bench-secret-bench-secret-bench-secret";
    vec![
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&rsa_priv).expect("rsa"),
            KeySet::from_pem(&rsa_pub).expect("rsa pub"),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec"),
            KeySet::from_pem(ec.public_key_pem().as_bytes()).expect("ec pub"),
        ),
        (
            Algorithm::HS256,
            EncodingKey::from_secret(secret).expect("hs"),
            KeySet::from_secret(secret).expect("hs"),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("jwt_verify");
    for (alg, signer, set) in keys() {
        let token = encode(&Header::new(alg), &claims(), &signer).expect("sign");
        let set = Arc::new(set);
        let first = JwtPolicy::new("b", settings(alg, 0), KeySource::Static(set.clone()));
        let repeat = JwtPolicy::new("b", settings(alg, 10_000), KeySource::Static(set));
        // Static keys never wait on I/O, so a trivial executor is enough.
        let run = |p: &JwtPolicy| futures::executor::block_on(p.verify(&token));
        assert!(run(&first).is_ok() && run(&repeat).is_ok());
        g.bench_function(format!("{alg:?}/first_sight"), |b| b.iter(|| run(&first)));
        g.bench_function(format!("{alg:?}/repeated"), |b| b.iter(|| run(&repeat)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
