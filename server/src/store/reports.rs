//! Boot reports (`boot_reports`): every attestation, refusal and Report a
//! node made, which `ember nodes` shows the latest of, with the overlay
//! stage counters of a report that carried a phase table. The phases
//! themselves are rows of [`super::phases`]. A refusal keeps its
//! [`Explanation`] (`refusal_explanations` and the report's `fix`). A node
//! keeps its last N boots ([`prune`], `ember serve --keep-boots`).

use ember_proto::timeline::{OverlayStages, Timeline};

use super::value::clamp;
use super::{now_ms, phases, Result, Row, Sql};
use crate::params;

/// What a boot report records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finish released a credential.
    Attested,
    /// The node reported it joined (or Finish refused it: `Failed`).
    Joined,
    Failed,
}

impl Outcome {
    /// The `outcome` column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Attested => "attested",
            Outcome::Joined => "joined",
            Outcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Outcome> {
        match s {
            "attested" => Ok(Outcome::Attested),
            "joined" => Ok(Outcome::Joined),
            "failed" => Ok(Outcome::Failed),
            other => Err(super::Error::Shape(format!(
                "boot_reports.outcome {other:?}"
            ))),
        }
    }
}

/// The most characters of a reason kept (a node's text or a refusal's).
pub const MAX_REASON: usize = 500;

/// How many boots of each node are kept unless `--keep-boots` says.
pub const DEFAULT_KEEP_BOOTS: u32 = 20;

/// Keeps one boot report of the node, now; `reason` is cut to
/// [`MAX_REASON`] characters. Returns the report's id.
pub fn add(
    db: &mut dyn Sql,
    node_id: i64,
    outcome: Outcome,
    version_id: Option<i64>,
    reason: &str,
) -> Result<i64> {
    let reason: String = reason.chars().take(MAX_REASON).collect();
    db.one(
        "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        params![node_id, now_ms(), outcome.as_str(), version_id, &reason],
    )?
    .get("id")
}

/// One measurement a refusal names: what the server expected and what
/// the node's quote or log said instead. Hex digests and image epochs,
/// never secrets; `what` may carry a label from the node's event log, so
/// it is shown as a node's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The PCR, when the difference is in one (a rollback floor is not).
    pub pcr: Option<u8>,
    /// What was compared: "PCR 11 sha256 event 31 (.initrd)".
    pub what: String,
    pub expected: String,
    pub received: String,
}

/// Why a refusal happened, for its operator: every measurement that
/// differed and, when a policy or floor change would allow the boot, the
/// command line that makes it (`ember policy set ...`,
/// `ember nodes allow-rollback ...`). Run only for a boot you trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    pub items: Vec<Explained>,
    pub fix: Option<String>,
}

/// The most measurements one refusal keeps (one per PCR and its event).
pub const MAX_EXPLAINED: usize = 48;
/// The most characters of one explained field (a PCR's allowed values
/// listed) and of a fix command.
pub const MAX_EXPLAINED_TEXT: usize = 2000;
pub const MAX_FIX: usize = 8000;

/// Keeps refusal report `report_id`'s explanation, cut to the bounds above.
pub fn add_explanation(db: &mut dyn Sql, report_id: i64, e: &Explanation) -> Result<()> {
    let cut = |s: &str, n: usize| -> String { s.chars().take(n).collect() };
    if let Some(fix) = &e.fix {
        db.exec(
            "UPDATE boot_reports SET fix = $2 WHERE id = $1",
            params![report_id, &cut(fix, MAX_FIX)],
        )?;
    }
    for (seq, x) in e.items.iter().take(MAX_EXPLAINED).enumerate() {
        db.exec(
            "INSERT INTO refusal_explanations(report_id, seq, pcr, what, expected, received)
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                report_id,
                seq as i64,
                x.pcr.map(i64::from),
                &cut(&x.what, MAX_EXPLAINED_TEXT),
                &cut(&x.expected, MAX_EXPLAINED_TEXT),
                &cut(&x.received, MAX_EXPLAINED_TEXT)
            ],
        )?;
    }
    Ok(())
}

