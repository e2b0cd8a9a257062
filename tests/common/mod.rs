//! Test harness: real backend servers (hyper) and the real `frontdesk`
//! binary, both on loopback ports chosen at test time.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A backend that echoes what it received as JSON.
///
/// `/healthz` answers 200 or 503 (see [`Backend::set_healthy`]) and is not
/// counted as a hit. `?sleep_ms=N` delays the answer.
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (h, ok) = (hits.clone(), healthy.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, ok) = (h.clone(), ok.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(name, req, h.clone(), ok.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name,
            addr,
            hits,
            healthy,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

async fn handle(
    name: &'static str,
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        let status = if healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap_or_default());
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let sleep_ms = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sleep_ms=")))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let values: Vec<String> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(
            name.as_str().to_string(),
            serde_json::Value::String(values.join(", ")),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body_len = body.len();
    let body_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    let body = serde_json::json!({
        "service": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": body_len,
        "body_sha256": body_sha256,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("x-debug", "backend-secret")
        .header("server", "test-backend")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default())
}

/// A running `frontdesk run` process with its own ports and folder.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_frontdesk")
}

impl Gateway {
    /// Starts the gateway. `server_extra` goes into `[server]` (after the
    /// listeners the harness sets); `body` is the rest of the file.
    pub async fn start(server_extra: &str, body: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = free_port();
        let d = dir.path().display();
        // A short grace period keeps test shutdowns quick, unless the test sets its own.
        let grace = if server_extra.contains("grace_period") {
            ""
        } else {
            "grace_period = \"1s\"\n"
        };
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin_port}\"\nthreads = 1\naccess_log = \"{d}/access.log\"\npid_file = \"{d}/frontdesk.pid\"\nupgrade_socket = \"{d}/upgrade.sock\"\n{grace}{server_extra}\n{body}"
        );
        let conf = dir.path().join("frontdesk.toml");
        std::fs::write(&conf, text).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = Command::new(binary())
            .args(["run", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start frontdesk");
        let mut gw = Gateway {
            child,
            port,
            admin_port,
            dir,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://127.0.0.1:{}/healthz", self.admin_port);
        let client = client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("frontdesk exited with {status}:\n{}", self.stderr());
            }
            let admin_up = client.get(&url).send().await.is_ok();
            let proxy_up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if admin_up && proxy_up {
                return;
            }
            if Instant::now() > deadline {
                panic!("frontdesk did not start in 20s:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateway process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file the gateway runs on.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("frontdesk.toml")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }
}

/// Runs `frontdesk check -c FILE`: (exit code, stderr).
pub fn check(conf: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(conf)
        .output()
        .expect("run frontdesk check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The WAF audit log's lines (`audit.log` in the gateway's folder).
pub fn audit_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gw.path("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A plain HTTP client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The admin listener's Prometheus text.
/// The value of the first metric line that starts with `prefix` (a name,
/// or a name with its labels), or 0 when there is none.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn metrics(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics request")
        .text()
        .await
        .unwrap_or_default()
}

/// An `[upstreams.NAME]` block for the given backends.
pub fn upstream(name: &str, backends: &[&Backend], extra: &str) -> String {
    let targets: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[upstreams.{name}]\ntargets = [{}]\n{extra}\n",
        targets.join(", ")
    )
}

/// Sends a GET and returns the status and the parsed JSON body.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = client().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Steady traffic for zero-downtime tests: keep-alive clients and clients
/// that open a new connection for every request (one of each by default),
/// each sending GET `url` back to back (2 ms apart) until [`Traffic::finish`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    drivers: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(url: String) -> Traffic {
        Traffic::start_with(url, 1, 1)
    }

    /// `keepalive` clients that reuse their connection and `fresh` ones
    /// that open a new connection for every request.
    pub fn start_with(url: String, keepalive: usize, fresh: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut drivers = Vec::new();
        let kinds = std::iter::repeat_n(false, keepalive).chain(std::iter::repeat_n(true, fresh));
        for fresh_connections in kinds {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            drivers.push(tokio::spawn(async move {
                let mut builder = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(5));
                if fresh_connections {
                    builder = builder.pool_max_idle_per_host(0);
                }
                let Ok(c) = builder.build() else { return };
                while !stop.load(Ordering::SeqCst) {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            eprintln!("traffic: failed request: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        Traffic {
            stop,
            ok,
            failed,
            drivers,
        }
    }

    /// Stops the clients; returns (served, failed).
    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for d in self.drivers {
            let _ = d.await;
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}
