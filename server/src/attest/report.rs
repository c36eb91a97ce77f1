//! Report: a node says whether its boot joined, authenticated by the
//! credential Finish released (once per credential). A Joined report
//! resets the attempt counter, moves last-known-good and blesses the UKI
//! Finish identified, raising the node's rollback floor. The boot's phase
//! table, when the node sent one, is kept with the report and counted in
//! the per-phase metrics; each node keeps its last `--keep-boots` boots.

use ember_proto::keys;
use ember_proto::msg::{encode, ErrorCode, Outcome, ReportResponse, PROTOCOL_VERSION};
use ember_proto::timeline::Timeline;

use super::{Refusal, Server};
use crate::refusal::decode_report;
use crate::store::credentials::{self, Credential};
use crate::store::{self, nodes, now_ms, overlays, reports, Node, Sql};

/// A request's credential, checked.
pub struct Authorized {
    pub hash: [u8; 32],
    pub session: [u8; 16],
    pub secret: [u8; 32],
    pub version_id: Option<i64>,
    pub node: Node,
}

/// The credential in `Authorization: Bearer <64 hex digits>`.
fn bearer_token(header: Option<&str>) -> Result<[u8; 32], Refusal> {
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(store::unhex)
        .and_then(|t| <[u8; 32]>::try_from(t).ok())
        .ok_or_else(|| Refusal::new(ErrorCode::MissingCredential, "no bearer credential"))
}

/// Whether the stored credential found by `hash` is still good at `now`.
fn still_valid(c: &Credential, hash: &[u8; 32], now: i64) -> Result<(), Refusal> {
    if !keys::ct_eq(&c.hash, hash) {
        return Err(Refusal::new(
            ErrorCode::UnknownCredential,
            "credential unknown",
        ));
    }
    if now > c.expires_at {
        return Err(Refusal::new(
            ErrorCode::CredentialExpired,
            "credential expired",
        ));
    }
    Ok(())
}

/// The overlay version a report may claim: the one its credential's
/// session was granted (so the node cannot name another overlay as its
/// last-known-good), or none (it booted no overlay from this session).
fn claimed_version(claimed: Option<u64>, granted: Option<i64>) -> Result<Option<i64>, Refusal> {
    let Some(v) = claimed else { return Ok(None) };
    if let Some(g) = granted.filter(|g| i64::try_from(v) == Ok(*g)) {
        return Ok(Some(g));
    }
    let detail = format!(
        "the report claims overlay {v}, but this credential's session was granted {}: refused, nothing recorded",
        granted.map_or("no overlay".to_string(), |g| format!("overlay {g}"))
    );
    // The node is told too: it knows what it was granted, so this names
    // nothing it may not know.
    let reason = detail.clone();
    Err(Refusal::new(ErrorCode::ReportMismatch, detail).because(reason))
}

/// The outcome as a boot report keeps it.
fn report_outcome(o: Outcome) -> reports::Outcome {
    match o {
        Outcome::Joined => reports::Outcome::Joined,
        Outcome::Failed => reports::Outcome::Failed,
    }
}

impl Server {
    /// Checks `Authorization: Bearer <hex>`.
    pub fn authorize(&self, header: Option<&str>) -> Result<Authorized, (Option<String>, Refusal)> {
        let token = bearer_token(header).map_err(|r| (None, r))?;
        let hash = keys::credential_hash(&token);
        let found = self
            .db()
            .and_then(|mut db| Ok(credentials::by_hash(&mut db, &hash)?))
            .map_err(|r| (None, r))?;
        let Some(c) = found else {
            return Err((
                None,
                Refusal::new(ErrorCode::UnknownCredential, "credential unknown"),
            ));
        };
        still_valid(&c, &hash, now_ms()).map_err(|r| (Some(c.node.name.clone()), r))?;
        Ok(Authorized {
            hash,
            session: c.session_id,
            secret: c.secret,
            version_id: c.version_id,
            node: c.node,
        })
    }

