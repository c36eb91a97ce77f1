//! Boot phases (`boot_phases`): the phase table a node's Report carried,
//! one row per phase, under its report in `boot_reports`. Names are the
//! node's (checked to `[a-z0-9-]`, at most 24 characters, by the protocol
//! crate before they get here).

use ember_proto::timeline::{Phase, PhaseStatus};

use super::value::clamp;
use super::{Error, Result, Row, Sql};
use crate::params;

/// Keeps `phases` under report `report_id`, in their order.
pub fn add(db: &mut dyn Sql, report_id: i64, phases: &[Phase]) -> Result<()> {
    for (seq, p) in phases.iter().enumerate() {
        db.exec(
            "INSERT INTO boot_phases(report_id, seq, name, start_ms, took_ms, cpu_ms, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![
                report_id,
                seq as i64,
                p.name.as_str(),
                clamp(p.start_ms),
                clamp(p.took_ms),
                clamp(p.cpu_ms),
                p.status.as_str()
            ],
        )?;
    }
    Ok(())
}

fn from_row(r: &Row) -> Result<Phase> {
    let status = match r.get::<String>("status")?.as_str() {
        "ok" => PhaseStatus::Ok,
        "failed" => PhaseStatus::Failed,
        other => return Err(Error::Shape(format!("boot_phases.status {other:?}"))),
    };
    Ok(Phase {
        name: r.get("name")?,
        start_ms: r.get("start_ms")?,
        took_ms: r.get("took_ms")?,
        cpu_ms: r.get("cpu_ms")?,
        status,
    })
}

/// A report's phases, in the order the node ran them.
pub fn of_report(db: &mut dyn Sql, report_id: i64) -> Result<Vec<Phase>> {
    db.rows(
        "SELECT name, start_ms, took_ms, cpu_ms, status FROM boot_phases WHERE report_id = $1 ORDER BY seq",
        params![report_id],
    )?
    .iter()
    .map(from_row)
    .collect()
}

/// One phase's durations over a group's recent boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseStats {
    pub name: String,
    /// Boots that ran the phase.
    pub boots: usize,
    pub p50_ms: u64,
    pub p90_ms: u64,
}

/// Per phase, p50 and p90 of its duration over the newest `boots` reports
/// that carried a phase table (of `group`'s nodes, or all): the fixed
/// phases first in boot order, then any other name.
pub fn durations(db: &mut dyn Sql, group: Option<&str>, boots: u32) -> Result<Vec<PhaseStats>> {
    let rows = db.rows(
        "SELECT p.name, p.took_ms FROM boot_phases p WHERE p.report_id IN
            (SELECT r.id FROM boot_reports r JOIN nodes n ON n.id = r.node_id
              WHERE r.timeline_version IS NOT NULL AND ($1 = '' OR n.group_name = $1)
              ORDER BY r.id DESC LIMIT $2)",
        params![group.unwrap_or(""), i64::from(boots)],
    )?;
    let mut by_name: Vec<(String, Vec<u64>)> = Vec::new();
    for r in &rows {
        let name: String = r.get("name")?;
        let took: u64 = r.get("took_ms")?;
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(took),
            None => by_name.push((name, vec![took])),
        }
    }
    let order = |n: &str| {
        ember_proto::timeline::PHASES
            .iter()
            .position(|p| *p == n)
            .unwrap_or(usize::MAX)
    };
    by_name.sort_by(|a, b| order(&a.0).cmp(&order(&b.0)).then(a.0.cmp(&b.0)));
    Ok(by_name
        .into_iter()
        .map(|(name, mut v)| {
            v.sort_unstable();
            PhaseStats {
                name,
                boots: v.len(),
                p50_ms: percentile(&v, 50),
                p90_ms: percentile(&v, 90),
            }
        })
        .collect())
}

/// The nearest-rank percentile of sorted `v` (0 when empty).
fn percentile(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// Drops the phases of the node's reports up to id `cut` (with them).
pub(super) fn remove_upto(db: &mut dyn Sql, node_id: i64, cut: i64) -> Result<u64> {
    db.exec(
        "DELETE FROM boot_phases WHERE report_id IN
            (SELECT id FROM boot_reports WHERE node_id = $1 AND id <= $2)",
        params![node_id, cut],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), 5);
        assert_eq!(percentile(&v, 90), 9);
        assert_eq!(percentile(&[7], 90), 7);
        assert_eq!(percentile(&[], 50), 0);
    }
}
