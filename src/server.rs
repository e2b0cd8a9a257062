//! Server assembly: turns a compiled config into a running Pingora server
//! (proxy listeners, TLS with SNI, the admin listener, the health-check
//! service, the cluster-limit sync with Redis and, for `frontdesk demo`, the
//! demo services).
//!
//! Pingora's own YAML config is not used: its `ServerConf` is built from our
//! `[server]` section (threads, grace period, pid file, upgrade socket), and
//! its `Opt` from our command line (`--upgrade`, `--daemon`).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::ConfigError;
use crate::demo::{DemoService, DEMO_SERVICES};
use crate::gateway::{load_and_compile, GatewayHandle};
use crate::proxy::Frontdesk;
use crate::tls::SniResolver;
use crate::upstream::HealthCheckService;

/// How `run` and `demo` start the server.
pub struct RunOptions<'a> {
    pub config: &'a Path,
    pub upgrade: bool,
    pub daemon: bool,
    /// Also start the built-in demo services.
    pub demo: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("TLS listener {listen}: {reason}")]
    Tls { listen: String, reason: String },
}

/// Builds the server and runs it until shutdown. Returns only on a startup error.
/// HTTP/2 limits for client connections, stated rather than inherited:
/// at most 100 streams open at once per connection, a 64 KiB decoded
/// header list, at most 20 streams the client resets before the gateway
/// accepted them and 1,024 streams the gateway had to reset for protocol
/// errors (past either, the connection gets GOAWAY: the "rapid reset"
/// flood, CVE-2023-44487), and at most 400 KiB queued for sending per
/// stream.
pub fn h2_limits() -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::H2Options::default();
    o.max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(1024))
        .max_send_buffer_size(400 * 1024);
    o
}

/// Streams one HTTP/2 client connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 100;

