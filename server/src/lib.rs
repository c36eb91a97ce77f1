//! The Ember boot server behind `ember serve`: HTTPS (hyper + rustls on
//! tokio) in front of the attestation protocol ([`attest`], refusing with
//! [`refusal::Refusal`]), the state
//! ([`store`]) its admin commands edit, and the envelope-sealed overlay
//! blobs and signed manifests ([`manifest`]). The
//! `ember` host tool owns the command line and calls [`run`].

#![forbid(unsafe_code)]

pub mod attest;
pub mod conn;
pub mod http;
pub mod manifest;
pub mod measured;
pub mod metrics;
pub mod overlay;
pub mod refusal;
pub mod rollback;
pub mod store;
pub mod tls;
pub mod uki;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use attest::{Server, Settings};
use conn::{ConnLimits, Connections};
use metrics::Metrics;
use store::StateDir;

pub struct Options {
    pub state: PathBuf,
    /// `--database`: None for SQLite in the state folder, or a
    /// `postgres://` URL several replicas share.
    pub database: Option<String>,
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    /// Prometheus metrics (and health) for operators, never for nodes.
    pub metrics_listen: Option<SocketAddr>,
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
        eprintln!(
            "ember-serve: --max-connections {requested} lowered to {budget}: the open-files limit is {files}"
        );
    }
    requested.min(budget)
}

fn replica_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let host = rustix::system::uname();
        host.nodename().to_string_lossy().into_owned()
    })
}

pub fn run(opts: Options) -> Result<()> {
    let state = StateDir::new(&opts.state);
    let pool = store::open_pool(&state, opts.database.as_deref())?;
    std::fs::create_dir_all(state.boot_dir())?;
    std::fs::create_dir_all(state.sealed_dir())?;
    let (signing_key, created) = manifest::ensure_signing_key(&state)?;
    if created {
        eprintln!("ember-serve: created the overlay manifest signing key");
    }
    let identity = match &opts.cert {
        Some((cert, key)) => tls::Identity {
            cert_chain: cert.clone(),
            key: key.clone(),
            ca: None,
        },
        None => {
            let (id, created) = tls::ensure_identity(&state, &opts.names)?;
            if created {
                eprintln!(
                    "ember-serve: created CA and server certificate for {:?}",
                    opts.names
                );
            }
            id
        }
    };
    let tls_config = tls::server_config(&identity)?;
    let cas = verify::load_cas(&opts.manufacturer_cas)?;
    #[cfg(feature = "test-hooks")]
    if opts.settings.replayable_sessions {
        eprintln!("ember-serve: WARNING: test mode: nonces and secrets are derived from the AK and replayable. Never use this in production.");
    }
    let metrics = Arc::new(Metrics::new(replica_name(opts.replica_id.clone())));
    let server = Arc::new(Server {
        state: state.clone(),
        db: pool,
        verifier: verify::Verifier::new(cas),
        settings: opts.settings.clone(),
        metrics: metrics.clone(),
        body_timeout: opts.body_timeout,
        http_port: std::sync::OnceLock::new(),
        signing_key,
        ukis: uki::Known::new(&opts.esp_loader, opts.esp_failed_boot_options),
    });
    let mut limits = opts.limits.clone();
    limits.max_connections = connection_budget(limits.max_connections);
    eprintln!(
        "ember-serve: replica={} database={:?} max_connections={} header_timeout={:?} idle_timeout={:?} body_timeout={:?}",
        metrics.replica(),
        server.db.database(),
        limits.max_connections,
        limits.header_timeout,
        limits.idle_timeout,
        opts.body_timeout
    );
    let conns = Connections::new(limits, metrics.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        let mut tasks = vec![tokio::spawn(conn::serve(
            listener,
            Some(acceptor),
            http::router(server.clone()),
            conns.clone(),
        ))];
        let purger = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let s = purger.clone();
                let purged = tokio::task::spawn_blocking(move || {
                    store::purge_expired(&mut s.db.get()?, store::now_ms())
                })
                .await;
                match purged {
                    Ok(Ok((0, 0))) | Err(_) => {}
                    Ok(Ok((c, n))) => {
                        eprintln!("ember-serve: step=purge credentials={c} sessions={n}")
                    }
                    Ok(Err(e)) => eprintln!("ember-serve: step=purge outcome=error detail={e:#}"),
                }
            }
        }));
        if let Some(a) = opts.http_listen {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listen on {a}"))?;
            let bound = l.local_addr()?;
            let _ = server.http_port.set(bound.port());
            // Tests and scripts read the address from this line.
            println!("ember-serve: boot artifacts on http://{bound}");
            println!(
                "ember-serve: sealed overlay blobs on http://{bound}{}",
                ember_proto::msg::path::BLOB
            );
            tasks.push(tokio::spawn(conn::serve(
                l,
                None,
                http::boot_router(server.clone()),
                conns.clone(),
            )));
        }
        if let Some(a) = opts.metrics_listen {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listen on {a}"))?;
            println!("ember-serve: metrics on http://{}/metrics", l.local_addr()?);
            // Its own slots: a flood of node connections cannot hide the
            // server's state from the operator.
            let admin = Connections::new(
                ConnLimits {
                    max_connections: 16,
                    ..ConnLimits::default()
                },
                Arc::new(Metrics::default()),
            );
            tasks.push(tokio::spawn(conn::serve(
                l,
                None,
                http::admin_router(server.clone()),
                admin,
            )));
        }
        if let Some(ca) = &identity.ca {
            println!(
                "ember-serve: CA certificate (bundle into initrds): {}",
                ca.display()
            );
        }
        println!(
            "ember-serve: manifest public key (bundle into initrds as {}): {}",
            ember_proto::manifest::PUBLIC_KEY_PATH,
            manifest::public_path(&state).display()
        );
        // Tests and scripts wait for this line.
        println!("ember-serve: listening on https://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("ember-serve: shutting down");
        for t in tasks {
            t.abort();
        }
        Ok::<_, anyhow::Error>(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
