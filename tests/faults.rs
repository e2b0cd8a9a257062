//! Fault injection: backends that misbehave on purpose, behind the real
//! binary. Each case gives the client the right status with the JSON error
//! body (or a clean close once the response had started), is counted in
//! `frontdesk_upstream_errors_total`, and leaves the gateway serving the
//! next request.

mod common;

use std::time::Duration;

use common::{client, metrics, upstream, Backend, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend on a raw socket: reads one request head, then does what the
/// request path says.
struct Evil {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    head.split_whitespace().nth(1).map(str::to_string)
}

async fn misbehave(mut s: TcpStream) {
    // Several requests may come on one pooled connection.
    while let Some(path) = read_head(&mut s).await {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        match path.as_str() {
            "/ok" => {
                if s.write_all(ok).await.is_err() {
                    return;
                }
            }
            "/close-before-headers" => return,
            "/bad-status" => {
                let _ = s.write_all(b"HTTP/1.1 OK maybe\r\n\r\n").await;
                return;
            }
            "/garbage" => {
                let _ = s
                    .write_all(b"\x16\x03\x01\x00\xa5hello, not http\r\n\r\n")
                    .await;
                return;
            }
            "/bad-header" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\nok")
                    .await;
                return;
            }
            "/reset-mid-body" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    .await;
                let _ = s.write_all(&[b'x'; 4096]).await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Linger 0: the close is a TCP reset, not a FIN.
                let _ = s.set_zero_linger();
                return;
            }
            "/short-body" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
                    .await;
                return;
            }
            "/long-body" => {
                // Five bytes promised, more sent: what follows must never
                // be taken for the answer to another request.
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
                    .await;
            }
            "/stall-after-headers" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "/stall" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "/continue-twice" => {
                let _ = s
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
            "/then-idle-close" => {
                // Answers, then drops the kept-alive connection a moment
                // later, while the gateway holds it in its pool.
                if s.write_all(ok).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                return;
            }
            _ => {
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        }
    }
}

impl Evil {
    async fn start() -> Evil {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(misbehave(s));
            }
        });
        Evil { addr, task }
    }
}

