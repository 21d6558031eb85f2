//! Taking TCP connections off the kernel's queue, for every listener (REST
//! and gRPC, plain and TLS): at most `--max-connections` open at once,
//! TCP_NODELAY on each, and an accept that fails for want of descriptors
//! waited out instead of retried at once.
//!
//! Without a limit, a flood of clients that each keep a connection busy
//! (a byte now and then keeps the idle timer away) takes descriptors until
//! `accept` fails with `EMFILE`, and then so does everything else the server
//! opens: a model's files, the compile cache, a bundle download. Under the
//! limit, connections past it wait in the kernel's backlog, as Go's
//! `netutil.LimitListener` makes them, and the clients already connected
//! are served as before.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Descriptors kept out of the default connection limit for everything
/// else the server opens (model files, the compile cache, bundles, its
/// runtime's own).
const RESERVED_DESCRIPTORS: u64 = 128;

/// The most connections the default allows, however many descriptors the
/// process may open: each idle connection also holds a task and its
/// buffers (tens of KiB).
const DEFAULT_CEILING: u64 = 65_536;

/// The pause after an accept that failed for a reason other than the
/// client's (out of descriptors or memory), before the next try.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// The shortest time between two warnings that the limit is reached.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How many connections the server's listeners hold open at once, all of
/// them together: descriptors are the process's.
#[derive(Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
    open: Gauge,
}

impl ConnectionLimit {
    /// At most `max` connections (at least one) open at once, counted in
    /// `metrics`.
    pub fn new(max: usize, metrics: &Metrics) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        metrics.max_connections.set(max as i64);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            open: metrics.open_connections.clone(),
        }
    }

    /// The most connections open at once.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The default `--max-connections`: for the files this process may open
/// ([`descriptor_limit`]; Linux's common soft limit, 1024, where it cannot
/// be read), [`connections_for`] them.
pub fn default_max_connections() -> usize {
    connections_for(descriptor_limit().unwrap_or(1024))
}

/// The connections a process that may open `descriptors` files may hold:
/// all of them but [`RESERVED_DESCRIPTORS`], and at most
/// [`DEFAULT_CEILING`]; half of them when there are too few for the
/// reserve.
fn connections_for(descriptors: u64) -> usize {
    let usable = descriptors
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(descriptors / 2);
    usable.clamp(1, DEFAULT_CEILING) as usize
}

/// How many files this process may open (its soft `RLIMIT_NOFILE`).
fn descriptor_limit() -> io::Result<u64> {
    Ok(descriptors()?.rlim_cur)
}

/// Raises the soft limit on open files to the hard one, as Go's runtime
/// does for every program: systemd and many shells start processes at
/// 1024, a server's worth of connections. Returns the limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let limit = descriptors()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    descriptor_limit()
}

/// The process's `RLIMIT_NOFILE`, soft and hard.
fn descriptors() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// A TCP listener under a [`ConnectionLimit`]: it takes a connection only
/// while the limit has room, and sets TCP_NODELAY on it. A streamed answer
/// (server-sent tokens, HTTP/2 frames) is written in small pieces, and
/// Nagle's algorithm would hold each back until the client acknowledged the
/// one before: a round trip per token on a real network (Go's net/http and
/// nginx send at once too).
pub struct Bounded {
    tcp: TcpListener,
    limit: ConnectionLimit,
    warned: Option<Instant>,
}

impl Bounded {
    /// `tcp`'s connections, under `limit`.
    pub fn new(tcp: TcpListener, limit: ConnectionLimit) -> Self {
        Bounded {
            tcp,
            limit,
            warned: None,
        }
    }

    /// A permit for one more connection, waiting for one to close when the
    /// limit is reached.
    async fn permit(&mut self) -> OwnedSemaphorePermit {
        if let Ok(permit) = Arc::clone(&self.limit.permits).try_acquire_owned() {
            return permit;
        }
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY)
        {
            self.warned = Some(Instant::now());
            tracing::warn!(
                max = self.limit.max,
                "the connection limit is reached (--max-connections): new connections wait \
                 until open ones close"
            );
        }
        Arc::clone(&self.limit.permits)
            .acquire_owned()
            .await
            .expect("the connection limit's semaphore is never closed")
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Held<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self.permit().await;
        loop {
            match self.tcp.accept().await {
                Ok((tcp, peer)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                    }
                    return (Held::new(tcp, permit, self.limit.open.clone()), peer);
                }
                // That client's problem: the next one may be fine.
                Err(e) if is_connection_error(&e) => continue,
                // The server's (out of descriptors, of memory): trying again
                // at once would only spin.
                Err(e) => {
                    tracing::error!("cannot accept a connection: {e}; trying again in 1 s");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Whether an accept failed for the connecting client's reasons alone.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection holding its place under the [`ConnectionLimit`] until it
/// is dropped.
pub struct Held<Io> {
    io: Io,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl<Io> Held<Io> {
    fn new(io: Io, permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Held {
            io,
            _permit: permit,
            open,
        }
    }

    /// The connection itself.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }
}

impl<Io> Drop for Held<Io> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Held<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

// Every method forwarded, the vectored ones included: hyper writes a
// response's head and body with one `writev` only where the stream says it
// can.
impl<Io: AsyncWrite + Unpin> AsyncWrite for Held<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    async fn bounded(max: usize) -> (Bounded, Metrics) {
        let metrics = Metrics::new();
        let limit = ConnectionLimit::new(max, &metrics);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (Bounded::new(tcp, limit), metrics)
    }

    #[tokio::test]
    async fn a_connection_sends_without_delay() {
        let (mut listener, _) = bounded(1).await;
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.get_ref().nodelay().unwrap());
    }

    #[tokio::test]
    async fn past_the_limit_a_connection_waits_for_one_to_close() {
        let (mut listener, metrics) = bounded(2).await;
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let first = listener.accept().await.0;
        let _second = listener.accept().await.0;
        assert_eq!(metrics.open_connections.get(), 2);
        assert_eq!(metrics.max_connections.get(), 2);
        // The third is complete in the kernel's queue, yet not taken.
        let mut third = std::pin::pin!(listener.accept());
        assert!(futures::poll!(third.as_mut()).is_pending());
        drop(first);
        assert_eq!(metrics.open_connections.get(), 1);
        let (_third, _) = third.await;
        assert_eq!(metrics.open_connections.get(), 2);
    }

    #[test]
    fn the_default_leaves_descriptors_for_the_rest_of_the_server() {
        assert_eq!(connections_for(1024), 896);
        assert_eq!(connections_for(200), 100);
        assert_eq!(connections_for(1), 1);
        assert_eq!(connections_for(1 << 20), 65_536);
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_one() {
        let raised = raise_descriptor_limit().unwrap();
        let limit = descriptors().unwrap();
        assert_eq!((raised, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}
