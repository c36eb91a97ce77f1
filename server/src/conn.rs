//! The listeners' connection layer: a cap on open connections that keeps
//! accepting fairly, header/idle timeouts on every connection, and an
//! accept loop that backs off instead of spinning when out of descriptors.
//!
//! Fairness: one source (an IPv4 address, an IPv6 /64: [`Source`]) holds
//! at most [`ConnLimits::max_per_source`] connections on a listener, so
//! one host trickling bytes cannot take the slots other hosts need; a
//! connection over that is closed at accept and counted. When every slot
//! is taken, a new connection evicts the connection that has been silent
//! longest (no byte read or written), so idle sockets cannot lock real
//! nodes out; when no connection is silent, the new one waits in the
//! kernel's backlog for a slot (back-pressure). Each listener has its own
//! [`Connections`]: a flood of one cannot starve the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower_service::Service;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::peer::Source;

/// Timeouts and the connection cap of one listener.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// TLS handshake, from accept.
    pub handshake_timeout: Duration,
    /// A request's header, from its first byte (hyper's header timer).
    pub header_timeout: Duration,
    /// No byte read or written for this long: the connection is closed.
    pub idle_timeout: Duration,
    /// Open connections at once on one listener.
    pub max_connections: usize,
    /// Open connections one source (IPv4 address, IPv6 /64) may hold on
    /// one listener; kept below `max_connections` (see
    /// [`ConnLimits::per_source`]).
    pub max_per_source: usize,
}

impl ConnLimits {
    /// The per-source share in effect: at most a quarter of the
    /// listener's slots, so one host (which may briefly hold twice its
    /// share while its evicted connections close) never holds more than
    /// half.
    pub fn per_source(&self) -> usize {
        self.max_per_source.min(self.max_connections / 4).max(1)
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            max_connections: 1024,
            max_per_source: 256,
        }
    }
}

/// The SHA-256 of the client certificate a TLS peer presented (its leaf's
/// DER), put into each request's extensions; absent when it sent none.
/// Only the console's listener asks for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCert(pub [u8; 32]);

/// The peer's address, put into each request's extensions.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What the accept loops and connection tasks share: the slots and, per
/// open connection, when it last moved a byte and how to ask it to close.
pub struct Connections {
    /// The listener's name in metrics and logs (`https`, `http`, `admin`).
    name: &'static str,
    limits: ConnLimits,
    /// Open connections per source.
    sources: Mutex<HashMap<Source, usize>>,
    slots: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    epoch: Instant,
    metrics: Arc<Metrics>,
}

/// One connection's liveness.
struct Activity {
    source: Source,
    /// Milliseconds since [`Connections::epoch`] of the last byte moved.
    last: AtomicU64,
    close: Notify,
}

impl Connections {
    pub fn new(name: &'static str, limits: ConnLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Connections {
            name,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            sources: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(self: &Arc<Self>, source: Source) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let a = Arc::new(Activity {
            source,
            last: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        self.table().insert(id, a.clone());
        self.metrics.connection_opened();
        (id, a)
    }

    fn unregister(&self, id: u64) {
        self.table().remove(&id);
        self.metrics.connection_closed();
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn source_table(&self) -> std::sync::MutexGuard<'_, HashMap<Source, usize>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection against its source. A source at its share
    /// pays with its own connections: the most silent of them is asked to
    /// close for the new one (a host's idle sockets never lock out its
    /// next request, and a host trickling bytes churns only its own
    /// sockets), counted as `per-source`. Connections asked to close may
    /// take their grace to go, so a source is refused outright (false,
    /// counted) at twice its share.
    fn claim_source(&self, src: Source) -> bool {
        let cap = self.limits.per_source();
        let mut t = self.source_table();
        let n = t.entry(src).or_insert(0);
        if *n >= 2 * cap {
            drop(t);
            self.metrics.connection_refused(self.name, "per-source");
            return false;
        }
        let over = *n >= cap;
        *n += 1;
        drop(t);
        if over {
            self.evict_most_silent_of(Some(src), Duration::ZERO);
            self.metrics.connection_refused(self.name, "per-source");
        }
        true
    }

    fn release_source(&self, src: Source) {
        let mut t = self.source_table();
        if let Some(n) = t.get_mut(&src) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&src);
            }
        }
    }

    /// Open connections now.
    pub fn open_count(&self) -> usize {
        self.table().len()
    }

