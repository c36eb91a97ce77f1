//! Boot reports (`boot_reports`): every attestation, refusal and Report a
//! node made, which `ember nodes` shows the latest of.

use super::{now_ms, Result, Sql};
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
}

/// The most characters of a reason kept (a node's text or a refusal's).
pub const MAX_REASON: usize = 500;

/// Keeps one boot report of the node, now; `reason` is cut to
/// [`MAX_REASON`] characters.
pub fn add(
    db: &mut dyn Sql,
    node_id: i64,
    outcome: Outcome,
    version_id: Option<i64>,
    reason: &str,
) -> Result<()> {
    let reason: String = reason.chars().take(MAX_REASON).collect();
    db.exec(
        "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES ($1, $2, $3, $4, $5)",
        params![node_id, now_ms(), outcome.as_str(), version_id, &reason],
    )?;
    Ok(())
}
