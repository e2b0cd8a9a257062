//! Connection drain on shutdown and graceful upgrade.
//!
//! When Pingora shuts a service down (SIGTERM, or SIGQUIT after handing the
//! listening sockets to a new process), it stops accepting and then calls
//! the app's `cleanup`, which for the proxy wakes every connection waiting
//! for its next request and drops it. A client that sent a request on such
//! a connection at that moment — a keep-alive connection in use, or one
//! accepted a moment before whose request was not read yet — sees a reset,
//! although a new process is already accepting on the same port.
//!
//! [`Draining`] wraps the proxy app and holds that `cleanup` back for a
//! short window (`server.drain_idle_connections`, at most the grace
//! period): meanwhile a request arriving on an open connection is read and
//! answered as usual, with `Connection: close` (Pingora turns keep-alive
//! off once shutdown has begun), so the client's next request opens a
//! connection to the new process. When every connection is gone, or the
//! window ends, the inner cleanup runs and closes what is still idle. The
//! open-connection count also tells the early-exit watcher in
//! [`crate::server`] when nothing is left to wait for.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

static OPEN: AtomicUsize = AtomicUsize::new(0);
static DRAINED: AtomicBool = AtomicBool::new(false);

/// Client connections of the proxy that are open now.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Acquire)
}

/// Whether the drain window is over (idle connections were closed).
pub fn drained() -> bool {
    DRAINED.load(Ordering::Acquire)
}

struct Open;

impl Open {
    fn new() -> Open {
        OPEN.fetch_add(1, Ordering::AcqRel);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A server app whose shutdown lets open connections finish their next
/// request instead of dropping them.
pub struct Draining<A> {
    pub inner: Arc<A>,
    /// How long open connections may stay after shutdown begins.
    pub window: Duration,
    /// `server.header_timeout`: see [`crate::slow_clients`].
    pub header_timeout: Duration,
    /// `server.max_connections`: client connections open at once; one
    /// over it is closed as soon as it is accepted (0: no cap).
    pub max_connections: usize,
}

#[async_trait]
impl<A> ServerApp for Draining<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = Open::new();
        if self.max_connections > 0 && open_connections() > self.max_connections {
            crate::observe::METRICS.connections_refused.inc();
            log::debug!(
                "closing a new client connection: {} open (server.max_connections)",
                self.max_connections
            );
            return None;
        }
        let stream = crate::slow_clients::HeadDeadline::wrap(stream, self.header_timeout);
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        let started = Instant::now();
        let deadline = started + self.window;
        while open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = open_connections();
        if left > 0 {
            log::info!(
                "shutdown: closing {left} idle client connection(s) after {} ms (server.drain_idle_connections)",
                started.elapsed().as_millis()
            );
        }
        DRAINED.store(true, Ordering::Release);
        self.inner.cleanup().await;
    }
}
