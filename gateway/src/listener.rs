//! The gateway's accept loop, hardened against hostile clients.
//!
//! `axum::serve` has no header timeout and no connection limit: 200 clients
//! dribbling one header line every few seconds stay open forever, and a
//! thousand half-sent requests exhaust the file descriptors so `/healthz`
//! and logins hang. This loop serves the same router over hyper with:
//!
//! - a **header read timeout** (`header_timeout_secs`) and, in
//!   [`read_body_in_time`], a **body timeout** (`body_timeout_secs`);
//! - a **connection limit** (`max_connections`, by default the open-file
//!   limit minus `fd_headroom`). Connections over it, up to a quarter of
//!   the headroom, are *overflow*: answered only `/healthz` (everything
//!   else a 503), one request, a short header timeout. When those places
//!   are all taken, a new connection closes the **oldest** overflow
//!   connection and takes its place ([`OverflowQueue`]): a `/healthz` probe
//!   sends its request at once and is done in a millisecond, while a
//!   flood's half-sent requests wait, so a flood evicts itself, not the
//!   probes. Connections being closed that way count against another
//!   quarter of the headroom; past that, new connections are closed at
//!   once. Established sessions are untouched either way. Refusals and
//!   evictions are counted in `/metrics` and logged at most once per
//!   [`LOG_EVERY`];
//! - `TCP_NODELAY` on every socket (small frames must not wait for Nagle);
//! - HTTPS and WSS when a certificate is configured: the TLS handshake
//!   runs in the connection's own task within the header timeout, and
//!   every answer then carries `Strict-Transport-Security`;
//! - the client's address in every request ([`ClientAddr`]) for the
//!   per-address throttles: behind a trusted proxy, the one it forwards
//!   for ([`crate::client_addr`]).
//!
//! A WebSocket keeps its connection slot until its socket closes: the slot
//! travels with the stream ([`CountedStream`]) into the upgrade.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actors::Metrics;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::client_addr::TrustedProxies;
use crate::config::GatewayConfig;
use crate::{AppState, Error};

/// Refusals are logged at most once per this period (with a count), so a
/// flood cannot flood the log too.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Header timeout of overflow connections: they only get `/healthz`.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection limits in force, resolved from the configuration and the
/// process's open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served normally.
    pub max_connections: usize,
    /// Extra connections answered only `/healthz`; as many again may be
    /// closing, evicted by newer ones.
    pub overflow: usize,
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
}

impl ConnectionLimits {
    /// `max_connections` (0: the soft open-file limit minus `fd_headroom`)
    /// and a quarter of the headroom as overflow (a second quarter for
    /// overflow connections being evicted: half the headroom in all).
    pub fn resolve(config: &GatewayConfig) -> Self {
        let abuse = &config.abuse;
        let max_connections = match abuse.max_connections {
            0 => {
                let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
                    .map(|(soft, _)| soft)
                    .unwrap_or(1024);
                let soft = usize::try_from(soft).unwrap_or(usize::MAX);
                soft.saturating_sub(abuse.fd_headroom).max(1)
            }
            n => n,
        };
        Self {
            max_connections,
            overflow: (abuse.fd_headroom / 4).max(1),
            header_timeout: Duration::from_secs(abuse.header_timeout_secs.max(1)),
        }
    }
}

