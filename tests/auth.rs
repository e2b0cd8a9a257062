//! Authentication through the real binary: JWT (JWKS served by a local HTTP
//! server and rotated during the test, a PEM public key, an HMAC secret from
//! the environment), API keys, client certificates, ACLs, and the promise
//! that a refused request never reaches the backend.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use openssl::rsa::Rsa;
use serde_json::{json, Value};

use common::{binary, client, free_port, upstream, Backend, Gateway};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An RSA key pair for signing test tokens.
struct RsaKey {
    private_pem: Vec<u8>,
    public_pem: Vec<u8>,
    jwk: Value,
}

fn rsa_key(kid: &str) -> RsaKey {
    let rsa = Rsa::generate(2048).unwrap();
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
        "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
    });
    RsaKey {
        private_pem: rsa.private_key_to_pem().unwrap(),
        public_pem: rsa.public_key_to_pem().unwrap(),
        jwk,
    }
}

fn sign_rs256(key: &RsaKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&key.private_pem).unwrap(),
    )
    .unwrap()
}

fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({
        "sub": sub, "roles": roles, "email": format!("{sub}@example.com"),
        "iss": "https://auth.example.com", "aud": "orders-api",
        "iat": now(), "exp": now() + 600,
    })
}

/// A JWKS endpoint whose document and status the test changes while the
/// gateway runs. Counts fetches.
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<String>>,
    status: Arc<AtomicU16>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(keys: &[&RsaKey]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(String::new()));
        let status = Arc::new(AtomicU16::new(200));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (d, s, f) = (doc.clone(), status.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (d, s, f) = (d.clone(), s.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = d.lock().unwrap().clone();
                        let status = s.load(Ordering::SeqCst);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let server = JwksServer {
            addr,
            doc,
            status,
            fetches,
            task,
        };
        server.publish(keys);
        server
    }

    fn publish(&self, keys: &[&RsaKey]) {
        let jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        *self.doc.lock().unwrap() = jwks.to_string();
    }
}

