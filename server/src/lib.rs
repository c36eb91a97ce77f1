//! The Ember boot server behind `ember serve`: HTTPS (hyper + rustls on
//! tokio) in front of the attestation protocol ([`attest`], refusing with
//! [`refusal::Refusal`]), the state
//! ([`store`]) its admin commands edit, and the envelope-sealed overlay
//! blobs and signed manifests ([`manifest`]). The
//! `ember` host tool owns the command line and calls [`run`].
//!
//! Logging: the library emits `tracing` events and installs no subscriber;
//! the binary decides the line format (`ember serve --log-format`). Events
//! are `step=... outcome=...` fields or a sentence; a field that holds free
//! text is recorded as a string (`detail = d.as_str()`), a token with `%`.
//! Announcements (where the server listens, what to bundle into initrds)
//! use the target [`ANNOUNCE`], which the binary writes to stdout. Nothing
//! logged may carry a secret: session secrets, credentials, data keys,
//! private keys or a database password.

#![forbid(unsafe_code)]

pub mod attest;
pub mod conn;
pub mod console;
pub mod http;
pub mod manifest;
pub mod measured;
pub mod metrics;
pub mod overlay;
pub mod peer;
pub mod refusal;
pub mod rollback;
pub mod rollout;
pub mod store;
pub mod tls;
pub mod uki;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use attest::{Server, Settings};
use conn::{ConnLimits, Connections};
use metrics::Metrics;
use store::StateDir;

/// The `tracing` target of announcements: lines scripts and operators read
/// to reach the server (`listening on https://ADDR`), written to stdout.
pub const ANNOUNCE: &str = "ember_server::announce";

pub struct Options {
    pub state: PathBuf,
    /// `--database`: None for SQLite in the state folder, or a
    /// `postgres://` URL several replicas share.
    pub database: Option<String>,
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    /// Prometheus metrics (and health) for operators, never for nodes.
    pub metrics_listen: Option<SocketAddr>,
    /// The operators' web console (HTTPS, operator client certificates).
    pub console_listen: Option<SocketAddr>,
    /// This replica's name in metrics and logs.
    pub replica_id: Option<String>,
    pub names: Vec<String>,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub manufacturer_cas: Vec<PathBuf>,
    pub settings: Settings,
    pub limits: ConnLimits,
    pub body_timeout: Duration,
    pub threads: usize,
    /// The ESP's boot loader, for the PCR 4 a last-known-good slot reaches.
    pub esp_loader: PathBuf,
    /// Failed boot options before the ESP a slot's seal allows.
    pub esp_failed_boot_options: usize,
}

/// Descriptors kept back from the connection cap for the database, overlay
/// blobs being streamed, listeners and logs.
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-files limit to the hard one and returns the cap on
/// open connections it allows: about half the descriptors (each overlay
/// download also holds its blob open), less a reserve.
fn connection_budget(requested: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum) {
        if cur < max {
            lim.current = Some(max);
            let _ = setrlimit(Resource::Nofile, lim);
        }
    }
    let files = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    let budget = (files.saturating_sub(RESERVED_FDS) / 2).max(8) as usize;
    if requested > budget {
        warn!("--max-connections {requested} lowered to {budget}: the open-files limit is {files}");
    }
    requested.min(budget)
}

fn replica_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let host = rustix::system::uname();
        host.nodename().to_string_lossy().into_owned()
    })
}

