//! Serving a router on a listener: a task per connection, HTTP/1.1 or
//! HTTP/2 as the client speaks, idle connections closed, and a graceful stop.
//!
//! `axum::serve` does all of this but the idle close: a client that opens a
//! connection and sends nothing, or half a request head, held it (a task and
//! a descriptor) for as long as it liked, so a few thousand such clients
//! could use up the server's descriptors. hyper's own header timeout covers
//! only HTTP/1 heads, not a connection still deciding which protocol it
//! speaks nor an idle HTTP/2 one, hence a timer of our own per connection.
//! A request whose body stops arriving is no new request either, so each
//! body gets the same idle limit ([`Quiet`]). Every body's bytes count
//! against the server's [`BodyMemory`] until its request is answered.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::Listener;
use bytes::Buf;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use crate::body_memory::{BodyMemory, OverBudget, Tally};

/// A server run to completion.
pub type Serving = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// How long a connection, and a request body on it, may go quiet, and how
/// the protocol served words a body's refusal.
#[derive(Clone, Copy, Debug)]
pub struct Quiet {
    /// A connection that starts no request for between this and twice
    /// this is closed; a request body with no part ready for this long
    /// fails with `stalled`'s error. Under a millisecond counts as one (a
    /// zero-length timer period would panic).
    pub idle: Duration,
    /// Request paths whose bodies may pause as long as they like: streams
    /// whose client sends its next message whenever it has one (HTTP/2
    /// pings still find a client that has gone).
    pub open_ended: &'static [&'static str],
    /// The error a stalled body's reader gets, in its protocol's terms.
    pub stalled: fn(Duration) -> axum::BoxError,
    /// The error the reader of a body gets that would take the bytes held
    /// past [`BodyMemory`]'s limit, in its protocol's terms.
    pub over_budget: fn(OverBudget) -> axum::BoxError,
}

impl Quiet {
    /// Closes connections idle for `idle` and refuses every body that
    /// pauses that long with [`Stalled`].
    pub fn new(idle: Duration) -> Self {
        Quiet {
            idle,
            open_ended: &[],
            stalled: |idle| Stalled(idle).into(),
            over_budget: |refused| refused.into(),
        }
    }
}

/// A request body that stopped arriving: none of it came for the idle time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body stopped arriving: none of it came for {} ms (--idle-timeout-ms)",
    .0.as_millis()
)]
pub struct Stalled(pub Duration);

/// Serves `service` on `listener` until `stop` turns true, then lets the
/// requests in flight finish, those on connections still queued to be
/// accepted included ([`DRAIN`]). A connection that starts no request for
/// between `quiet.idle` and twice that is closed the graceful way: a
/// request it is still answering (a long generation, a stream) runs to its
/// end first. A request body that stops arriving for `quiet.idle` (but an
/// open-ended one) fails, so its request ends. Request bodies count against
/// `memory` until their requests are answered.
pub fn serve<L, S>(
    mut listener: L,
    service: S,
    quiet: Quiet,
    memory: BodyMemory,
    mut stop: watch::Receiver<bool>,
) -> Serving
where
    L: Listener,
    L::Addr: Debug,
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let quiet = Quiet {
        idle: quiet.idle.max(Duration::from_millis(1)),
        ..quiet
    };
    Box::pin(async move {
        // Each connection holds a receiver; the stop waits for them all.
        let (connections, alive) = watch::channel(());
        // Set once the stop has come: until then connections keep coming.
        let mut stopping = None;
        loop {
            let (io, peer) = match stopping {
                None => tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.wait_for(|&s| s) => {
                        stopping = Some(tokio::time::Instant::now() + DRAIN);
                        continue;
                    }
                },
                // Connections the kernel had already completed are served
                // (their requests answered as in-flight ones), not reset by
                // closing the listener under them: accepted until none
                // comes for a moment, for at most `DRAIN`.
                Some(deadline) => {
                    let quiet_at = tokio::time::Instant::now() + DRAIN_QUIET;
                    match tokio::time::timeout_at(deadline.min(quiet_at), listener.accept()).await {
                        Ok(accepted) => accepted,
                        Err(_) => break,
                    }
                }
            };
            tracing::trace!(?peer, stopping = stopping.is_some(), "connection accepted");
            let connection = Connection::new(service.clone(), quiet, memory.clone());
            tokio::spawn(connection.run(io, stop.clone(), alive.clone()));
        }
        drop((listener, alive));
        connections.closed().await;
        Ok(())
    })
}

/// Longest the stopping server goes on accepting connections already
/// queued, so that a stream of new ones cannot hold the stop up.
const DRAIN: Duration = Duration::from_millis(100);

/// The pause after which the stopping server takes its queue of completed
/// connections for empty: time for the runtime to see one that is there.
const DRAIN_QUIET: Duration = Duration::from_millis(2);

