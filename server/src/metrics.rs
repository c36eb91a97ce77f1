//! The server's counters, rendered in Prometheus' text exposition format on
//! the admin listener (`--metrics-listen`): attestations by outcome, their
//! latency, open connections and sessions, overlay bytes served, which
//! replica answered, and how long each boot phase took on the nodes that
//! reported here (one histogram per phase of the fixed set the init runs,
//! so a node's names never add labels).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ember_proto::timeline::{Phase, PHASES};

/// Upper bounds (seconds) of the attestation latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) of the boot phase histograms' buckets: a phase
/// takes from a millisecond (cmdline) to minutes (ready, under TCG).
const PHASE_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Identifies this replica in every scrape (`--replica-id`, else the host name).
    replica: String,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_evicted: AtomicU64,
    overlay_bytes: AtomicU64,
    /// Connections closed by a limit, by listener and reason.
    refused: Mutex<Vec<((&'static str, &'static str), u64)>>,
    /// Requests by protocol step and outcome code name.
    outcomes: Mutex<Vec<((&'static str, &'static str), u64)>>,
    /// Finish latency (a whole attestation's server side ends there).
    latency: Mutex<Histogram<{ LATENCY_BUCKETS.len() }>>,
    /// Reported boot phase durations, one per [`PHASES`] entry.
    phases: Mutex<Vec<Histogram<{ PHASE_BUCKETS.len() }>>>,
    /// Nodes per state of each open rollout, by rollout id (at most one
    /// open rollout per group, five states: the labels stay bounded).
    rollouts: Mutex<Vec<(i64, [u64; 5])>>,
}