/// Runs the server until SIGINT or SIGTERM: the state, the TLS identity,
/// the protocol's server and the connection slots, then the listeners on a
/// tokio runtime of `opts.threads` workers.
pub fn run(opts: Options) -> Result<()> {
    let state = StateDir::new(&opts.state);
    let server = Arc::new(open_server(&opts, &state)?);
    let identity = tls_identity(&opts, &state)?;
    let tls_config = tls::server_config(&identity)?;
    let conns = connection_slots(&opts, &server);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async {
        let listener = bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        let mut tasks = vec![
            tokio::spawn(conn::serve(
                listener,
                Some(acceptor),
                http::router(server.clone()),
                conns.https.clone(),
            )),
            spawn_purger(server.clone()),
            spawn_rollouts(server.clone()),
        ];
        tasks.extend(serve_plain_listeners(&opts, &server, &conns.http).await?);
        if let Some(a) = opts.console_listen {
            tasks.push(serve_console(a, &identity, &state, &server).await?);
        }
        announce(&identity, &state, addr);
        let stopped = until_shutdown().await;
        info!("shutting down");
        // Stop accepting, then let the requests in flight finish.
        for t in tasks {
            t.abort();
        }
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(
            conns.https.drain(DRAIN_TIMEOUT),
            conns.http.drain(DRAIN_TIMEOUT)
        );
        let left = a + b;
        info!(
            step = %"shutdown",
            drained_ms = started.elapsed().as_millis() as u64,
            connections_left = left
        );
        stopped
    })?;
    // Blocking jobs still running (a statement waiting on a silent
    // database) are abandoned after this; the process exits either way.
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// How long SIGTERM waits for open connections to finish their responses.
/// Above the close grace (2 s) a connection gets after being asked to
/// close, and well below systemd's default stop timeout (90 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The state folder's database and folders, the manifest signing key, the
/// manufacturer CAs and metrics: the protocol's [`Server`].
fn open_server(opts: &Options, state: &StateDir) -> Result<Server> {
    let pool = store::open_pool(state, opts.database.as_deref())?;
    std::fs::create_dir_all(state.boot_dir())?;
    std::fs::create_dir_all(state.sealed_dir())?;
    let (signing_key, created) = manifest::ensure_signing_key(state)?;
    if created {
        info!("created the overlay manifest signing key");
    }
    let cas = verify::load_cas(&opts.manufacturer_cas)?;
    #[cfg(feature = "test-hooks")]
    if opts.settings.replayable_sessions {
        warn!("WARNING: test mode: nonces and secrets are derived from the AK and replayable. Never use this in production.");
    }
    Ok(Server {
        state: state.clone(),
        db: pool,
        verifier: verify::Verifier::new(cas),
        settings: opts.settings.clone(),
        metrics: Arc::new(Metrics::new(replica_name(opts.replica_id.clone()))),
        body_timeout: opts.body_timeout,
        http_port: std::sync::OnceLock::new(),
        signing_key,
        ukis: uki::Known::new(&opts.esp_loader, opts.esp_failed_boot_options),
    })
}

/// The operator's certificate (`--cert`/`--key`), or the state folder's
/// own CA and server certificate, made on first start.
fn tls_identity(opts: &Options, state: &StateDir) -> Result<tls::Identity> {
    if let Some((cert, key)) = &opts.cert {
        return Ok(tls::Identity {
            cert_chain: cert.clone(),
            key: key.clone(),
            ca: None,
        });
    }
    let (id, created) = tls::ensure_identity(state, &opts.names)?;
    if created {
        info!("created CA and server certificate for {:?}", opts.names);
    }
    Ok(id)
}

/// The node listeners' connection slots, each its own budget so a flood
/// of one cannot starve the other.
struct Slots {
    https: Arc<Connections>,
    http: Arc<Connections>,
}

/// Splits what the open-files limit allows between the two node
/// listeners (HTTPS three quarters: attestation needs it; plain HTTP a
/// quarter, at least 8); logs the settings the server runs with.
fn connection_slots(opts: &Options, server: &Server) -> Slots {
    let total = connection_budget(opts.limits.max_connections);
    let mut https = opts.limits.clone();
    let mut plain = opts.limits.clone();
    plain.max_connections = (total / 4).max(8);
    https.max_connections = total.saturating_sub(total / 4).max(8);
    info!(
        replica = %server.metrics.replica(),
        // Database's Debug names host, database and user, never a password.
        database = ?server.db.database(),
        max_connections = total,
        https_connections = https.max_connections,
        http_connections = plain.max_connections,
        per_source_https = https.per_source(),
        per_source_http = plain.per_source(),
        header_timeout = ?https.header_timeout,
        idle_timeout = ?https.idle_timeout,
        body_timeout = ?opts.body_timeout,
    );
    Slots {
        https: Connections::new("https", https, server.metrics.clone()),
        http: Connections::new("http", plain, server.metrics.clone()),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))
}

/// Deletes expired credentials and sessions once a minute.
fn spawn_purger(server: Arc<Server>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let s = server.clone();
            let purged = tokio::task::spawn_blocking(move || {
                store::purge_expired(&mut s.db.get()?, store::now_ms())
            })
            .await;
            match purged {
                Ok(Ok((0, 0))) | Err(_) => {}
                Ok(Ok((c, n))) => info!(step = %"purge", credentials = c, sessions = n),
                Ok(Err(e)) => {
                    let detail = format!("{e:#}");
                    warn!(step = %"purge", outcome = %"error", detail = %detail);
                }
            }
        }
    })
}

