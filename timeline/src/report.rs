//! The phase table a node's Report carries ([`ember_proto::timeline`]),
//! as a [`Timeline`] the renderer draws, and back: `ember attest
//! --timeline-from LOG` sends a serial log's phases as a report's table.

use ember_proto::timeline::{self as wire, OverlayStages, PhaseStatus};

use crate::model::{Mark, Phase, PhaseState, Timeline};

/// The overlay counters as the init's `metrics:` line names them.
const OVERLAY_METRICS: [&str; 6] = [
    "overlay_sealed_bytes",
    "overlay_plain_bytes",
    "overlay_receive_ms",
    "overlay_open_ms",
    "overlay_unpack_ms",
    "overlay_write_ms",
];

fn overlay_values(o: &OverlayStages) -> [u64; 6] {
    [
        o.sealed_bytes,
        o.plain_bytes,
        o.receive_ms,
        o.open_ms,
        o.unpack_ms,
        o.write_ms,
    ]
}

impl Timeline {
    /// A reported table, to draw. `reason` is the report's reason, shown
    /// on the failed phase (a report carries one reason, not one per phase).
    pub fn from_report(t: &wire::Timeline, reason: &str) -> Timeline {
        let phases: Vec<Phase> = t
            .phases
            .iter()
            .map(|p| {
                let end_ms = p.start_ms.saturating_add(p.took_ms);
                let state = match p.status {
                    PhaseStatus::Ok => PhaseState::Ok {
                        end_ms,
                        took_ms: p.took_ms,
                    },
                    PhaseStatus::Failed => PhaseState::Failed {
                        end_ms,
                        took_ms: p.took_ms,
                        reason: reason.to_string(),
                    },
                };
                Phase {
                    name: p.name.clone(),
                    start_ms: p.start_ms,
                    state,
                    cpu_ms: Some(p.cpu_ms),
                }
            })
            .collect();
        let first = phases.iter().map(|p| p.start_ms).min();
        let metrics = t
            .overlay
            .as_ref()
            .map(|o| {
                OVERLAY_METRICS
                    .iter()
                    .zip(overlay_values(o))
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            })
            .unwrap_or_default();
        Timeline {
            boots_in_log: 1,
            boot: 1,
            handover_ms: first,
            init_started_ms: first,
            init_tag: Some("ember".into()),
            marks: first
                .map(|at_ms| Mark {
                    name: "init started".into(),
                    at_ms,
                })
                .into_iter()
                .collect(),
            phases,
            metrics,
            end_ms: t.end_ms(),
        }
    }

    /// The phases that ended, as a report's table: at most
    /// [`wire::MAX_PHASES`], names outside the format left out.
    pub fn to_report(&self) -> wire::Timeline {
        let mut out = wire::Timeline::default();
        for p in &self.phases {
            let (took_ms, status) = match p.state {
                PhaseState::Ok { took_ms, .. } => (took_ms, PhaseStatus::Ok),
                PhaseState::Failed { took_ms, .. } => (took_ms, PhaseStatus::Failed),
                PhaseState::Running => continue,
            };
            out.push(wire::Phase {
                name: p.name.clone(),
                start_ms: p.start_ms,
                took_ms,
                cpu_ms: p.cpu_ms.unwrap_or(0),
                status,
            });
        }
        let metric = |k: &str| self.metrics.iter().find(|(m, _)| m == k).map(|(_, v)| *v);
        if let [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)] = OVERLAY_METRICS.map(metric)
        {
            out.overlay = Some(OverlayStages {
                sealed_bytes: a,
                plain_bytes: b,
                receive_ms: c,
                open_ms: d,
                unpack_ms: e,
                write_ms: f,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{svg, Which};

    const LOG: &str = "[    2.000000] Run /init as init process\n\
        [ 2100] ember: phase=dhcp status=start\n\
        [ 2200] ember: phase=dhcp status=ok took=100ms cpu=3ms\n\
        [ 2200] ember: phase=attest status=start\n\
        [ 2250] ember: metrics: overlay_sealed_bytes=10 overlay_plain_bytes=20 overlay_receive_ms=1 overlay_open_ms=2 overlay_unpack_ms=3 overlay_write_ms=4\n\
        [ 2300] ember: phase=attest status=failed took=100ms cpu=9ms reason=refused\n\
        [ 2300] ember: phase=runtime status=start\n";

    #[test]
    fn a_logged_boot_becomes_a_report_table_and_draws_the_same_phases() {
        let logged = Timeline::from_log(LOG, Which::Last).unwrap();
        let table = logged.to_report();
        // The running phase has no end yet: a report carries ended phases.
        let names: Vec<_> = table.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dhcp", "attest"]);
        assert_eq!(table.phases[1].status, PhaseStatus::Failed);
        assert_eq!(table.phases[1].cpu_ms, 9);
        assert_eq!(table.overlay.unwrap().unpack_ms, 3);
        let bytes = table.encode();
        assert_eq!(wire::Timeline::decode(&bytes).unwrap(), table);

        let drawn = Timeline::from_report(&table, "pcr <7> differs");
        assert_eq!(drawn.phases.len(), 2);
        assert_eq!(drawn.end_ms, 2300);
        assert_eq!(drawn.metrics.len(), 6);
        let pic = svg::render(&drawn, "node <b>");
        assert!(pic.contains(svg::FAILED_COLOUR) && pic.contains(svg::OK_COLOUR));
        assert!(pic.contains("pcr &lt;7&gt; differs") && !pic.contains("<7>"));
        assert!(pic.contains("node &lt;b&gt;"));
    }

    #[test]
    fn an_empty_table_draws_an_empty_picture() {
        let drawn = Timeline::from_report(&wire::Timeline::default(), "");
        assert!(drawn.phases.is_empty());
        assert!(svg::render(&drawn, "empty").ends_with("</svg>\n"));
    }
}