/// The address of the client that sent a request: the socket's, or the
/// one a trusted proxy forwards for (resolved once per request by the
/// listener). Outside the listener (router tests) it is the unspecified
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        if let Some(resolved) = parts.extensions.get::<ClientAddr>() {
            return Ok(*resolved);
        }
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// A log line at most once per [`LOG_EVERY`], counting what it skipped.
#[derive(Debug)]
struct RateLimitedLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    fn new() -> Self {
        Self {
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; returns how many to report when a line is due.
    fn due(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let now = Instant::now();
        if state.0.is_some_and(|last| now - last < LOG_EVERY) {
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}

/// The overflow connections still waiting for their request, oldest first.
/// When every overflow place is taken, the oldest is told to close and the
/// newcomer takes a place (bounded by twice the overflow while the evicted
/// ones close).
#[derive(Debug, Default)]
struct OverflowQueue {
    next_id: AtomicU64,
    waiting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

impl OverflowQueue {
    /// Enters a new overflow connection; the entry leaves the queue when
    /// dropped (its connection ended).
    fn enter(self: &Arc<Self>) -> OverflowEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.lock().push_back((id, evict.clone()));
        OverflowEntry {
            queue: self.clone(),
            id,
            evict,
        }
    }

    /// Tells the oldest waiting overflow connection to close; false if
    /// there is none.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_front() {
            Some((_, evict)) => {
                // A stored permit: the connection closes even if it is
                // not waiting on it yet.
                evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An overflow connection's place in the [`OverflowQueue`].
struct OverflowEntry {
    queue: Arc<OverflowQueue>,
    id: u64,
    evict: Arc<Notify>,
}

impl Drop for OverflowEntry {
    fn drop(&mut self) {
        let mut waiting = self.queue.lock();
        if let Some(at) = waiting.iter().position(|(id, _)| *id == self.id) {
            waiting.remove(at);
        }
    }
}

/// What the accept loop shares with its connections.
struct Shared {
    app: axum::Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    trusted_proxies: TrustedProxies,
    metrics: Arc<Metrics>,
    open: Arc<AtomicUsize>,
    overflow: Arc<AtomicUsize>,
    overflow_queue: Arc<OverflowQueue>,
    refused_log: RateLimitedLog,
    overflow_log: RateLimitedLog,
    accept_log: RateLimitedLog,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and asks every connection to finish (in-flight requests
/// complete; WebSockets are ended by the node's own shutdown, and this
/// returns once they have closed). Requests from `trusted_proxies` are
/// attributed to the client their forwarding headers name. With `tls`,
/// every connection speaks HTTPS (and WSS).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    trusted_proxies: TrustedProxies,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tracing::info!(
        max_connections = limits.max_connections,
        overflow = limits.overflow,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        trusted_proxies = trusted_proxies.len(),
        tls = tls.is_some(),
        "gateway accepting"
    );
    let shared = Arc::new(Shared {
        app,
        limits,
        tls,
        trusted_proxies,
        metrics,
        open: Arc::new(AtomicUsize::new(0)),
        overflow: Arc::new(AtomicUsize::new(0)),
        overflow_queue: Arc::new(OverflowQueue::default()),
        refused_log: RateLimitedLog::new(),
        overflow_log: RateLimitedLog::new(),
        accept_log: RateLimitedLog::new(),
    });
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => admit(&shared, stream, addr, stopping.clone()),
            Err(e) => {
                // Out of file descriptors (EMFILE) or a connection reset
                // before it was accepted: back off briefly, keep serving.
                if let Some(n) = shared.accept_log.due() {
                    tracing::warn!(error = %e, errors = n, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(stopping);
    // Every connection holds a receiver: this completes when all are done.
    stop.closed().await;
    // Upgraded WebSockets left that count: each holds its slot until its
    // socket is closed. The node closes them (1012) while shutting down;
    // wait for their close handshakes, so a process exit does not turn a
    // close frame into a reset (the caller bounds the whole wait).
    while shared.open.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Decides a new connection's fate: served, overflow, or closed.
fn admit(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY failed");
    }
    let limits = shared.limits;
    let slot = if let Some(slot) = Slot::take(&shared.open, limits.max_connections) {
        Some((slot, false))
    } else if let Some(slot) = Slot::take(&shared.overflow, limits.overflow) {
        shared.metrics.connections_overflow.inc();
        if let Some(n) = shared.overflow_log.due() {
            tracing::warn!(
                connections = n,
                max_connections = limits.max_connections,
                "connection limit reached: serving only /healthz to new connections"
            );
        }
        Some((slot, true))
    } else if let Some(slot) = Slot::take(&shared.overflow, 2 * limits.overflow)
        .filter(|_| shared.overflow_queue.evict_oldest())
    {
        // The oldest overflow connection makes room (its place is freed
        // when it has closed; until then this one is over by one).
        shared.metrics.connections_overflow.inc();
        shared.metrics.connections_refused.inc();
        if let Some(n) = shared.refused_log.due() {
            tracing::warn!(
                evicted = n,
                max_connections = limits.max_connections,
                overflow = limits.overflow,
                "connection limit and overflow reached: closing the oldest waiting connections"
            );
        }
        Some((slot, true))
    } else {
        None
    };
    let Some((slot, overflow)) = slot else {
        shared.metrics.connections_refused.inc();
        if let Some(n) = shared.refused_log.due() {
            tracing::warn!(
                refused = n,
                max_connections = limits.max_connections,
                overflow = limits.overflow,
                "connection limit and headroom reached: closing new connections"
            );
        }
        drop(stream);
        return;
    };
    let gauge = (!overflow).then(|| shared.metrics.connections_open.clone());
    if let Some(g) = &gauge {
        g.inc();
    }
    let stream = CountedStream {
        inner: stream,
        _slot: slot,
        gauge,
    };
    // Queued here, in accept order, so the next arrival can evict it even
    // before its task first runs.
    let entry = overflow.then(|| shared.overflow_queue.enter());
    tokio::spawn(serve_connection(
        shared.clone(),
        stream,
        addr,
        entry,
        stopping,
    ));
}

/// One connection, until it closes (or upgrades: the WebSocket then owns
/// the stream and its slot). `entry`: its place in the overflow queue, for
/// an overflow connection.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: CountedStream,
    addr: SocketAddr,
    entry: Option<OverflowEntry>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let overflow = entry.is_some();
    let header_timeout = if overflow {
        OVERFLOW_HEADER_TIMEOUT
    } else {
        shared.limits.header_timeout
    };
    let stream: Box<dyn Io> = match &shared.tls {
        None => Box::new(stream),
        // The handshake counts against the header timeout: a client that
        // opens a socket and says nothing holds it no longer than one
        // that dribbles its headers.
        Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %addr, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%addr, "TLS handshake timed out");
                return;
            }
        },
    };
    let app = shared.app.clone();
    let proxies = shared.trusted_proxies.clone();
    let hsts = shared.tls.is_some();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let client = proxies.client_addr(addr.ip(), req.headers());
        req.extensions_mut().insert(ConnectInfo(addr));
        req.extensions_mut().insert(ClientAddr(client));
        let app = app.clone();
        async move {
            if overflow && req.uri().path() != "/healthz" {
                return Ok(Error::Overloaded.into_response());
            }
            let mut response = app.oneshot(req.map(axum::body::Body::new)).await?;
            if hsts {
                response.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static(HSTS),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    if overflow {
        builder.keep_alive(false);
    }
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let evicted = async {
        match &entry {
            Some(entry) => entry.evict.notified().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = evicted => {
            tracing::debug!(%addr, "overflow connection evicted by a newer one");
            Ok(())
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests: the client's
        // doing, not worth more than a debug line.
        tracing::debug!(error = %e, %addr, "connection ended with an error");
    }
}

/// `Strict-Transport-Security` of every answer over TLS: browsers use
/// HTTPS for this host for a year.
const HSTS: &str = "max-age=31536000";

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A place under a connection limit; dropping it frees the place.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a place if fewer than `max` are taken.
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream holding its connection slot (and the open-connections
/// gauge) until it is dropped, even after a WebSocket upgrade.
struct CountedStream {
    inner: TcpStream,
    _slot: Slot,
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Middleware: reads a request's body within `body_timeout_secs` (and
/// `max_body_bytes`), so a client cannot hold a handler by trickling its
/// body. Requests without a body pass straight through.
pub(crate) async fn read_body_in_time(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::body::HttpBody;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let timeout = Duration::from_secs(state.config.abuse.body_timeout_secs.max(1));
    let limit = state.config.max_body_bytes;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => Error::TooLarge { limit_bytes: limit }.into_response(),
        Err(_) => Error::BadRequest(format!(
            "request body not received within {} s",
            timeout.as_secs()
        ))
        .into_response(),
    }
}