pub fn run(opts: RunOptions<'_>) -> Result<(), StartError> {
    if opts.demo {
        crate::demo::ensure_demo_secret();
    }
    let (_loaded, compiled) = load_and_compile(opts.config)?;
    let listeners = compiled.listeners;
    crate::cache::configure_store(usize::try_from(listeners.cache_memory).unwrap_or(usize::MAX));
    let handle = Arc::new(GatewayHandle::new(compiled.gateway));

    let conf = ServerConf {
        threads: listeners.threads,
        work_stealing: listeners.work_stealing,
        grace_period_seconds: Some(listeners.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: listeners.pid_file.clone(),
        upgrade_sock: listeners.upgrade_socket.clone(),
        daemon: opts.daemon,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut server_options = pingora::apps::HttpServerOptions::default();
    server_options.h2c = listeners.h2c;
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        Frontdesk {
            handle: handle.clone(),
        },
    );
    app.server_options = Some(server_options);
    app.h2_options = Some(h2_limits());
    let mut proxy = Service::new(
        "frontdesk".to_string(),
        crate::drain::Draining {
            inner: Arc::new(app),
            window: listeners.drain_idle.min(listeners.grace_period),
            header_timeout: listeners.header_timeout,
            max_connections: listeners.max_connections,
        },
    );
    for addr in &listeners.listen {
        proxy.add_tcp(addr);
    }
    let listener_fingerprint_plan = listeners.fingerprint();
    let mut cert_stores = Vec::new();
    for tls in listeners.tls {
        let store = Arc::new(ArcSwap::from_pointee(tls.certs));
        cert_stores.push((tls.listen.clone(), store.clone()));
        let resolver = SniResolver {
            store,
            client_identity: tls.client_ca.is_some(),
        };
        let tls_err = |e: &dyn std::fmt::Display| StartError::Tls {
            listen: tls.listen.clone(),
            reason: e.to_string(),
        };
        let mut settings =
            TlsSettings::with_callbacks(Box::new(resolver)).map_err(|e| tls_err(&e))?;
        if tls.h2 {
            settings.enable_h2();
        }
        if let Some((ca, required)) = &tls.client_ca {
            use pingora::tls::ssl::SslVerifyMode;
            let mode = if *required {
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
            } else {
                SslVerifyMode::PEER
            };
            settings.set_verify(mode);
            settings.set_ca_file(ca).map_err(|e| tls_err(&e))?;
            // Advertise the acceptable CAs in the CertificateRequest, so a
            // client holding several certificates picks the right one.
            let pem = std::fs::read(ca).map_err(|e| tls_err(&e))?;
            let certs = pingora::tls::x509::X509::stack_from_pem(&pem).map_err(|e| tls_err(&e))?;
            for c in &certs {
                settings.add_client_ca(c).map_err(|e| tls_err(&e))?;
            }
        }
        proxy.add_tls_with_settings(&tls.listen, None, settings);
    }
    server.add_service(proxy);
    handle.register_listener_state(listener_fingerprint_plan, cert_stores);

    if let Some(admin_addr) = &listeners.admin_listen {
        let mut admin = Service::new(
            "admin".to_string(),
            AdminApp {
                handle: handle.clone(),
            },
        );
        admin.add_tcp(admin_addr);
        server.add_service(admin);
    }

    server.add_service(background_service(
        "upstream health checks",
        HealthCheckService {
            handle: handle.clone(),
        },
    ));
    server.add_service(background_service(
        "config reload on SIGHUP",
        ReloadOnHangup {
            handle: handle.clone(),
        },
    ));
    server.add_service(background_service(
        "upgrade on SIGUSR2",
        UpgradeOnUsr2 {
            handle: handle.clone(),
            binary: std::env::current_exe().unwrap_or_else(|_| "frontdesk".into()),
            daemon: opts.daemon,
        },
    ));
    server.add_service(background_service(
        "cluster limit sync",
        ClusterSyncService {
            handle: handle.clone(),
        },
    ));

    if opts.demo {
        for (name, addr) in DEMO_SERVICES {
            let mut svc = Service::new(format!("demo {name}"), DemoService { name });
            svc.add_tcp(addr);
            server.add_service(svc);
        }
        let first = listeners
            .listen
            .first()
            .map(String::as_str)
            .unwrap_or("127.0.0.1:8080");
        eprintln!(
            "{}",
            crate::demo::banner(first, listeners.admin_listen.as_deref())
        );
    }

    end_grace_period_when_idle(server.watch_execution_phase());
    if !opts.daemon {
        // Pingora writes the pid file only when it daemonizes; in the
        // foreground (systemd, containers) `frontdesk reload` and upgrades
        // still need to find this process.
        if let Err(e) = std::fs::write(&listeners.pid_file, format!("{}\n", std::process::id())) {
            log::warn!(
                "cannot write the pid file {} (server.pid_file): {e}; `frontdesk reload` will not find this process",
                listeners.pid_file
            );
        }
    }
    server.run_forever()
}

/// Sends cluster-scope rate-limit counts to Redis and reads the fleet's
/// totals back, every `[cluster] sync_interval`, off the request path.
pub struct ClusterSyncService {
    pub handle: Arc<GatewayHandle>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ClusterSyncService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use crate::observe::METRICS;
        // One connection manager per Redis URL; it reconnects by itself.
        let mut conn: Option<(String, redis::aio::ConnectionManager)> = None;
        loop {
            let gw = self.handle.snapshot();
            let interval = gw
                .cluster
                .as_ref()
                .map_or(std::time::Duration::from_secs(1), |c| c.sync_interval);
            if let Some(state) = &gw.cluster {
                if conn.as_ref().is_none_or(|(url, _)| *url != state.redis_url) {
                    conn = redis_connection(&state.redis_url).map(|c| (state.redis_url.clone(), c));
                }
                let result = match conn.as_mut() {
                    Some((_, c)) => {
                        crate::ratelimit::cluster::sync_all(&gw.cluster_counters, c).await
                    }
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "no Redis client",
                    ))),
                };
                match result {
                    Ok(()) => {
                        METRICS.redis_up.set(1);
                        if state.set_up(true) {
                            log::warn!(
                                "cluster limits: Redis at {} is reachable again",
                                state.redis_url
                            );
                        }
                    }
                    Err(e) => {
                        METRICS.redis_errors.inc();
                        METRICS.redis_up.set(0);
                        if state.set_up(false) {
                            // Logged once per outage; the metric counts every failure.
                            log::error!(
                                "cluster limits: Redis at {} unreachable ({e}); on_redis_error = {:?} until it is back",
                                state.redis_url,
                                state.fallback
                            );
                        }
                    }
                }
            }
            drop(gw);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// A lazily connecting Redis connection manager with short timeouts, so a