    /// Shutdown: asks every open connection to finish the response it is
    /// sending and close, then waits until none is left or `bound` passed
    /// (a connection asked to close is dropped after `CLOSE_GRACE`
    /// anyway, so a bound above that drains all but the stuck). Returns
    /// how many were left. The accept loops must be stopped first.
    pub async fn drain(&self, bound: Duration) -> usize {
        let deadline = Instant::now() + bound;
        for a in self.table().values() {
            a.close.notify_one();
        }
        loop {
            let left = self.open_count();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks the connection silent longest (at least `min_silence`) to close;
    /// returns whether one was asked.
    fn evict_most_silent(&self, min_silence: Duration) -> bool {
        self.evict_most_silent_of(None, min_silence)
    }

    /// [`Connections::evict_most_silent`] among one source's connections
    /// (or all, for None).
    fn evict_most_silent_of(&self, source: Option<Source>, min_silence: Duration) -> bool {
        let now = self.now_ms();
        let victim = self
            .table()
            .values()
            .filter(|a| source.is_none_or(|s| a.source == s))
            .map(|a| {
                (
                    now.saturating_sub(a.last.load(Ordering::Relaxed)),
                    a.clone(),
                )
            })
            .filter(|(silent, _)| *silent >= min_silence.as_millis() as u64)
            .max_by_key(|(silent, _)| *silent);
        match victim {
            Some((_, a)) => {
                a.close.notify_one();
                self.metrics.connection_evicted();
                true
            }
            None => false,
        }
    }
}

/// Counts every byte moved as activity on the connection.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    conns: Arc<Connections>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        self.activity
            .last
            .store(self.conns.now_ms(), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long an asked-to-close connection may finish its response.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A connection must have been silent this long to be evicted for a new one.
const EVICT_MIN_SILENCE: Duration = Duration::from_millis(500);
/// How often a full server looks again for a connection to evict.
const EVICT_RETRY: Duration = Duration::from_millis(100);
/// Back-off bounds after a failed accept (EMFILE and the like).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serves `router` on `listener` (over TLS when `tls` is given) within the
/// shared connection slots.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    conns: Arc<Connections>,
) {
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut failures = 0u64;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors: free one (the most silent connection)
                // and wait, doubling the wait while it lasts; logged once
                // per streak so an attack cannot flood the log.
                failures += 1;
                if failures == 1 {
                    warn!(step = %"accept", outcome = %"error", detail = %e, action = %"back-off");
                }
                conns.evict_most_silent(Duration::ZERO);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        if failures > 0 {
            info!(step = %"accept", outcome = %"recovered", failed_accepts = failures);
            failures = 0;
        }
        backoff = ACCEPT_BACKOFF.0;
        let src = Source::of(peer.ip());
        if !conns.claim_source(src) {
            // Closed at once: the host already holds its share here.
            drop(tcp);
            continue;
        }
        let Some(permit) = slot(&conns).await else {
            conns.release_source(src);
            return;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            let (id, activity) = conns.register(src);
            let io = Tracked {
                inner: tcp,
                activity: activity.clone(),
                conns: conns.clone(),
            };
            serve_connection(io, peer, tls, router, &conns, &activity).await;
            conns.unregister(id);
            conns.release_source(src);
            drop(permit);
        });
    }
}

/// A connection slot: a free one, or one made by closing the most silent
/// connection (while none has been silent long enough, it waits and looks
/// again; new connections queue in the kernel's backlog meanwhile). None
/// once the slots are closed.
async fn slot(conns: &Connections) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(p) = conns.slots.clone().try_acquire_owned() {
        return Some(p);
    }
    loop {
        conns.evict_most_silent(EVICT_MIN_SILENCE);
        tokio::select! {
            p = conns.slots.clone().acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(EVICT_RETRY) => {}
        }
    }
}

async fn serve_connection(
    io: Tracked<tokio::net::TcpStream>,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    conns: &Arc<Connections>,
    activity: &Activity,
) {
    let limits = &conns.limits;
    match tls {
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)) => r,
                _ = activity.close.notified() => return,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|leaf| {
                            use sha2::Digest;
                            ClientCert(sha2::Sha256::digest(leaf.as_ref()).into())
                        });
                    http(stream, peer, client, router, conns, activity).await
                }
                Ok(Err(e)) => {
                    conns
                        .metrics
                        .connection_refused(conns.name, "handshake-failed");
                    info!(step = %"tls", outcome = %"handshake-failed", peer = %peer, detail = ?e)
                }
                Err(_) => {
                    conns
                        .metrics
                        .connection_refused(conns.name, "handshake-timeout");
                    info!(step = %"tls", outcome = %"handshake-timeout", peer = %peer)
                }
            }
        }
        None => http(io, peer, None, router, conns, activity).await,
    }
}

/// HTTP/1.1 on one connection until the client closes it, it stays silent
/// past the idle timeout, or it is evicted for a new connection.
async fn http<S>(
    stream: S,
    peer: SocketAddr,
    client: Option<ClientCert>,
    router: Router,
    conns: &Arc<Connections>,
    activity: &Activity,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &conns.limits;
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        if let Some(c) = client {
            req.extensions_mut().insert(c);
        }
        let mut router = router.clone();
        async move { router.call(req.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut closing: Option<(Instant, &str)> = None;
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if !e.is_incomplete_message() {
                        info!(step = %"http", outcome = %"connection-error", peer = %peer, detail = %e);
                    }
                }
                return;
            }
            _ = activity.close.notified(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now(), "evicted"));
            }
            _ = tokio::time::sleep(tick) => {
                let silent = conns.now_ms().saturating_sub(activity.last.load(Ordering::Relaxed));
                if closing.is_none() && silent >= limits.idle_timeout.as_millis() as u64 {
                    conn.as_mut().graceful_shutdown();
                    closing = Some((Instant::now(), "idle-timeout"));
                }
                if let Some((since, why)) = closing {
                    if since.elapsed() >= CLOSE_GRACE {
                        // A response still pending to a client that does not
                        // read: drop the connection.
                        conns.metrics.connection_refused(conns.name, why);
                        info!(step = %"http", outcome = %why, peer = %peer, silent_ms = silent);
                        return;
                    }
                }
            }
        }
    }
}
