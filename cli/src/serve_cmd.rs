//! `ember serve`: runs the boot server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use ember_server::{self as serve, attest::Settings, conn::ConnLimits};

#[derive(Args)]
pub struct ServeArgs {
    /// State folder (created on first start with a CA and server
    /// certificate) and database; replicas on one PostgreSQL share the
    /// folder's tls/ and blobs/ (book: "Replicas on PostgreSQL").
    #[command(flatten)]
    pub state: crate::state_args::StateArgs,
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
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Serve Prometheus metrics on http://ADDR/metrics (an operator's
    /// network only: it is not authenticated).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the operators' web console on https://ADDR (off by default).
    /// Operators need a client certificate: `ember admin operator issue`.
    #[arg(long, value_name = "ADDR")]
    pub console_listen: Option<SocketAddr>,
    /// This replica's name in metrics and logs (default: the host name).
    #[arg(long)]
    pub replica_id: Option<String>,
    /// Open client connections at once over both node listeners (lowered
    /// to what the open-files limit allows): HTTPS gets three quarters,
    /// plain HTTP a quarter, each its own budget. When a listener is full,
    /// its connection silent longest is closed for a new one.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Open connections one source (an IPv4 address, an IPv6 /64) may hold
    /// on one listener (at most half the listener's slots): one host
    /// cannot take the slots other hosts need. A rack behind NAT is one
    /// source.
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_source: usize,
    /// Time a client has to send a request's header.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// A connection that moves no byte for this long is closed.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Open (started, unfinished) sessions one EK may hold from one client
    /// address (IPv4, or IPv6 /64): Starts for an EK sent from elsewhere,
    /// which need only its public key, never use up its owner's share.
    #[arg(long, default_value_t = 4)]
    pub max_sessions_per_ek: u64,
    /// Open sessions one client address may hold (a rack behind NAT shares one).
    #[arg(long, default_value_t = 256)]
    pub max_sessions_per_peer: u64,
    /// The boot loader on the nodes' ESPs (`EFI/BOOT/BOOTX64.EFI`): the
    /// PCR 4 a node's last-known-good slot reaches, which its key is
    /// sealed to, includes its Authenticode digest.
    #[arg(long, default_value = ember_server::uki::DEBIAN_ESP_LOADER)]
    pub esp_loader: PathBuf,
    /// Boot options the nodes' firmware may try and fail (a network boot
    /// whose server is down) before it boots the ESP: each changes PCR 4,
    /// so a slot's key is sealed once per count, 0 to this.
    #[arg(long, default_value_t = ember_server::uki::DEFAULT_FAILED_BOOT_OPTIONS, value_parser = clap::value_parser!(u8).range(0..=16))]
    pub esp_failed_boot_options: u8,
    /// LAB MODE, never in production: a node with no PCR policy (its own,
    /// its group's or the default) has its first boot's PCRs 0-7 recorded
    /// as its policy instead of being refused. Trusts whatever boots first.
    #[arg(long)]
    pub lab_record_first_boot: bool,
    /// Boot reports (with their phase tables) kept per node: the newest N
    /// boots; older ones are dropped as new reports arrive.
    #[arg(long, default_value_t = ember_server::store::reports::DEFAULT_KEEP_BOOTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_boots: u32,
    /// Log lines as text (`ember-serve: step=... outcome=...`) or as one
    /// JSON object per line (timestamp, level, target, message, fields).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: crate::logging::LogFormat,
    /// TEST ONLY: derive nonces and secrets from the AK so recorded
    /// transcripts replay (load tests). Only in binaries built with the
    /// `test-hooks` feature, which release builds never enable.
    #[cfg(feature = "test-hooks")]
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
    if a.session_ttl.is_zero() || a.credential_ttl.is_zero() {
        bail!("lifetimes must be positive");
    }
    if [a.header_timeout, a.body_timeout, a.idle_timeout]
        .iter()
        .any(|t| t.is_zero())
    {
        bail!("timeouts must be positive");
    }
    if a.max_connections == 0
        || a.max_connections_per_source == 0
        || a.max_sessions_per_ek == 0
        || a.max_sessions_per_peer == 0
    {
        bail!("--max-connections and the session caps must be at least 1");
    }
    crate::enroll_cmd::check_group(&a.auto_enroll_group)?;
    if a.lab_record_first_boot {
        tracing::warn!("LAB MODE (--lab-record-first-boot): a node without a PCR policy is trusted on its first boot and its PCRs recorded; never run this in production");
    }
    let auto = !a.manufacturer_ca.is_empty();
    serve::run(serve::Options {
        state: a.state.state,
        database: a.state.database,
        listen: a.listen,
        http_listen: a.http_listen,
        metrics_listen: a.metrics_listen,
        console_listen: a.console_listen,
        replica_id: a.replica_id,
        names: a.names,
        cert: a.cert.zip(a.key),
        manufacturer_cas: a.manufacturer_ca,
        settings: Settings {
            session_ttl_ms: a.session_ttl.as_millis() as i64,
            credential_ttl_ms: a.credential_ttl.as_millis() as i64,
            auto_enroll_group: auto.then_some(a.auto_enroll_group),
            max_sessions_per_ek: a.max_sessions_per_ek,
            max_sessions_per_peer: a.max_sessions_per_peer,
            lab_record_first_boot: a.lab_record_first_boot,
            keep_boots: a.keep_boots,
            #[cfg(feature = "test-hooks")]
            replayable_sessions: a.test_replayable_sessions,
        },
        limits: ConnLimits {
            handshake_timeout: a.header_timeout,
            header_timeout: a.header_timeout,
            idle_timeout: a.idle_timeout,
            max_connections: a.max_connections,
            max_per_source: a.max_connections_per_source,
        },
        body_timeout: a.body_timeout,
        threads: a.threads,
        esp_loader: a.esp_loader,
        esp_failed_boot_options: a.esp_failed_boot_options.into(),
    })
}
