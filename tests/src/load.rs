//! The load tests' machinery: a pool of swtpm instances records one real
//! attestation transcript per simulated node against a server in test mode
//! (nonce and secret follow from the AK, so a recorded quote replays
//! against any test-mode server that enrolled the same EK); `ember attest
//! --replay` then runs them all at once and prints its figures, which
//! [`Figures`] reads back.

use crate::server::EmberServer;
use crate::swtpm::Swtpm;
use crate::{ember_bin, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// swtpm instances recording at once.
pub const POOL: usize = 4;

/// The one cap a storm lifts: every recording is of one EK (the rack's
/// swtpm identity; many AKs), which the per-EK session cap would stop. The
/// storm's nodes connect from their own loopback addresses
/// ([`SPREAD_SOURCES`]), so the per-source connection and session caps
/// stay at their defaults, as a data centre's racks would meet them.
pub const ONE_EK: [&str; 2] = ["--max-sessions-per-ek", "100000"];

/// The replay flag that gives each simulated node its own source address
/// (127.1.0.0/16).
pub const SPREAD_SOURCES: &str = "--spread-sources";

/// Session and connection caps lifted: one EK, many AKs, all from one
/// address (127.0.0.1). A source's share of a listener is at most a
/// quarter of its slots, so 8,192 connections (6,144 on HTTPS) leave one
/// source 1,536: room for a 1,000-node storm from one loopback address.
pub const UNCAPPED: [&str; 8] = [
    "--max-sessions-per-ek",
    "100000",
    "--max-sessions-per-peer",
    "100000",
    "--max-connections",
    "8192",
    "--max-connections-per-source",
    "100000",
];

/// The simulated nodes' TPMs, enrolled as one node ("rack"): the cached
/// manufacture gives every instance the same EK, each recording its own AK.
pub struct Rack {
    pub pool: Vec<Swtpm>,
    _dirs: Vec<ScratchDir>,
}

impl Rack {
    pub fn new() -> Rack {
        let dirs: Vec<ScratchDir> = (0..POOL).map(|_| ScratchDir::new("load-tpm")).collect();
        let pool = dirs
            .iter()
            .map(|d| {
                Swtpm::setup_cached(d.path()).expect("manufacture swtpm");
                Swtpm::start_tcp(d.path()).expect("start swtpm")
            })
            .collect();
        Rack { pool, _dirs: dirs }
    }

    /// Enrolls the rack's EK on `server`'s state and assigns it an overlay
    /// (a 10,000-line configuration file).
    pub fn enroll(&self, server: &EmberServer) {
        server
            .enroll_swtpm("rack", "default", &self.pool[0])
            .expect_ok("enroll");
        let src = server.scratch().join("overlay");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/config.yaml"), "token: load\n".repeat(10_000)).unwrap();
        server.add_overlay(&src, Some("group:default"));
    }

    /// Records at least `nodes` transcripts (a multiple of [`POOL`]) into
    /// `server`'s scratch folder; returns the folder and how many.
    pub fn record(&self, server: &EmberServer, nodes: usize) -> (PathBuf, usize) {
        let rec = server.scratch().join("recordings");
        let per = nodes.div_ceil(POOL);
        let t = Instant::now();
        let recorders: Vec<_> = self
            .pool
            .iter()
            .map(|tpm| {
                Command::new(ember_bin())
                    .args(["attest", "--tpm", &tpm.spec(), "--url", &server.url()])
                    .args(["--no-overlay", "--repeat", &per.to_string()])
                    .arg("--ca")
                    .arg(server.ca_path())
                    .arg("--record")
                    .arg(&rec)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn recorder")
            })
            .collect();
        for r in recorders {
            let out = r.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "recording failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let recorded = std::fs::read_dir(&rec).unwrap().count();
        assert_eq!(recorded, per * POOL);
        eprintln!(
            "load: recorded {recorded} transcripts on {POOL} swtpm in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        (rec, recorded)
    }
}

impl Default for Rack {
    fn default() -> Self {
        Self::new()
    }
}

/// `ember attest --replay REC --concurrency N` against `urls` (comma-separated:
/// nodes are spread over them and fail over in turn); overlays' manifests
/// are checked against `manifest_key`.
pub fn replay(
    urls: &str,
    ca: &Path,
    manifest_key: &Path,
    rec: &Path,
    nodes: usize,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(ember_bin());
    c.args(["attest", "--url", urls, "--concurrency", &nodes.to_string()])
        .args(extra)
        .arg("--ca")
        .arg(ca)
        .arg("--manifest-key")
        .arg(manifest_key)
        .arg("--replay")
        .arg(rec)
        .stdin(Stdio::null());
    c
}

/// What a replay printed (`load: nodes=… ok=… throughput=…` and
/// `load: total_ms p50=… p90=… p99=… max=…`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub nodes: u64,
    pub ok: u64,
    pub failed: u64,
    pub failed_over: u64,
    pub wall_ms: f64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Figures {
    pub fn parse(stdout: &str) -> Option<Figures> {
        let field = |line: &str, key: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim_end_matches("/s").parse().ok())
        };
        let summary = stdout.lines().find(|l| l.starts_with("load: nodes="))?;
        let total = stdout.lines().find(|l| l.starts_with("load: total_ms "))?;
        Some(Figures {
            nodes: field(summary, "nodes")? as u64,
            ok: field(summary, "ok")? as u64,
            failed: field(summary, "failed")? as u64,
            failed_over: field(summary, "failed_over")? as u64,
            wall_ms: field(summary, "wall_ms")?,
            throughput: field(summary, "throughput")?,
            p50_ms: field(total, "p50")?,
            p90_ms: field(total, "p90")?,
            p99_ms: field(total, "p99")?,
            max_ms: field(total, "max")?,
        })
    }

    /// One JSON object (no serde in the tests' dependencies for this).
    pub fn to_json(&self, setup: &str) -> String {
        format!(
            "{{\"setup\":{setup:?},\"nodes\":{},\"ok\":{},\"failed\":{},\"failed_over\":{},\"wall_ms\":{:.0},\"throughput_per_s\":{:.1},\"p50_ms\":{:.1},\"p90_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
            self.nodes, self.ok, self.failed, self.failed_over, self.wall_ms, self.throughput,
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Figures;

    #[test]
    fn reads_the_replay_summary() {
        let out = "load: nodes=1000 recordings=1000 servers=3 ok=1000 failed=0 failed_over=12 wall_ms=4200 throughput=238.1/s\n\
                   load: total_ms p50=900.5 p90=1500.0 p99=2100.2 max=2500.0\n";
        let f = Figures::parse(out).expect("parsed");
        assert_eq!(
            (f.nodes, f.ok, f.failed, f.failed_over),
            (1000, 1000, 0, 12)
        );
        assert_eq!((f.throughput, f.p99_ms, f.max_ms), (238.1, 2100.2, 2500.0));
        assert!(Figures::parse("load: nodes=1").is_none());
    }
}