/// One accepted connection's service, which carries its limits.
struct Connection<S> {
    service: Counted<S>,
}

impl<S> Connection<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    /// `service` on one connection, within `quiet`'s limits, its request
    /// bodies counted against `memory`.
    fn new(service: S, quiet: Quiet, memory: BodyMemory) -> Self {
        Connection {
            service: Counted {
                inner: service,
                started: Arc::default(),
                quiet,
                memory,
            },
        }
    }

    /// Serves `io` until the client closes it, it idles out, or the server
    /// stops; dropping `_alive` tells [`serve`]'s stop this one is done.
    async fn run<I>(self, io: I, mut stop: watch::Receiver<bool>, _alive: watch::Receiver<()>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let started = Arc::clone(&self.service.started);
        let idle = self.service.quiet.idle;
        let hyper_service = TowerToHyperService::new(self.service);
        let mut builder = Builder::new(TokioExecutor::new());
        // Half a request head is no request started, yet hyper's HTTP/1
        // does not end a connection mid-head on a graceful shutdown: its
        // own head timer closes it instead (and an idle keep-alive one).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(idle);
        // An HTTP/2 connection's graceful close waits for the client to
        // answer a ping; one that never does (or sends half a frame) is
        // closed when an idle connection's keep-alive ping goes unanswered.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(idle)
            .keep_alive_timeout(PING_TIMEOUT.min(idle));
        let mut connection =
            pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service));
        // First due one idle time from now. `interval`'s first tick, due
        // "now", is a timer all the same, which fires at the timer's next
        // millisecond: awaiting it held every new connection's first read
        // back by up to 1 ms (1.35 ms against 0.16 ms for a request on a
        // fresh connection, bench/RESULTS.md "Session 55").
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
        // A tick put off (a busy runtime) must not come twice in a row and
        // find a busy connection idle in between.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = 0;
        let mut closing = false;
        loop {
            tokio::select! {
                // The connection first: a request it has been sent is read
                // and started before a stop is seen, so the graceful
                // shutdown lets it finish. Seen first, the stop would close
                // a connection whose request waits unread, and the client
                // would get a reset instead of its answer.
                biased;
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::trace!("connection ended: {e}");
                    }
                    return;
                }
                _ = stop.wait_for(|&s| s), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = ticks.tick(), if !closing => {
                    let now = started.load(Ordering::Relaxed);
                    if now == seen {
                        tracing::debug!(idle = ?idle, "closing an idle connection");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    seen = now;
                }
            }
        }
    }
}

/// Longest an HTTP/2 client has to answer a keep-alive ping (a shorter
/// idle time is the limit instead).
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's service, counting the requests it starts and holding
/// each one's body bytes against the [`BodyMemory`] until it is answered.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    started: Arc<AtomicU64>,
    quiet: Quiet,
    memory: BodyMemory,
}

impl<S: tower::Service<Request>> tower::Service<hyper::Request<Incoming>> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Holding<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        self.started.fetch_add(1, Ordering::Relaxed);
        let quiet = self.quiet;
        let (request, tally) = if quiet.open_ended.contains(&request.uri().path()) {
            // Its messages come and go for as long as the stream lasts; a
            // tally would only grow.
            (request.map(Body::new), None)
        } else {
            // A body that came whole with its head's end (a GET) has
            // nothing to count: no tally is made for it.
            let tally = (!hyper::body::Body::is_end_stream(request.body()))
                .then(|| Arc::new(self.memory.tally()));
            let counted = tally.clone();
            let request = request.map(|body| Body::new(Patient::new(body, quiet, counted)));
            (request, tally)
        };
        Holding {
            future: self.inner.call(request),
            tally,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response on its way, holding its body's tally until the
    /// response is ready (or the request is dropped): the body's bytes stay
    /// with the handler until then.
    struct Holding<F> {
        #[pin]
        future: F,
        tally: Option<Arc<Tally>>,
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        this.tally.take();
        Poll::Ready(output)
    }
}

