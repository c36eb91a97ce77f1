//! `ember serve`: the boot server. HTTPS (hyper + rustls on tokio) in front
//! of the attestation protocol ([`attest`]), SQLite state ([`store`]) and
//! sealed overlay streams.

pub mod attest;
pub mod http;
pub mod overlay;
pub mod replay;
pub mod store;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use attest::{Server, Settings};
use store::StateDir;

pub struct Options {
    pub state: PathBuf,
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub names: Vec<String>,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub manufacturer_cas: Vec<PathBuf>,
    pub settings: Settings,
    pub threads: usize,
}

pub fn run(opts: Options) -> Result<()> {
    let state = StateDir::new(&opts.state);
    let conn = store::open(&state)?;
    std::fs::create_dir_all(state.boot_dir())?;
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
    if opts.settings.replayable_sessions {
        eprintln!("ember-serve: WARNING: test mode: nonces and secrets are derived from the AK and replayable. Never use this in production.");
    }
    let server = Arc::new(Server {
        state: state.clone(),
        db: Mutex::new(conn),
        verifier: verify::Verifier::new(cas),
        settings: opts.settings.clone(),
    });

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
        let https = tokio::spawn(http::serve(
            listener,
            Some(acceptor),
            http::router(server.clone()),
        ));
        let purger = server.clone();
        let purge = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let s = purger.clone();
                let purged = tokio::task::spawn_blocking(move || {
                    let db = s.db.lock().unwrap_or_else(|p| p.into_inner());
                    store::purge_expired(&db, store::now_ms())
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
        });
        let plain = match opts.http_listen {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("listen on {a}"))?;
                println!("ember-serve: boot artifacts on http://{}", l.local_addr()?);
                Some(tokio::spawn(http::serve(
                    l,
                    None,
                    http::boot_router(server.clone()),
                )))
            }
            None => None,
        };
        if let Some(ca) = &identity.ca {
            println!(
                "ember-serve: CA certificate (bundle into initrds): {}",
                ca.display()
            );
        }
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
        https.abort();
        purge.abort();
        if let Some(p) = plain {
            p.abort();
        }
        Ok::<_, anyhow::Error>(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