    pub fn report(&self, auth: &Authorized, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let (req, table) = decode_report(body)?;
        // Before anything is written: a refused report leaves the
        // credential unused, so the node's genuine report still counts.
        let version = claimed_version(req.overlay_version, auth.version_id)?;
        // A table the server cannot read costs the boot its picture, not
        // its report: the outcome still counts.
        let timeline = match table {
            [] => None,
            bytes => match Timeline::decode(bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("step=report node={} timeline dropped: {e}", auth.node.name);
                    None
                }
            },
        };
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        // One report per credential: a replayed report must not count twice.
        if !credentials::mark_reported(&mut tx, &auth.hash, now_ms())? {
            return Err(Refusal::new(
                ErrorCode::SessionReused,
                "this credential already reported",
            ));
        }
        let id = reports::add(
            &mut tx,
            auth.node.id,
            report_outcome(req.outcome),
            version,
            &req.reason,
        )?;
        if let Some(t) = &timeline {
            reports::add_timeline(&mut tx, id, t)?;
        }
        reports::prune(&mut tx, auth.node.id, self.settings.keep_boots)?;
        let raised = match req.outcome {
            Outcome::Joined => self.joined(&mut tx, auth, version)?,
            Outcome::Failed => {
                nodes::failed(&mut tx, auth.node.id)?;
                None
            }
        };
        let now = nodes::attempts(&mut tx, auth.node.id)?;
        tx.commit()?;
        if let Some(t) = &timeline {
            self.metrics.boot_phases(&t.phases);
        }
        if let Some(raised) = raised {
            tracing::info!("step=report node={} {raised}", auth.node.name);
        }
        Ok(encode(&ReportResponse {
            version: PROTOCOL_VERSION,
            attempts: now.attempts,
            last_known_good: now.last_known_good,
        }))
    }

    /// A Joined report: the attempts start over, the overlay it booted
    /// (when the server knows it) becomes last-known-good, and the UKI
    /// Finish identified for this credential's session is blessed: the
    /// node is refused below it from now on. Returns the floor it raised.
    fn joined(
        &self,
        tx: &mut dyn Sql,
        auth: &Authorized,
        version: Option<i64>,
    ) -> Result<Option<String>, Refusal> {
        let known = match version {
            Some(v) => overlays::get(tx, v)?.map(|o| o.version_id),
            None => None,
        };
        nodes::joined(tx, auth.node.id, known)?;
        Ok(crate::rollback::bless(tx, &auth.node, &auth.session)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(hash: [u8; 32], expires_at: i64) -> Credential {
        Credential {
            hash,
            session_id: [1; 16],
            version_id: None,
            expires_at,
            secret: [2; 32],
            node: Node {
                id: 1,
                name: "n".into(),
                group: "g".into(),
            },
        }
    }

    #[test]
    fn only_a_bearer_of_64_hex_digits_is_a_credential() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            bearer_token(Some(&format!("Bearer {hex64}"))).unwrap(),
            [0xab; 32]
        );
        for bad in [
            None,
            Some(hex64.as_str()),
            Some("Bearer "),
            Some("Bearer abab"),
            Some("Basic YWJj"),
        ] {
            let r = bearer_token(bad).unwrap_err();
            assert_eq!(r.code, ErrorCode::MissingCredential, "{bad:?}");
        }
        let long = format!("Bearer {hex64}00");
        assert!(bearer_token(Some(&long)).is_err());
    }

    #[test]
    fn a_credential_is_good_until_it_expires_and_only_for_its_own_hash() {
        let c = credential([3; 32], 100);
        assert!(still_valid(&c, &[3; 32], 100).is_ok());
        assert_eq!(
            still_valid(&c, &[3; 32], 101).unwrap_err().code,
            ErrorCode::CredentialExpired
        );
        assert_eq!(
            still_valid(&c, &[4; 32], 0).unwrap_err().code,
            ErrorCode::UnknownCredential
        );
    }

    #[test]
    fn a_report_may_claim_only_the_overlay_its_session_was_granted() {
        assert_eq!(claimed_version(None, Some(3)).unwrap(), None);
        assert_eq!(claimed_version(None, None).unwrap(), None);
        assert_eq!(claimed_version(Some(3), Some(3)).unwrap(), Some(3));
        let other = claimed_version(Some(2), Some(3)).unwrap_err();
        assert_eq!(other.code, ErrorCode::ReportMismatch);
        assert_eq!(
            other.detail,
            "the report claims overlay 2, but this credential's session was granted overlay 3: refused, nothing recorded"
        );
        assert_eq!(other.reason, other.detail);
        let none = claimed_version(Some(3), None).unwrap_err();
        assert_eq!(none.code, ErrorCode::ReportMismatch);
        assert!(
            none.detail.contains("granted no overlay"),
            "{}",
            none.detail
        );
        assert_eq!(
            claimed_version(Some(u64::MAX), Some(-1)).unwrap_err().code,
            ErrorCode::ReportMismatch
        );
    }

    #[test]
    fn report_outcomes_are_kept_as_boot_report_outcomes() {
        assert_eq!(report_outcome(Outcome::Joined).as_str(), "joined");
        assert_eq!(report_outcome(Outcome::Failed).as_str(), "failed");
    }
}