/// A request body that fails when no part of it is ready for the idle
/// time. Its timer is armed only while the body is waiting, so a body that
/// came whole with its head (as most do) sets none, and one timer serves
/// every wait of a body that comes in many parts. Its bytes count in
/// `tally`; the part that would take the server past its [`BodyMemory`]
/// fails, and what follows it passes uncounted, for a reader that drains
/// the rest before it answers.
struct Patient<B> {
    inner: B,
    quiet: Quiet,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` times the current wait (not an earlier one's).
    waiting: bool,
    /// `None` once a part was refused.
    tally: Option<Arc<Tally>>,
}

impl<B> Patient<B> {
    fn new(inner: B, quiet: Quiet, tally: Option<Arc<Tally>>) -> Self {
        Patient {
            inner,
            quiet,
            timer: None,
            waiting: false,
            tally,
        }
    }
}

impl<B> hyper::body::Body for Patient<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            let bytes = match &frame {
                Some(Ok(frame)) => frame.data_ref().map_or(0, Buf::remaining),
                _ => 0,
            };
            if let Some(tally) = &this.tally
                && let Err(refused) = tally.take(bytes)
            {
                this.tally = None;
                return Poll::Ready(Some(Err((this.quiet.over_budget)(refused))));
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let idle = this.quiet.idle;
        let timer = match &mut this.timer {
            Some(timer) if !this.waiting => {
                timer.as_mut().reset(tokio::time::Instant::now() + idle);
                timer
            }
            Some(timer) => timer,
            None => this.timer.insert(Box::pin(tokio::time::sleep(idle))),
        };
        this.waiting = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err((this.quiet.stalled)(idle)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn unlimited() -> BodyMemory {
        BodyMemory::new(usize::MAX, &crate::metrics::Metrics::new())
    }

    /// A connection whose request was sent before the server stopped gets
    /// its answer: the stop never closes it with the request unread. Each
    /// round would fail half the time if the stop could be seen first.
    #[tokio::test]
    async fn a_request_sent_before_the_stop_is_answered() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "served" }));
        let (_stopping, stopped) = watch::channel(true);
        for round in 0..32 {
            let (mut client, server) = tokio::io::duplex(4096);
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: edgeserve\r\n\r\n")
                .await
                .unwrap();
            let connection =
                Connection::new(app.clone(), Quiet::new(Duration::from_secs(5)), unlimited());
            let (_connections, alive) = watch::channel(());
            connection.run(server, stopped.clone(), alive).await;
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"),
                "round {round}: {answer:?}"
            );
        }
    }

    /// A new connection's request is read and answered at once: nothing on
    /// its way waits for a timer. With the clock paused, a timer awaited
    /// would move it (the connection's idle tick once held every first read
    /// back until the timer's next millisecond).
    #[tokio::test(start_paused = true)]
    async fn a_new_connection_waits_for_no_timer() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "served" }));
        let (_running, running) = watch::channel(false);
        let (_connections, alive) = watch::channel(());
        let (mut client, server) = tokio::io::duplex(4096);
        // Between two of the timer's milliseconds, as a running clock
        // mostly is: a timer due "now" is due at the next one.
        tokio::time::advance(Duration::from_micros(500)).await;
        let started = tokio::time::Instant::now();
        let connection = Connection::new(app, Quiet::new(Duration::from_secs(5)), unlimited());
        tokio::spawn(connection.run(server, running, alive));
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: edgeserve\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("served"), "{answer:?}");
        assert_eq!(tokio::time::Instant::now() - started, Duration::ZERO);
    }

    /// A body's bytes count from their arrival until the request is
    /// answered, not only while the body is being read: the handler holds
    /// them.
    #[tokio::test]
    async fn a_body_counts_until_its_request_is_answered() {
        let metrics = crate::metrics::Metrics::new();
        let memory = BodyMemory::new(1 << 20, &metrics);
        let (read, mut was_read) = tokio::sync::mpsc::channel::<usize>(1);
        let (answer, answered) = tokio::sync::watch::channel(false);
        let handler = move |body: axum::body::Bytes| async move {
            read.send(body.len()).await.unwrap();
            let mut answered = answered.clone();
            answered.wait_for(|&go| go).await.unwrap();
            "served"
        };
        let app = axum::Router::new().route("/", axum::routing::post(handler));
        let (_running, running) = watch::channel(false);
        let (_connections, alive) = watch::channel(());
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let connection = Connection::new(app, Quiet::new(Duration::from_secs(5)), memory);
        tokio::spawn(connection.run(server, running, alive));
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: edgeserve\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        client.write_all(&[b'x'; 1000]).await.unwrap();
        assert_eq!(was_read.recv().await, Some(1000));
        assert_eq!(metrics.body_memory_bytes.get(), 1000);
        answer.send(true).unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert!(text.ends_with("served"), "{text:?}");
        assert_eq!(metrics.body_memory_bytes.get(), 0);
    }

    /// A connection the kernel completed, its request sent, before the
    /// server stopped is accepted and answered, not reset by the listener
    /// closing under it.
    #[tokio::test]
    async fn a_connection_queued_before_the_stop_is_answered() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "served" }));
        for round in 0..8 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: edgeserve\r\n\r\n")
                .await
                .unwrap();
            let (_stopping, stopped) = watch::channel(true);
            let quiet = Quiet::new(Duration::from_secs(5));
            serve(listener, app.clone(), quiet, unlimited(), stopped)
                .await
                .unwrap();
            let mut answer = String::new();
            let read = client.read_to_string(&mut answer).await;
            assert!(
                read.is_ok() && answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"),
                "round {round}: {read:?} {answer:?}"
            );
        }
    }
}