/// dead Redis costs a sync round, never a hang.
fn redis_connection(url: &str) -> Option<redis::aio::ConnectionManager> {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => {
            log::error!("cluster limits: bad Redis URL {url}: {e}");
            return None;
        }
    };
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
        .set_response_timeout(Some(std::time::Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(std::time::Duration::from_millis(200));
    match redis::aio::ConnectionManager::new_lazy_with_config(client, config) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("cluster limits: cannot set up a Redis connection to {url}: {e}");
            None
        }
    }
}

/// Claims SIGHUP (Pingora installs no handler, and the default action would
/// kill the gateway) and reloads the config on each one.
/// Binary upgrade on SIGUSR2, as NGINX does it: this process starts
/// `<its own binary path> upgrade -c <its config>` (the file at that path,
/// which a package upgrade has replaced), which takes the listening sockets
/// over and tells this process to drain and exit. The new process is this
/// one's child, so under systemd it stays in the service's cgroup with its
/// user and capabilities, and (with `Type=forking` + `PIDFile`) becomes the
/// service's main process when this one exits. `systemctl kill -s USR2
/// --kill-whom=main frontdesk` upgrades without dropping a connection.
pub struct UpgradeOnUsr2 {
    pub handle: Arc<GatewayHandle>,
    /// This binary's path, read at start (before a package replaces the file).
    pub binary: std::path::PathBuf,
    /// The new process daemonizes too when this one did.
    pub daemon: bool,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for UpgradeOnUsr2 {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr2 = match signal(SignalKind::user_defined2()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGUSR2, upgrade by signal is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = usr2.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let config = self.handle.snapshot().source.clone();
                    let mut cmd = std::process::Command::new(&self.binary);
                    cmd.arg("upgrade").arg("-c").arg(&config);
                    if self.daemon {
                        cmd.arg("-d");
                    }
                    match cmd.spawn() {
                        Ok(mut child) => {
                            log::info!(
                                "SIGUSR2: started {} (pid {}) to take over; this process drains and exits once it has the sockets",
                                self.binary.display(),
                                child.id()
                            );
                            // Reap it (a failed start is logged here; the old
                            // process keeps serving then).
                            std::thread::spawn(move || match child.wait() {
                                Ok(status) if !status.success() => log::error!(
                                    "upgrade: the new process exited with {status}; this one keeps serving"
                                ),
                                Ok(_) => {}
                                Err(e) => log::warn!("upgrade: cannot wait for the new process: {e}"),
                            });
                        }
                        Err(e) => log::error!(
                            "SIGUSR2: cannot start {} for the upgrade: {e}; still serving",
                            self.binary.display()
                        ),
                    }
                }
            }
        }
    }
}

pub struct ReloadOnHangup {
    pub handle: Arc<GatewayHandle>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, config reload by signal is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    log::info!("SIGHUP: reloading the config");
                    let handle = self.handle.clone();
                    // Compiling reads files and resolves names: off the runtime's workers.
                    let _ = tokio::task::spawn_blocking(move || handle.reload()).await;
                }
            }
        }
    }
}

/// Pingora sleeps through the whole `grace_period` after SIGTERM (or after
/// handing its sockets to a new process on upgrade), even when nothing is in
/// flight. This watcher ends the process as soon as no request has been in
/// flight for a moment and the client connections are drained (closed, or
/// the drain window of [`crate::drain`] is over), so an idle gateway stops
/// in well under a second and a busy one as soon as its last request is done.
fn end_grace_period_when_idle(
    mut phases: tokio::sync::broadcast::Receiver<pingora::server::ExecutionPhase>,
) {
    use pingora::server::ExecutionPhase;
    use tokio::sync::broadcast::error::RecvError;
    let spawned = std::thread::Builder::new()
        .name("grace-period".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
            let mut idle_checks = 0;
            loop {
                let connections_left =
                    crate::drain::open_connections() > 0 && !crate::drain::drained();
                if crate::proxy::requests_in_flight() == 0 && !connections_left {
                    idle_checks += 1;
                } else {
                    idle_checks = 0;
                }
                // Idle for 300 ms: nothing left to finish. The pause also
                // lets the access-log writer flush its last lines.
                if idle_checks >= 3 {
                    log::info!("graceful shutdown: no request in flight, exiting before the grace period ends");
                    std::process::exit(0);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
    if let Err(e) = spawned {
        log::warn!(
            "cannot watch the grace period ({e}); shutdown waits all of server.grace_period"
        );
    }
}
