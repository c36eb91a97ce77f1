//! `ember serve`: runs the boot server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::serve::{self, attest::Settings};

#[derive(Args)]
pub struct ServeArgs {
    /// State folder (created on first start with a CA and server certificate).
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
    /// HTTPS listen address (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Also serve boot artifacts (GET /v1/boot/SHA256) over plain HTTP here.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// DNS name or IP address for the generated server certificate (repeatable).
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Operator-provided server certificate chain (PEM) instead of the generated one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// TPM manufacturer CA certificates (PEM/DER; repeatable); EK
    /// certificates chaining to them admit nodes into --auto-enroll-group.
    #[arg(long)]
    pub manufacturer_ca: Vec<PathBuf>,
    /// Group for nodes admitted by their EK certificate chain.
    #[arg(long, default_value = "default")]
    pub auto_enroll_group: String,
    /// Session lifetime between Start and Finish, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// Bearer credential lifetime, e.g. 10m.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub credential_ttl: Duration,
    /// Plaintext bytes per sealed chunk.
    #[arg(long, default_value_t = ember_proto::sealed::DEFAULT_CHUNK)]
    pub chunk_size: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// TEST ONLY: derive nonces and secrets from the AK so recorded
    /// transcripts replay (load tests). Never in production.
    #[arg(long, hide = true)]
    pub test_replayable_sessions: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 60s, 10m, 500ms"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    })
}

pub fn run(a: ServeArgs) -> Result<()> {
    if !(ember_proto::sealed::MIN_CHUNK..=ember_proto::sealed::MAX_CHUNK).contains(&a.chunk_size) {
        bail!(
            "--chunk-size must be {}..={}",
            ember_proto::sealed::MIN_CHUNK,
            ember_proto::sealed::MAX_CHUNK
        );
    }
    if a.session_ttl.is_zero() || a.credential_ttl.is_zero() {
        bail!("lifetimes must be positive");
    }
    crate::enroll_cmd::check_group(&a.auto_enroll_group)?;
    let auto = !a.manufacturer_ca.is_empty();
    serve::run(serve::Options {
        state: a.state,
        listen: a.listen,
        http_listen: a.http_listen,
        names: a.names,
        cert: a.cert.zip(a.key),
        manufacturer_cas: a.manufacturer_ca,
        settings: Settings {
            session_ttl_ms: a.session_ttl.as_millis() as i64,
            credential_ttl_ms: a.credential_ttl.as_millis() as i64,
            chunk_size: a.chunk_size,
            auto_enroll_group: auto.then_some(a.auto_enroll_group),
            replayable_sessions: a.test_replayable_sessions,
        },
        threads: a.threads,
    })
}