struct Histogram<const N: usize> {
    counts: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            counts: [0; N],
            count: 0,
            sum: 0.0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, buckets: &[f64; N], seconds: f64) {
        for (count, le) in self.counts.iter_mut().zip(buckets) {
            if seconds <= *le {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` ends with a comma
    /// when not empty.
    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64; N]) {
        for (le, n) in buckets.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let labels = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

impl Metrics {
    pub fn new(replica: String) -> Self {
        Metrics {
            replica,
            ..Default::default()
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connection_evicted(&self) {
        self.connections_evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed by a limit: `per-source` (at accept),
    /// `handshake-timeout`, `handshake-failed`, or a connection cut after
    /// its close grace (`idle-timeout`, `evicted`, `shutdown`).
    pub fn connection_refused(&self, listener: &'static str, reason: &'static str) {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match r.iter_mut().find(|(k, _)| *k == (listener, reason)) {
            Some((_, n)) => *n += 1,
            None => r.push(((listener, reason), 1)),
        }
    }

    pub fn overlay_bytes(&self, n: u64) {
        self.overlay_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// One protocol request's outcome (`ok` or a refusal code's name).
    pub fn request(&self, step: &'static str, outcome: &'static str, seconds: f64) {
        {
            let mut o = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
            match o.iter_mut().find(|(k, _)| *k == (step, outcome)) {
                Some((_, n)) => *n += 1,
                None => o.push(((step, outcome), 1)),
            }
        }
        if step == "finish" {
            let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            h.observe(&LATENCY_BUCKETS, seconds);
        }
    }

    /// A reported boot's phases: each of the fixed set counts in its own
    /// histogram; other names (a newer init's) are not counted.
    pub fn boot_phases(&self, phases: &[Phase]) {
        let mut h = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_empty() {
            h.resize_with(PHASES.len(), Default::default);
        }
        for p in phases {
            if let Some(i) = PHASES.iter().position(|n| *n == p.name) {
                h[i].observe(&PHASE_BUCKETS, p.took_ms as f64 / 1000.0);
            }
        }
    }

    /// The text exposition; `sessions_open` comes from the database.
    pub fn render(&self, sessions_open: Option<u64>) -> String {
        let mut out = String::new();
        let r = escape(&self.replica);
        let _ = writeln!(out, "# HELP ember_replica_info This replica's identity.");
        let _ = writeln!(out, "# TYPE ember_replica_info gauge");
        let _ = writeln!(
            out,
            "ember_replica_info{{replica=\"{r}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        self.render_requests(&mut out, &r);
        self.render_latency(&mut out, &r);
        self.render_gauges(&mut out, &r, sessions_open);
        self.render_refused(&mut out, &r);
        self.render_rollouts(&mut out, &r);
        out
    }

    /// What the last rollout tick counted (replaces the previous counts).
    pub fn set_rollouts(&self, counts: Vec<(i64, [u64; 5])>) {
        *self.rollouts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    /// Nodes per state of each open rollout.
    fn render_rollouts(&self, out: &mut String, r: &str) {
        let rollouts = self
            .rollouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP ember_rollout_nodes Nodes of each open rollout by state (waiting, handed, upgraded, failed, reverted)."
        );
        let _ = writeln!(out, "# TYPE ember_rollout_nodes gauge");
        for (id, counts) in rollouts {
            for (state, n) in crate::rollout::plan::NodeState::ALL.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "ember_rollout_nodes{{replica=\"{r}\",rollout=\"{id}\",state=\"{}\"}} {n}",
                    state.as_str()
                );
            }
        }
    }

    /// Connections closed by a limit.
    fn render_refused(&self, out: &mut String, r: &str) {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP ember_connections_refused_total Connections closed by a limit, by listener and reason."
        );
        let _ = writeln!(out, "# TYPE ember_connections_refused_total counter");
        for ((listener, reason), n) in refused {
            let _ = writeln!(
                out,
                "ember_connections_refused_total{{replica=\"{r}\",listener=\"{listener}\",reason=\"{reason}\"}} {n}"
            );
        }
    }

    /// Requests by step and outcome, and the Finish ones as attestations.
    fn render_requests(&self, out: &mut String, r: &str) {
        let _ = writeln!(out, "# HELP ember_requests_total Protocol requests by step and outcome (ok or the refusal code).");
        let _ = writeln!(out, "# TYPE ember_requests_total counter");
        let mut outcomes = self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        outcomes.sort();
        for ((step, outcome), n) in &outcomes {
            let _ = writeln!(
                out,
                "ember_requests_total{{replica=\"{r}\",step=\"{step}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ember_attestations_total Finished attestations (Finish requests) by outcome."
        );
        let _ = writeln!(out, "# TYPE ember_attestations_total counter");
        for ((step, outcome), n) in &outcomes {
            if *step == "finish" {
                let _ = writeln!(
                    out,
                    "ember_attestations_total{{replica=\"{r}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
    }

    /// The Finish latency histogram and the boot phase histograms.
    fn render_latency(&self, out: &mut String, r: &str) {
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP ember_attestation_seconds Server-side time of Finish requests."
        );
        let _ = writeln!(out, "# TYPE ember_attestation_seconds histogram");
        h.render(
            out,
            "ember_attestation_seconds",
            &format!("replica=\"{r}\","),
            &LATENCY_BUCKETS,
        );
        drop(h);
        let _ = writeln!(
            out,
            "# HELP ember_boot_phase_seconds Boot phase durations the nodes reported here, by phase."
        );
        let _ = writeln!(out, "# TYPE ember_boot_phase_seconds histogram");
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let empty = Histogram::default();
        for (i, name) in PHASES.iter().enumerate() {
            h_render(
                phases.get(i).unwrap_or(&empty),
                out,
                &format!("replica=\"{r}\",phase=\"{name}\","),
            );
        }
    }

    /// Connections, overlay bytes and (when the database answered) open
    /// sessions.
    fn render_gauges(&self, out: &mut String, r: &str, sessions_open: Option<u64>) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut rows = vec![
            (
                "ember_connections_open",
                "Open client connections (both listeners).",
                "gauge",
                load(&self.connections_open),
            ),
            (
                "ember_connections_total",
                "Accepted client connections.",
                "counter",
                load(&self.connections_total),
            ),
            (
                "ember_connections_evicted_total",
                "Silent connections closed to make room for new ones.",
                "counter",
                load(&self.connections_evicted),
            ),
            (
                "ember_overlay_bytes_total",
                "Sealed overlay bytes sent.",
                "counter",
                load(&self.overlay_bytes),
            ),
        ];
        if let Some(s) = sessions_open {
            rows.push((
                "ember_sessions_open",
                "Started, unfinished, unexpired sessions (all replicas).",
                "gauge",
                s,
            ));
        }
        for (name, help, kind, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{replica=\"{r}\"}} {v}");
        }
    }
}

fn h_render(h: &Histogram<{ PHASE_BUCKETS.len() }>, out: &mut String, labels: &str) {
    h.render(out, "ember_boot_phase_seconds", labels, &PHASE_BUCKETS);
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_has_counters_histogram_and_replica() {
        let m = Metrics::new("r\"1".into());
        m.request("finish", "ok", 0.02);
        m.request("finish", "bad-proof", 3.0);
        m.request("start", "ok", 0.001);
        m.overlay_bytes(10);
        m.connection_opened();
        let s = m.render(Some(2));
        assert!(s.contains("ember_replica_info{replica=\"r\\\"1\""), "{s}");
        assert!(s.contains("ember_attestations_total{replica=\"r\\\"1\",outcome=\"ok\"} 1"));
        assert!(s.contains("ember_attestation_seconds_bucket{replica=\"r\\\"1\",le=\"0.025\"} 1"));
        assert!(s.contains("ember_attestation_seconds_bucket{replica=\"r\\\"1\",le=\"5\"} 2"));
        assert!(s.contains("ember_attestation_seconds_count{replica=\"r\\\"1\"} 2"));
        assert!(s.contains("ember_overlay_bytes_total{replica=\"r\\\"1\"} 10"));
        assert!(s.contains("ember_connections_open{replica=\"r\\\"1\"} 1"));
        assert!(s.contains("ember_sessions_open{replica=\"r\\\"1\"} 2"));
    }

    #[test]
    fn boot_phases_count_in_their_own_histogram_and_only_known_names_do() {
        use ember_proto::timeline::PhaseStatus;
        let m = Metrics::new("r".into());
        let p = |name: &str, took_ms| Phase {
            name: name.into(),
            start_ms: 0,
            took_ms,
            cpu_ms: 0,
            status: PhaseStatus::Ok,
        };
        m.boot_phases(&[p("dhcp", 120), p("overlay", 3200), p("brand-new", 5)]);
        m.boot_phases(&[p("dhcp", 40)]);
        let s = m.render(None);
        assert!(
            s.contains(
                "ember_boot_phase_seconds_bucket{replica=\"r\",phase=\"dhcp\",le=\"0.05\"} 1"
            ),
            "{s}"
        );
        assert!(s.contains(
            "ember_boot_phase_seconds_bucket{replica=\"r\",phase=\"dhcp\",le=\"0.25\"} 2"
        ));
        assert!(s.contains("ember_boot_phase_seconds_count{replica=\"r\",phase=\"dhcp\"} 2"));
        assert!(s.contains(
            "ember_boot_phase_seconds_bucket{replica=\"r\",phase=\"overlay\",le=\"2.5\"} 0"
        ));
        assert!(s.contains(
            "ember_boot_phase_seconds_bucket{replica=\"r\",phase=\"overlay\",le=\"5\"} 1"
        ));
        // Every phase of the fixed set is there from the start, and no other.
        assert!(s.contains("ember_boot_phase_seconds_count{replica=\"r\",phase=\"lkg-restore\"} 0"));
        assert!(!s.contains("brand-new"));
        let series = s
            .lines()
            .filter(|l| l.starts_with("ember_boot_phase_seconds_count"))
            .count();
        assert_eq!(series, PHASES.len());
    }
}