/// Ticks the open rollouts ([`rollout::TICK`]): every replica does, each
/// rollout under its row lock, so they agree through the database.
fn spawn_rollouts(server: Arc<Server>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(rollout::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = server.clone();
            let done = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
                let mut db = s.db.get()?;
                let lines = rollout::engine::tick_all(&mut db, store::now_ms())?;
                s.metrics.set_rollouts(rollout::engine::counts(&mut *db)?);
                Ok(lines)
            })
            .await;
            match done {
                Ok(Ok(lines)) => {
                    for line in lines {
                        info!(step = %"rollout", detail = line.as_str());
                    }
                }
                Err(_) => {}
                Ok(Err(e)) => {
                    let detail = format!("{e:#}");
                    warn!(step = %"rollout", outcome = %"error", detail = %detail);
                }
            }
        }
    })
}

/// The plain-HTTP listeners: boot artifacts and sealed blobs for nodes
/// (`--http-listen`), metrics for operators (`--metrics-listen`).
async fn serve_plain_listeners(
    opts: &Options,
    server: &Arc<Server>,
    conns: &Arc<Connections>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if let Some(a) = opts.http_listen {
        let l = bind(a).await?;
        let bound = l.local_addr()?;
        let _ = server.http_port.set(bound.port());
        // Tests and scripts read the address from this line.
        info!(target: ANNOUNCE, "boot artifacts on http://{bound}");
        let blobs = ember_proto::msg::path::BLOB;
        info!(target: ANNOUNCE, "sealed overlay blobs on http://{bound}{blobs}");
        let router = http::boot_router(server.clone());
        tasks.push(tokio::spawn(conn::serve(l, None, router, conns.clone())));
    }
    if let Some(a) = opts.metrics_listen {
        let l = bind(a).await?;
        info!(target: ANNOUNCE, "metrics on http://{}/metrics", l.local_addr()?);
        // Its own slots: a flood of node connections cannot hide the
        // server's state from the operator.
        let admin = Connections::new(
            "admin",
            ConnLimits {
                max_connections: 16,
                ..ConnLimits::default()
            },
            Arc::new(Metrics::default()),
        );
        let router = http::admin_router(server.clone());
        tasks.push(tokio::spawn(conn::serve(l, None, router, admin)));
    }
    Ok(tasks)
}

/// The console's listener: HTTPS with the server's certificate, asking
/// for operator client certificates, on connection slots of its own.
async fn serve_console(
    addr: SocketAddr,
    identity: &tls::Identity,
    state: &StateDir,
    server: &Arc<Server>,
) -> Result<JoinHandle<()>> {
    let ca = console::auth::operator_ca(state)?;
    let config = console::auth::server_config(identity, &ca)?;
    let app = Arc::new(console::Console {
        server: server.clone(),
        csrf_key: console::auth::csrf_key(state)?,
    });
    let l = bind(addr).await?;
    info!(target: ANNOUNCE, "console on https://{} (operators: `ember admin operator issue NAME --out DIR`)", l.local_addr()?);
    // Its own metrics: the console's operators are not nodes, and the
    // node-facing gauges and refusal counters stay about nodes.
    let slots = Connections::new(
        "console",
        ConnLimits {
            max_connections: 256,
            ..ConnLimits::default()
        },
        Arc::new(Metrics::default()),
    );
    Ok(tokio::spawn(conn::serve(
        l,
        Some(tokio_rustls::TlsAcceptor::from(config)),
        console::router(app),
        slots,
    )))
}

/// What to bundle into initrds, and last the line that says the server is
/// up: tests and scripts wait for `listening on https://ADDR`.
fn announce(identity: &tls::Identity, state: &StateDir, addr: SocketAddr) {
    if let Some(ca) = &identity.ca {
        info!(target: ANNOUNCE, "CA certificate (bundle into initrds): {}", ca.display());
    }
    info!(
        target: ANNOUNCE,
        "manifest public key (bundle into initrds as {}): {}",
        ember_proto::manifest::PUBLIC_KEY_PATH,
        manifest::public_path(state).display()
    );
    info!(target: ANNOUNCE, "listening on https://{addr}");
}

async fn until_shutdown() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
