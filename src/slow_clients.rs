//! A deadline on a new connection's first request head (slowloris).
//!
//! Pingora times each read of a request head, not the head as a whole: a
//! client that trickles a header byte every few seconds keeps its
//! connection, and a few thousand such clients hold a gateway's sockets.
//! [`HeadDeadline`] wraps a new client connection's stream: until the end
//! of the first request head (`\r\n\r\n`; an HTTP/2 connection preface
//! holds one too) has been read, reads race `server.header_timeout` from
//! the accept, and past it the read fails, so Pingora drops the
//! connection. After that the wrapper only passes bytes through.
//!
//! Only the first head: a later one on a kept-alive connection starts
//! after the gateway has written, where a body sent after a
//! `100 Continue` would look the same, so those heads keep Pingora's
//! per-read `keepalive_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, ALPN};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client stream whose first request head must arrive in time.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    /// Pending until the head is complete; `None` after.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    end: EndOfHead,
}

/// Finds `\r\n\r\n` in bytes fed a read at a time.
#[derive(Debug, Default)]
struct EndOfHead {
    /// The last bytes fed (at most three), for an end split across reads.
    tail: Vec<u8>,
}

impl EndOfHead {
    /// Whether `new` (just read) completes the head.
    fn feed(&mut self, new: &[u8]) -> bool {
        if new.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
        // An end split across reads: the bytes kept plus the first three.
        let mut seam = std::mem::take(&mut self.tail);
        seam.extend_from_slice(&new[..new.len().min(3)]);
        if seam.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
        // Keep the last three bytes seen: of this read if it has them.
        let from = if new.len() >= 3 {
            &new[new.len() - 3..]
        } else {
            &seam[..]
        };
        self.tail = from[from.len().saturating_sub(3)..].to_vec();
        false
    }
}

impl HeadDeadline {
    pub fn wrap(inner: Stream, timeout: Duration) -> Stream {
        Box::new(HeadDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            end: EndOfHead::default(),
        })
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the first request head did not arrive within server.header_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if self.deadline.is_some() {
                let this = &mut *self;
                if this.end.feed(&buf.filled()[before..]) {
                    this.deadline = None;
                }
            }
        }
        r
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let mut e = EndOfHead::default();
        assert!(!e.feed(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(e.feed(b"\n\r\n"));
        let mut e = EndOfHead::default();
        for b in b"GET / HTTP/1.1\r\n\r" {
            assert!(!e.feed(&[*b]));
        }
        assert!(e.feed(b"\n"));
        let mut e = EndOfHead::default();
        assert!(!e.feed(b"GET / HTTP/1.1\r\nX: \r\n"));
        assert!(!e.feed(b"\r"));
        assert!(e.feed(b"\n"));
        assert!(EndOfHead::default().feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }
}