/// A refusal report's explanation, as it was stored (empty for any other
/// report, and for refusals stored before migration 8).
pub fn explanation(db: &mut dyn Sql, report: &BootReport) -> Result<Explanation> {
    let items = db
        .rows(
            "SELECT pcr, what, expected, received FROM refusal_explanations
             WHERE report_id = $1 ORDER BY seq",
            params![report.id],
        )?
        .iter()
        .map(|r| {
            let pcr: Option<i64> = r.get("pcr")?;
            Ok(Explained {
                pcr: pcr.and_then(|p| u8::try_from(p).ok()),
                what: r.get("what")?,
                expected: r.get("expected")?,
                received: r.get("received")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Explanation {
        items,
        fix: report.fix.clone(),
    })
}

/// Notes the UKI an attestation's Finish identified (by SHA-256).
pub fn set_boot_image(db: &mut dyn Sql, report_id: i64, sha256: &[u8; 32]) -> Result<()> {
    db.exec(
        "UPDATE boot_reports SET boot_image = $2 WHERE id = $1",
        params![report_id, &sha256[..]],
    )?;
    Ok(())
}

/// Keeps the phase table a Report carried with report `report_id`.
pub fn add_timeline(db: &mut dyn Sql, report_id: i64, t: &Timeline) -> Result<()> {
    let o = t.overlay;
    let v = |f: fn(&OverlayStages) -> u64| o.as_ref().map(|o| clamp(f(o)));
    db.exec(
        "UPDATE boot_reports SET timeline_version = $2, overlay_sealed_bytes = $3, overlay_plain_bytes = $4,
                overlay_receive_ms = $5, overlay_open_ms = $6, overlay_unpack_ms = $7, overlay_write_ms = $8
         WHERE id = $1",
        params![
            report_id,
            i64::from(t.version),
            v(|o| o.sealed_bytes),
            v(|o| o.plain_bytes),
            v(|o| o.receive_ms),
            v(|o| o.open_ms),
            v(|o| o.unpack_ms),
            v(|o| o.write_ms)
        ],
    )?;
    phases::add(db, report_id, &t.phases)
}

/// Drops the node's reports older than its last `keep` boots (a boot ends
/// in a Report or a refusal; attestations after the cut stay with theirs).
pub fn prune(db: &mut dyn Sql, node_id: i64, keep: u32) -> Result<u64> {
    let cut = db.row(
        "SELECT id FROM boot_reports WHERE node_id = $1 AND outcome != 'attested'
         ORDER BY id DESC LIMIT 1 OFFSET $2",
        params![node_id, i64::from(keep)],
    )?;
    let Some(cut) = cut else { return Ok(0) };
    let cut: i64 = cut.get("id")?;
    phases::remove_upto(db, node_id, cut)?;
    db.exec(
        "DELETE FROM refusal_explanations WHERE report_id IN
            (SELECT id FROM boot_reports WHERE node_id = $1 AND id <= $2)",
        params![node_id, cut],
    )?;
    db.exec(
        "DELETE FROM boot_reports WHERE node_id = $1 AND id <= $2",
        params![node_id, cut],
    )
}

/// One stored report, as the console lists a node's boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReport {
    pub id: i64,
    pub at: i64,
    pub outcome: Outcome,
    pub version_id: Option<i64>,
    pub reason: String,
    /// Whether it carried a phase table (its phases: [`phases::of_report`]).
    pub timeline_version: Option<i64>,
    pub overlay: Option<OverlayStages>,
    /// A refusal's fix command ([`Explanation`]; its measurements:
    /// [`explanation`]).
    pub fix: Option<String>,
}

const COLUMNS: &str = "id, at, outcome, version_id, reason, timeline_version, overlay_sealed_bytes,
    overlay_plain_bytes, overlay_receive_ms, overlay_open_ms, overlay_unpack_ms, overlay_write_ms, fix";

impl BootReport {
    fn from_row(r: &Row) -> Result<BootReport> {
        let n = |c: &str| -> Result<Option<u64>> { r.get(c) };
        let overlay = match (
            n("overlay_sealed_bytes")?,
            n("overlay_plain_bytes")?,
            n("overlay_receive_ms")?,
            n("overlay_open_ms")?,
            n("overlay_unpack_ms")?,
            n("overlay_write_ms")?,
        ) {
            (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)) => Some(OverlayStages {
                sealed_bytes: a,
                plain_bytes: b,
                receive_ms: c,
                open_ms: d,
                unpack_ms: e,
                write_ms: f,
            }),
            _ => None,
        };
        Ok(BootReport {
            id: r.get("id")?,
            at: r.get("at")?,
            outcome: Outcome::parse(&r.get::<String>("outcome")?)?,
            version_id: r.get("version_id")?,
            reason: r.get("reason")?,
            timeline_version: r.get("timeline_version")?,
            overlay,
            fix: r.get("fix")?,
        })
    }
}

/// The node's newest reports first, at most `limit`.
pub fn of_node(db: &mut dyn Sql, node_id: i64, limit: u32) -> Result<Vec<BootReport>> {
    db.rows(
        &format!("SELECT {COLUMNS} FROM boot_reports WHERE node_id = $1 ORDER BY id DESC LIMIT $2"),
        params![node_id, i64::from(limit)],
    )?
    .iter()
    .map(BootReport::from_row)
    .collect()
}

/// The newest report id of all (the console's live updates watch it: the
/// database is what every replica shares).
pub fn latest_id(db: &mut dyn Sql) -> Result<i64> {
    db.one("SELECT COALESCE(MAX(id), 0) AS id FROM boot_reports", &[])?
        .get("id")
}

/// A whole report's phase table, as it was stored.
pub fn timeline(db: &mut dyn Sql, report: &BootReport) -> Result<Option<Timeline>> {
    let Some(version) = report.timeline_version else {
        return Ok(None);
    };
    Ok(Some(Timeline {
        version: u16::try_from(version).unwrap_or(u16::MAX),
        phases: phases::of_report(db, report.id)?,
        overlay: report.overlay,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::scratch;
    use crate::store::{insert_node, open};
    use ember_proto::timeline::{Phase, PhaseStatus};

    fn table(n: u64) -> Timeline {
        let mut t = Timeline::default();
        t.push(Phase {
            name: "dhcp".into(),
            start_ms: 2000 + n,
            took_ms: 100,
            cpu_ms: 3,
            status: PhaseStatus::Ok,
        });
        t.push(Phase {
            name: "attest".into(),
            start_ms: 2100 + n,
            took_ms: u64::MAX,
            cpu_ms: 9,
            status: PhaseStatus::Failed,
        });
        t.overlay = Some(OverlayStages {
            sealed_bytes: 1,
            plain_bytes: 2,
            receive_ms: 3,
            open_ms: 4,
            unpack_ms: 5,
            write_ms: 6,
        });
        t
    }

    #[test]
    fn a_reported_table_is_kept_with_its_report_and_read_back() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n = insert_node(&mut tx, &[1; 32], None, "a", "g", "test").unwrap();
        let plain = add(&mut tx, n.id, Outcome::Attested, None, "").unwrap();
        let id = add(&mut tx, n.id, Outcome::Failed, None, "pcr 7").unwrap();
        add_timeline(&mut tx, id, &table(0)).unwrap();
        tx.commit().unwrap();
        let got = of_node(&mut db, n.id, 10).unwrap();
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [id, plain]);
        assert_eq!(got[1].overlay, None);
        assert_eq!(timeline(&mut db, &got[1]).unwrap(), None);
        let back = timeline(&mut db, &got[0]).unwrap().unwrap();
        let mut expected = table(0);
        // Stored as a signed 64-bit column: the largest value it holds.
        expected.phases[1].took_ms = i64::MAX as u64;
        assert_eq!(back, expected);
        assert_eq!(latest_id(&mut db).unwrap(), id);
    }

    #[test]
    fn a_refusal_keeps_its_explanation_until_pruned() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n = insert_node(&mut tx, &[1; 32], None, "a", "g", "test").unwrap();
        let id = add(&mut tx, n.id, Outcome::Failed, None, "PCR 11").unwrap();
        let e = Explanation {
            items: vec![
                Explained {
                    pcr: Some(11),
                    what: "PCR 11 sha256 event 31 (.initrd)".into(),
                    expected: "aa".into(),
                    received: "bb".into(),
                },
                Explained {
                    pcr: None,
                    what: "UKI image epoch".into(),
                    expected: "2 or newer".repeat(1000),
                    received: "1".into(),
                },
            ],
            fix: Some("ember policy set --group g --pcrs 11 --value 11=bb".into()),
        };
        add_explanation(&mut tx, id, &e).unwrap();
        let plain = add(&mut tx, n.id, Outcome::Joined, None, "").unwrap();
        tx.commit().unwrap();
        let got = of_node(&mut db, n.id, 10).unwrap();
        assert_eq!(got[0].id, plain);
        assert_eq!(
            explanation(&mut db, &got[0]).unwrap(),
            Explanation::default()
        );
        let back = explanation(&mut db, &got[1]).unwrap();
        assert_eq!(back.fix, e.fix);
        assert_eq!(back.items[0], e.items[0]);
        // Bounded: a long list of allowed values is cut.
        assert_eq!(back.items[1].expected.chars().count(), MAX_EXPLAINED_TEXT);
        let mut tx = db.transaction().unwrap();
        assert_eq!(prune(&mut tx, n.id, 1).unwrap(), 1);
        tx.commit().unwrap();
        let left = db
            .one("SELECT COUNT(*) AS n FROM refusal_explanations", &[])
            .unwrap()
            .get::<i64>("n")
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_node_keeps_only_its_last_boots() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let a = insert_node(&mut tx, &[1; 32], None, "a", "g", "test").unwrap();
        let b = insert_node(&mut tx, &[2; 32], None, "b", "g", "test").unwrap();
        add(&mut tx, b.id, Outcome::Joined, None, "").unwrap();
        for i in 0..5 {
            add(&mut tx, a.id, Outcome::Attested, None, "").unwrap();
            let id = add(&mut tx, a.id, Outcome::Joined, None, &format!("boot {i}")).unwrap();
            add_timeline(&mut tx, id, &table(i)).unwrap();
        }
        assert_eq!(prune(&mut tx, a.id, 3).unwrap(), 4);
        assert_eq!(prune(&mut tx, a.id, 3).unwrap(), 0);
        tx.commit().unwrap();
        let kept = of_node(&mut db, a.id, 100).unwrap();
        let reasons: Vec<_> = kept
            .iter()
            .filter(|r| r.outcome == Outcome::Joined)
            .map(|r| r.reason.as_str())
            .collect();
        assert_eq!(reasons, ["boot 4", "boot 3", "boot 2"]);
        // Each kept boot's attestation stays with it; the other node's too.
        assert_eq!(kept.len(), 6);
        assert_eq!(of_node(&mut db, b.id, 100).unwrap().len(), 1);
        let phases = db
            .one("SELECT COUNT(*) AS n FROM boot_phases", &[])
            .unwrap()
            .get::<i64>("n")
            .unwrap();
        assert_eq!(phases, 6);
    }

    /// Stored through this file, read back through `phases::durations`
    /// (kept here: phases.rs does not reach back into reports.rs).
    #[test]
    fn boot_time_is_per_phase_over_a_groups_recent_boots() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let a = insert_node(&mut tx, &[1; 32], None, "a", "rack-a", "t").unwrap();
        let b = insert_node(&mut tx, &[2; 32], None, "b", "rack-b", "t").unwrap();
        for (node, took) in [(a.id, 100), (a.id, 300), (a.id, 200), (b.id, 5000)] {
            let id = add(&mut tx, node, Outcome::Joined, None, "").unwrap();
            let mut t = Timeline::default();
            for name in ["overlay", "dhcp"] {
                t.push(Phase {
                    name: name.into(),
                    start_ms: 0,
                    took_ms: took,
                    cpu_ms: 0,
                    status: PhaseStatus::Ok,
                });
            }
            add_timeline(&mut tx, id, &t).unwrap();
        }
        // A report without a table counts in no boot.
        add(&mut tx, a.id, Outcome::Failed, None, "").unwrap();
        tx.commit().unwrap();
        let got = phases::durations(&mut db, Some("rack-a"), 100).unwrap();
        assert_eq!(got.len(), 2);
        // Boot order, not the order they were stored in.
        assert_eq!(got[0].name, "dhcp");
        assert_eq!((got[0].boots, got[0].p50_ms, got[0].p90_ms), (3, 200, 300));
        // The newest two boots of all: b's 5000 and a's 200.
        let recent = phases::durations(&mut db, None, 2).unwrap();
        assert_eq!(
            (recent[1].boots, recent[1].p50_ms, recent[1].p90_ms),
            (2, 200, 5000)
        );
    }
}