fn metric_value(text: &str, kind: &str) -> u64 {
    let series = format!("frontdesk_upstream_errors_total{{kind=\"{kind}\",upstream=\"evil\"}} ");
    common::metric(text, &series) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_backends_get_the_right_status_and_the_gateway_keeps_serving() {
    let evil = Evil::start().await;
    let good = Backend::start("good").await;
    let body = format!(
        "[upstreams.evil]\ntargets = [\"{}\"]\nread_timeout = \"500ms\"\nretries = 0\n\n{}\n[[routes]]\nname = \"good\"\npath_prefix = \"/good\"\nupstream = \"good\"\n\n[[routes]]\nname = \"evil\"\nupstream = \"evil\"\n",
        evil.addr,
        upstream("good", &[&good], "")
    );
    let gw = Gateway::start("", &body).await;
    let c = client();
    let still_serving = || async {
        let r = c.get(gw.url("/good/x")).send().await.expect("good route");
        assert_eq!(r.status(), 200, "the gateway stopped serving");
    };

    // No response head at all: 502 (or 504 for a stall) with a JSON body.
    for (path, status, words) in [
        ("/close-before-headers", 502, "connection closed"),
        ("/bad-status", 502, "failed"),
        ("/garbage", 502, "failed"),
        ("/bad-header", 502, "failed"),
        ("/stall", 504, "read_timeout"),
    ] {
        let r = c.get(gw.url(path)).send().await.expect(path);
        assert_eq!(r.status(), status, "{path}");
        let json: serde_json::Value = r.json().await.expect("a JSON error body");
        let msg = json["error"].as_str().unwrap_or_default();
        assert!(msg.contains(words), "{path}: {json}");
        assert!(msg.contains("evil"), "{path}: names the upstream: {json}");
        assert_eq!(json["status"], status, "{path}");
        still_serving().await;
    }

    // The response had started: the client sees the connection end before
    // the promised length (never a body passed off as complete).
    for path in ["/reset-mid-body", "/short-body", "/stall-after-headers"] {
        let r = c.get(gw.url(path)).send().await.expect(path);
        assert_eq!(r.status(), 200, "{path}: the head was already forwarded");
        let declared = r.content_length();
        match r.bytes().await {
            Err(_) => {}
            Ok(b) => assert!(
                declared.is_none_or(|n| (b.len() as u64) < n) && declared.is_some(),
                "{path}: a truncated body arrived as complete ({} bytes, declared {declared:?})",
                b.len()
            ),
        }
        still_serving().await;
    }

    // Longer than its Content-Length: the client gets the five bytes, and
    // the extra bytes never become the answer to the next request.
    let r = c.get(gw.url("/long-body")).send().await.expect("long body");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap_or_default(), "hello");
    for _ in 0..3 {
        let r = c.get(gw.url("/ok")).send().await.expect("after long body");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status == 200 && text == "ok" || status == 502,
            "the extra bytes were taken for a response: {status} {text:?}"
        );
        assert_ne!(text, "smuggled");
    }

    // Two interim 100s, then the answer: passed through as the 200.
    let r = c
        .post(gw.url("/continue-twice"))
        .body("x")
        .send()
        .await
        .expect("continue");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap_or_default(), "ok");

    // A pooled connection the backend closed while idle: the next request
    // is not lost to it.
    let r = c
        .get(gw.url("/then-idle-close"))
        .send()
        .await
        .expect("idle");
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c.get(gw.url("/ok")).send().await.expect("after idle close");
    assert_eq!(
        r.status(),
        200,
        "a request was lost to a dead pooled connection"
    );

    let m = metrics(&gw).await;
    assert!(metric_value(&m, "closed") >= 1, "{m}");
    assert!(metric_value(&m, "invalid_response") >= 3, "{m}");
    assert!(metric_value(&m, "read_timeout") >= 2, "{m}");
    assert!(
        metric_value(&m, "reset") + metric_value(&m, "closed") >= 3,
        "{m}"
    );
    still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_counted_and_answered_502() {
    // A port nothing listens on.
    let dead = common::free_port();
    let body = format!(
        "[upstreams.evil]\ntargets = [\"127.0.0.1:{dead}\"]\nretries = 0\n\n[[routes]]\nname = \"evil\"\nupstream = \"evil\"\n"
    );
    let gw = Gateway::start("", &body).await;
    let r = client().get(gw.url("/x")).send().await.expect("request");
    assert_eq!(r.status(), 502);
    let json: serde_json::Value = r.json().await.expect("JSON");
    assert!(
        json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("connection refused"),
        "{json}"
    );
    let m = metrics(&gw).await;
    assert_eq!(metric_value(&m, "connect"), 1, "{m}");
}

/// A target whose health check alternates between passing and failing:
/// with `healthy_threshold = 2` it never earns its way back, so it gets no
/// traffic while it flaps (the stable target takes it all), and it is
/// checked at the configured interval, not more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_target_is_kept_out_and_not_hammered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let checks = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let flapping = l.local_addr().expect("addr");
    let (c2, h2) = (checks.clone(), hits.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (c, h) = (c2.clone(), h2.clone());
            tokio::spawn(async move {
                while let Some(path) = read_head(&mut s).await {
                    let answer: &[u8] = if path == "/healthz" {
                        // Fail first, then alternate.
                        if c.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                        }
                    } else {
                        h.fetch_add(1, Ordering::SeqCst);
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let stable = Backend::start("stable").await;
    let body = format!(
        "[upstreams.pool]\ntargets = [\"{}\", \"{flapping}\"]\n[upstreams.pool.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 2\n\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\n",
        stable.addr
    );
    let gw = Gateway::start("", &body).await;
    // Let the first (failing) check take it out.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            checks.load(Ordering::SeqCst) >= 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = hits.load(Ordering::SeqCst);
    let c = client();
    for i in 0..60 {
        let r = c
            .get(gw.url(&format!("/x{i}")))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "the flapping target got traffic"
    );
    assert_eq!(stable.hits(), 60);
    // Checked about once per interval: over the test's second or two,
    // tens of checks, not hundreds.
    let n = checks.load(Ordering::SeqCst);
    assert!(n < 100, "{n} health checks");
    task.abort();
}
