//! Protocol abuse from clients, on raw sockets against the real binary:
//! request smuggling, oversized request lines, encoded traversal, NULs and
//! overlong UTF-8 in paths, clients that stall mid-request.

mod common;

use std::time::Duration;

use common::{client, upstream, Backend, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `raw` on a fresh connection and reads until the gateway closes
/// it (or 3 s pass): every response it sent, as text.
async fn exchange(gw: &Gateway, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

async fn gateway() -> (Backend, Gateway) {
    let b = Backend::start("app").await;
    let body = format!(
        "{}\n[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\n\n[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nstrip_prefix = true\nupstream = \"app\"\n",
        upstream("app", &[&b], "")
    );
    let gw = Gateway::start(
        "keepalive_timeout = \"1s\"\nclient_timeout = \"1s\"\nheader_timeout = \"1s\"",
        &body,
    )
    .await;
    (b, gw)
}

/// A gateway with one catch-all route; `server_extra` goes into `[server]`.
async fn one_route(server_extra: &str) -> (Backend, Gateway) {
    let b = Backend::start("app").await;
    let body = format!(
        "{}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\n",
        upstream("app", &[&b], "")
    );
    let gw = Gateway::start(server_extra, &body).await;
    (b, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_get_400_and_never_reach_the_backend_twice() {
    let (b, gw) = gateway().await;
    let smuggled = "GET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL.TE",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "TE.CL",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2c\r\n{smuggled}\r\n0\r\n\r\n"),
        ),
        (
            "duplicate Content-Length",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: {}\r\n\r\nabc{smuggled}", 3 + smuggled.len()),
        ),
        (
            "Content-Length list",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 40\r\n\r\nabc{smuggled}"),
        ),
        (
            "obfuscated TE (xchunked)",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc{smuggled}"),
        ),
        (
            "obfuscated TE (chunked, identity)",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "space before colon",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc{smuggled}"),
        ),
    ];
    for (name, raw) in &cases {
        let before = b.hits();
        let answer = exchange(&gw, raw.as_bytes()).await;
        let st = statuses(&answer);
        assert!(
            st.first().is_some_and(|s| (400..500).contains(s)),
            "{name}: expected a 4xx, got {st:?}:\n{answer}"
        );
        assert!(
            st.len() == 1,
            "{name}: the gateway answered a second (smuggled) request: {st:?}\n{answer}"
        );
        assert_eq!(b.hits(), before, "{name}: reached the backend");
    }
    // The listener still serves.
    let r = client()
        .get(gw.url("/public/ok"))
        .send()
        .await
        .expect("after");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lines_encoded_traversal_and_stalled_clients() {
    let (b, gw) = gateway().await;

    // A request target over max_uri_length (8 KiB): 414; a header over
    // max_header_size (32 KiB): 431. Nothing reaches the backend.
    let long = format!(
        "GET /public/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let st = statuses(&exchange(&gw, long.as_bytes()).await);
    assert!(st.first() == Some(&414), "long request line: {st:?}");
    let big = format!(
        "GET /public/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40 * 1024)
    );
    let st = statuses(&exchange(&gw, big.as_bytes()).await);
    assert_eq!(st.first(), Some(&431), "big header: {st:?}");
    assert_eq!(b.hits(), 0);

    // Dot segments, encoded or doubly encoded, NULs and overlong UTF-8:
    // what the backend is sent is the normalized path, never one that
    // climbs out of the route's prefix.
    let c = client();
    for (path, want_status, backend_path) in [
        ("/public/a/%2e%2e/b", 200, Some("/b")),
        ("/public/%2e%2e/%2e%2e/admin", 200, Some("/admin")),
        ("/public/..%2fadmin", 200, Some("/..%2Fadmin")),
        ("/public/%252e%252e/x", 200, Some("/%252e%252e/x")),
        ("/public/%c0%ae%c0%ae/x", 200, Some("/%C0%AE%C0%AE/x")),
        ("/public/a%00b", 200, Some("/a%00b")),
        ("/public/%zz", 400, None),
    ] {
        let r = c.get(gw.url(path)).send().await.expect(path);
        assert_eq!(r.status(), want_status, "{path}");
        let json: serde_json::Value = r.json().await.expect("JSON");
        if let Some(p) = backend_path {
            assert_eq!(json["path"], p, "{path}: {json}");
        }
        // /public/../../admin decodes to /admin: it is the admin route's
        // request (and nothing of /public is stripped from it).
    }

    // A client that stops mid-headers is disconnected by the read timeout
    // (60 s on a first request, `keepalive_timeout` after one), and while
    // it hangs, others are served.
    let mut stalled = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /public/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("first request");
    let mut buf = vec![0u8; 8192];
    let n = stalled.read(&mut buf).await.expect("first answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stalled
        .write_all(b"GET /public/2 HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("half a request");
    let mut others = Vec::new();
    for _ in 0..100 {
        others.push(
            TcpStream::connect(("127.0.0.1", gw.port))
                .await
                .expect("idle conn"),
        );
    }
    let r = c
        .get(gw.url("/public/served"))
        .send()
        .await
        .expect("others");
    assert_eq!(r.status(), 200, "a stalled client starved the others");
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the stalled connection was not closed: {closed:?}"
    );
    drop(others);

    // Slowloris: a first request whose headers trickle in, a line every
    // 200 ms (each read well inside every per-read timeout), is cut off by
    // header_timeout; a request sent meanwhile is served.
    let mut loris = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    loris
        .write_all(b"GET /public/loris HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("start");
    let (mut rd, mut wr) = loris.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return i;
            }
        }
        40
    });
    let r = c
        .get(gw.url("/public/meanwhile"))
        .send()
        .await
        .expect("meanwhile");
    assert_eq!(r.status(), 200);
    let cut = tokio::time::timeout(Duration::from_secs(6), rd.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "the trickling client was not cut off: {cut:?}"
    );
    let sent = trickle.await.expect("trickle task");
    assert!(sent < 40, "all 40 header lines were accepted");

    // A body that stops coming: 408 after client_timeout, connection closed.
    let answer = exchange(
        &gw,
        b"POST /public/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(
        statuses(&answer).first(),
        Some(&408),
        "slow body:\n{answer}"
    );
    assert!(answer.contains("too slow"), "{answer}");
}

/// HTTP/2 (cleartext, prior knowledge) on one connection: more streams at
/// once than the gateway allows are queued by the client, never refused
/// or lost; a flood of streams reset right after they open ("rapid
/// reset") ends with the connection closed by the gateway, and the gateway
/// goes on serving other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_and_resets_stay_bounded() {
    let (b, gw) = one_route("h2c = true").await;

    let tcp = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let (send, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let many = async move {
        let mut send = send;
        // One exchange first, so that the gateway's SETTINGS (its stream
        // limit) have arrived; streams opened before that may be refused
        // with REFUSED_STREAM, which a client retries (never processed).
        send = send.ready().await.expect("ready");
        let req = http::Request::get("http://127.0.0.1/first")
            .body(())
            .expect("request");
        let (resp, _) = send.send_request(req, true).expect("send");
        assert_eq!(resp.await.expect("first").status(), 200);
        let mut pending = Vec::new();
        for i in 0..300 {
            send = send.ready().await.expect("stream slot");
            let req = http::Request::get(format!("http://127.0.0.1/many/{i}"))
                .body(())
                .expect("request");
            let (resp, _) = send.send_request(req, true).expect("send");
            pending.push(resp);
        }
        let mut ok = 0;
        for resp in pending {
            let r = resp.await.expect("response");
            ok += usize::from(r.status() == 200);
        }
        ok
    };
    let ok = tokio::select! {
        ok = many => ok,
        r = &mut conn => panic!("the connection ended first: {r:?}"),
    };
    assert_eq!(ok, 300, "every queued stream was answered");
    // The gateway's SETTINGS: how many streams may be open at once.
    let advertised = conn.max_concurrent_send_streams();
    assert_eq!(advertised, frontdesk::server::H2_MAX_STREAMS as usize);

    // Rapid reset: open and cancel streams as fast as possible.
    let tcp = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn_task = tokio::spawn(conn);
    let mut send = Some(send);
    let mut opened = 0;
    while let Some(s) = send.take() {
        let Ok(mut s) = s.ready().await else { break };
        let req = http::Request::get("http://127.0.0.1/reset")
            .body(())
            .expect("request");
        match s.send_request(req, false) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => break,
        }
        if opened < 20_000 {
            send = Some(s);
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn_task).await;
    assert!(
        opened < 20_000 && closed.is_ok(),
        "{opened} reset streams and the connection is still open"
    );
    // The gateway ends it with GOAWAY (ENHANCE_YOUR_CALM) and closes; a
    // client still writing may see the closed socket before the GOAWAY.
    let ended = match &closed {
        Ok(Ok(Err(e))) => e.is_go_away() || e.is_io(),
        _ => false,
    };
    assert!(ended, "the gateway should end the flood: {closed:?}");
    assert!(
        b.hits() <= 301 + opened,
        "more backend requests than streams ({})",
        b.hits()
    );
    let r = client().get(gw.url("/after")).send().await.expect("after");
    assert_eq!(r.status(), 200, "the gateway stopped serving");
}

/// `server.max_connections`: past the cap a new connection is closed as
/// soon as it is accepted (and counted); when one closes, a new one is
/// served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_accept() {
    let (_b, gw) = one_route("max_connections = 5").await;
    // Let the harness's readiness probe connection go away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            TcpStream::connect(("127.0.0.1", gw.port))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 256];
    let got = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0)) | Ok(Err(_))),
        "a sixth connection was served: {got:?}"
    );
    drop(held);
    let ok = common::eventually(Duration::from_secs(5), || async {
        client()
            .get(gw.url("/again"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok, "no connection was served after the others closed");
    let m = common::metrics(&gw).await;
    assert!(
        common::metric(&m, "frontdesk_connections_refused_total ") >= 1.0,
        "{m}"
    );
}