async fn get_with(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, h, body)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_with_a_jwks_url_admits_valid_tokens_and_refuses_the_rest() {
    let b = Backend::start("orders").await;
    let k1 = rsa_key("k1");
    let jwks = JwksServer::start(&[&k1]).await;
    let body = format!(
        r#"{}
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "orders"
auth = "users"

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "orders"
auth = "users"
allow_groups = ["staff"]

[auth.users]
type = "jwt"
algorithms = ["RS256", "ES256"]
jwks = "http://{}/jwks.json"
jwks_min_refetch = "200ms"
issuer = "https://auth.example.com"
audience = "orders-api"
leeway = "5s"
required_claims = ["sub"]
consumer_claim = "sub"
groups_claim = "roles"
forward_claims = {{ sub = "x-user-id", email = "x-user-email" }}
"#,
        upstream("orders", &[&b], ""),
        jwks.addr
    );
    let gw = Gateway::start("", &body).await;

    // A valid token: admitted, identity forwarded, client's spoofed copies replaced.
    let good = sign_rs256(&k1, Some("k1"), &claims("alice", &["customers"]));
    let (status, _, echo) = get_with(
        &gw,
        "/orders/1",
        &[
            ("authorization", &bearer(&good)),
            ("x-user-id", "mallory"),
            ("x-consumer", "mallory"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{echo}\n{}", gw.stderr());
    assert_eq!(echo["headers"]["x-user-id"], "alice");
    assert_eq!(echo["headers"]["x-consumer"], "alice");
    assert_eq!(echo["headers"]["x-user-email"], "alice@example.com");
    assert_eq!(b.hits(), 1);
    // The same token again (from the verified-token cache).
    let (status, _, _) = get_with(&gw, "/orders/2", &[("authorization", &bearer(&good))]).await;
    assert_eq!(status, 200);
    assert_eq!(b.hits(), 2);

    // Every kind of bad credential: 401, a challenge, a JSON body, no backend hit.
    let other = rsa_key("k1"); // same kid, different key: a forged signature
    let mut expired = claims("alice", &[]);
    expired["exp"] = json!(now() - 3600);
    let mut early = claims("alice", &[]);
    early["nbf"] = json!(now() + 3600);
    let mut wrong_iss = claims("alice", &[]);
    wrong_iss["iss"] = json!("https://evil.example.com");
    let mut wrong_aud = claims("alice", &[]);
    wrong_aud["aud"] = json!("billing-api");
    let mut no_sub = claims("alice", &[]);
    no_sub.as_object_mut().unwrap().remove("sub");
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims("alice", &[]).to_string())
    );
    // The classic key confusion: HS256 with the RSA public key as the secret.
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let confused = encode(
        &hs_header,
        &claims("alice", &[]),
        &EncodingKey::from_secret(&k1.public_pem).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing token", None, "missing"),
        (
            "expired",
            Some(sign_rs256(&k1, Some("k1"), &expired)),
            "expired",
        ),
        (
            "not yet valid",
            Some(sign_rs256(&k1, Some("k1"), &early)),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            Some(sign_rs256(&k1, Some("k1"), &wrong_iss)),
            "bad_issuer",
        ),
        (
            "wrong audience",
            Some(sign_rs256(&k1, Some("k1"), &wrong_aud)),
            "bad_audience",
        ),
        (
            "no sub",
            Some(sign_rs256(&k1, Some("k1"), &no_sub)),
            "missing_claim",
        ),
        (
            "bad signature",
            Some(sign_rs256(&other, Some("k1"), &claims("alice", &[]))),
            "bad_signature",
        ),
        ("alg none", Some(none_token), "bad_algorithm"),
        ("HS256 with the public key", Some(confused), "bad_algorithm"),
        (
            "unknown kid",
            Some(sign_rs256(&other, Some("nobody"), &claims("alice", &[]))),
            "unknown_key",
        ),
        ("garbage", Some("not.a.jwt".into()), "invalid_token"),
    ];
    for (what, token, reason) in &cases {
        let auth = token.as_ref().map(|t| bearer(t));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let (status, h, body) = get_with(&gw, "/orders/1", &headers).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = h
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert_eq!(body["status"], 401, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
        assert!(body["request_id"].as_str().is_some(), "{what}");
        let metrics = common::metrics(&gw).await;
        let line = format!("frontdesk_auth_failures_total{{reason=\"{reason}\",route=\"orders\"}}");
        assert!(metrics.contains(&line), "{what}: no {line} in\n{metrics}");
    }
    assert_eq!(b.hits(), 2, "no refused request reached the backend");

    // ACL: a valid consumer outside allow_groups gets 403; staff get in.
    let (status, _, body) = get_with(&gw, "/admin/x", &[("authorization", &bearer(&good))]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("alice"), "{body}");
    let staff = sign_rs256(&k1, Some("k1"), &claims("bob", &["staff"]));
    let (status, _, _) = get_with(&gw, "/admin/x", &[("authorization", &bearer(&staff))]).await;
    assert_eq!(status, 200);
    assert_eq!(b.hits(), 3);

    // Rotation: the provider publishes k2 and drops k1; a token naming k2
    // makes the gateway fetch the set again.
    let k2 = rsa_key("k2");
    jwks.publish(&[&k2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fetches_before = jwks.fetches.load(Ordering::SeqCst);
    let rotated = sign_rs256(&k2, Some("k2"), &claims("carol", &[]));
    let (status, _, echo) =
        get_with(&gw, "/orders/9", &[("authorization", &bearer(&rotated))]).await;
    assert_eq!(status, 200, "{echo}\n{}", gw.stderr());
    assert_eq!(echo["headers"]["x-user-id"], "carol");
    assert!(jwks.fetches.load(Ordering::SeqCst) > fetches_before);

    // The provider breaks: the last good key set stays in use.
    jwks.status.store(500, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unknown = sign_rs256(&k2, Some("k3"), &claims("dave", &[]));
    let (status, _, _) = get_with(&gw, "/orders/9", &[("authorization", &bearer(&unknown))]).await;
    assert_eq!(status, 401);
    let fresh = sign_rs256(&k2, Some("k2"), &claims("erin", &[]));
    let (status, _, _) = get_with(&gw, "/orders/9", &[("authorization", &bearer(&fresh))]).await;
    assert_eq!(status, 200, "kept the last good key set");

    // The access log names consumers and never holds a token.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.access_log();
    assert!(log.contains("\"consumer\":\"alice\""), "{log}");
    assert!(
        !log.contains(&good[..40]),
        "a token leaked into the access log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_a_pem_key_or_an_env_secret_and_api_keys_on_one_route() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    // ES256 via a PEM public key file (relative to the config's folder).
    let ec = rcgen::KeyPair::generate().unwrap();
    let pub_path = dir.path().join("es.pub.pem");
    std::fs::write(&pub_path, ec.public_key_pem()).unwrap();
    let es_signer = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    // HS256 via an environment variable the gateway inherits.
    let secret = "a-test-secret-that-is-long-enough-1234";
    std::env::set_var("FRONTDESK_TEST_JWT_SECRET", secret);
    let keys_file = dir.path().join("api-keys.toml");
    let hash = |k: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(k.as_bytes()));
    std::fs::write(
        &keys_file,
        format!(
            "keys = [{{ consumer = \"globex\", groups = [\"partners\"], sha256 = \"{}\" }}]\n",
            hash("globex-key")
        ),
    )
    .unwrap();
    let body = format!(
        r#"{}
[[routes]]
name = "es"
path_prefix = "/es"
upstream = "pool"
auth = "es"

[[routes]]
name = "mixed"
path_prefix = "/mixed"
upstream = "pool"
auth = ["hs", "partners"]

[[routes]]
name = "query-key"
path_prefix = "/q"
upstream = "pool"
auth = "by-query"

[auth.es]
type = "jwt"
algorithms = ["ES256"]
public_key = "{}"

[auth.hs]
type = "jwt"
algorithms = ["HS256"]
secret_env = "FRONTDESK_TEST_JWT_SECRET"
cookie = "session"

[auth.partners]
type = "api_key"
header = "x-api-key"
keys = [{{ consumer = "acme", groups = ["partners"], sha256 = "{}" }}]
keys_file = "{}"

[auth.by-query]
type = "api_key"
query = "api_key"
keys = [{{ consumer = "initech", sha256 = "{}" }}]
"#,
        upstream("pool", &[&b], ""),
        pub_path.display(),
        hash("acme-key"),
        keys_file.display(),
        hash("initech-key"),
    );
    let gw = Gateway::start("", &body).await;
    let exp = now() + 600;

    let es_token = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "svc-a", "exp": exp}),
        &es_signer,
    )
    .unwrap();
    let (status, _, echo) = get_with(&gw, "/es/1", &[("authorization", &bearer(&es_token))]).await;
    assert_eq!(status, 200, "{echo}\n{}", gw.stderr());
    assert_eq!(echo["headers"]["x-consumer"], "svc-a");
    // An ES256 token signed by another key.
    let stranger = rcgen::KeyPair::generate().unwrap();
    let forged = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "svc-a", "exp": exp}),
        &EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (status, _, _) = get_with(&gw, "/es/1", &[("authorization", &bearer(&forged))]).await;
    assert_eq!(status, 401);
    // A token without exp is refused by default.
    let no_exp = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "svc-a"}),
        &es_signer,
    )
    .unwrap();
    let (status, _, body) = get_with(&gw, "/es/1", &[("authorization", &bearer(&no_exp))]).await;
    assert_eq!(status, 401, "{body}");

    // The mixed route: an HS256 token (header or cookie) or an API key.
    let hs_token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "web-user", "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap();
    let cookie = format!("theme=dark; session={hs_token}");
    for headers in [
        vec![("authorization", bearer(&hs_token))],
        vec![("cookie", cookie.clone())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, echo) = get_with(&gw, "/mixed/a", &h).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["headers"]["x-consumer"], "web-user");
    }
    for (key, consumer) in [("acme-key", "acme"), ("globex-key", "globex")] {
        let (status, _, echo) = get_with(&gw, "/mixed/a", &[("x-api-key", key)]).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["headers"]["x-consumer"], consumer);
        assert!(echo["headers"].get("x-api-key").is_some());
    }
    let hits = b.hits();
    let (status, h, body) = get_with(&gw, "/mixed/a", &[("x-api-key", "wrong")]).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("API key"),
        "{body}"
    );
    let challenges: Vec<&str> = h
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges.iter().any(|c| c.starts_with("Bearer ")));
    assert!(challenges
        .iter()
        .any(|c| c.starts_with("ApiKey ") && c.contains("x-api-key")));
    let (status, _, _) = get_with(&gw, "/mixed/a", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(b.hits(), hits, "refused requests never reach the backend");

    // API key in the query string.
    let (status, _, echo) = get_with(&gw, "/q/x?api_key=initech-key&page=2", &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-consumer"], "initech");
    let (status, _, _) = get_with(&gw, "/q/x?api_key=nope", &[]).await;
    assert_eq!(status, 401);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.access_log();
    assert!(
        !log.contains("initech-key") && !log.contains("acme-key"),
        "{log}"
    );
}

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

fn ca() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca = params.self_signed(&ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca,
        ca_key,
    }
}

/// A leaf certificate and key signed by `pki`, as one PEM.
fn leaf(pki: &Pki, cn: &str, ou: Option<&str>, san: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    if let Some(ou) = ou {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, ou);
    }
    let cert = params.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_names_the_consumer_from_the_client_certificate() {
    let b = Backend::start("b").await;
    let server_pki = ca();
    let client_pki = ca();
    let rogue_pki = ca();
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key) = leaf(&server_pki, "gw.test", None, "gw.test");
    std::fs::write(dir.path().join("server.pem"), &server_cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server_key).unwrap();
    std::fs::write(dir.path().join("client-ca.pem"), &client_pki.ca_pem).unwrap();
    let tls_port = free_port();
    let d = dir.path().display();
    let server_extra = format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncerts = [{{ cert = \"{d}/server.pem\", key = \"{d}/server.key\" }}]\nclient_ca = \"{d}/client-ca.pem\"\nclient_auth = \"optional\"\n"
    );
    let body = format!(
        "{}\n[[routes]]\nname = \"devices\"\npath_prefix = \"/devices\"\nupstream = \"pool\"\nauth = \"devices\"\nallow_groups = [\"fleet\"]\n\n[[routes]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"pool\"\n\n[auth.devices]\ntype = \"mtls\"\nconsumer_from = \"subject_cn\"\n",
        upstream("pool", &[&b], "")
    );
    let gw = Gateway::start(&server_extra, &body).await;
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let tls_client = |identity: Option<(String, String)>| {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(server_pki.ca_pem.as_bytes()).unwrap(),
            )
            .resolve("gw.test", addr)
            .timeout(Duration::from_secs(10));
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}\n{key}");
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let url = |p: &str| format!("https://gw.test:{tls_port}{p}");

    let device = tls_client(Some(leaf(
        &client_pki,
        "device-7",
        Some("fleet"),
        "d7.test",
    )));
    let resp = device
        .get(url("/devices/ping"))
        .header("x-consumer", "spoofed")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", gw.stderr()));
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-consumer"], "device-7");

    // A certificate from a CA the listener does not trust: no handshake.
    let rogue = tls_client(Some(leaf(&rogue_pki, "device-7", Some("fleet"), "d7.test")));
    assert!(rogue.get(url("/devices/ping")).send().await.is_err());

    // No certificate (optional mode): the open route works, the mTLS route says 401.
    let anonymous = tls_client(None);
    let resp = anonymous.get(url("/open/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = anonymous.get(url("/devices/ping")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{body}"
    );

    // A trusted certificate outside the allowed group: 403.
    let other = tls_client(Some(leaf(
        &client_pki,
        "laptop-1",
        Some("staff"),
        "l1.test",
    )));
    let resp = other.get(url("/devices/ping")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        b.hits(),
        2,
        "only the admitted requests reached the backend"
    );
}

#[test]
fn hash_key_prints_the_config_line() {
    let mut child = Command::new(binary())
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"acme-key\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"acme-key"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sha256 = \"{expected}\"")
    );
}

#[test]
fn check_reports_auth_problems_with_keys_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    std::fs::write(
        &conf,
        r#"[upstreams.a]
targets = ["127.0.0.1:9"]

[[routes]]
name = "r"
upstream = "a"
auth = ["users", "ghost"]
allow_groups = []

[auth.users]
type = "jwt"
algorithms = ["none", "HS256"]
public_key = "missing.pem"

[auth.devices]
type = "mtls"

[auth.partners]
type = "api_key"
keys = [{ consumer = "acme", sha256 = "xyz" }]
"#,
    )
    .unwrap();
    let (code, stderr) = common::check(&conf);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        ":7:8: routes[0].auth: no [auth.ghost] block",
        ":8:16: routes[0].allow_groups:",
        ":12:14: auth.users.algorithms: \"none\"",
        ":13:14: auth.users.public_key: cannot read",
        ":16:8: auth.devices.type: mtls needs a [[server.tls]] listener with client_ca",
        ":20:9: auth.partners.keys[0]: sha256 must be 64 hex digits",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
