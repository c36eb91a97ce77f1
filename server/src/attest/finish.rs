//! Finish: the session claimed (single use), the activated secret's proof
//! and the quote verified, the PCRs judged against the node's policy, the
//! booted UKI held against the node's rollback floor, then the credential
//! and the overlay grant released in one transaction.

use ember_proto::keys;
use ember_proto::msg::{encode, ErrorCode, FinishRequest, FinishResponse, PcrSelection};

use super::{admitted_name, random, ttl_seconds, Refusal, Server, Session, Started, Who};
use crate::refusal::decode_msg;
use crate::store::sessions::Claim;
use crate::store::{
    self, credentials, hex, now_ms, overlays, reports, sessions, Node, Policy, Sql,
};
use crate::uki::Uki;

/// The session a claim found, for this Finish: refused when unknown,
/// used before, expired, or without a node while auto-enrolment is off.
fn session_of(
    id: &[u8; 16],
    claim: Claim,
    auto_enroll_group: Option<&str>,
    now: i64,
) -> Result<Session, Refusal> {
    let s = match claim {
        Claim::Unknown => {
            return Err(Refusal::new(
                ErrorCode::UnknownSession,
                format!("session {} unknown", hex(id)),
            ))
        }
        Claim::Used(state) => {
            return Err(Refusal::new(
                ErrorCode::SessionReused,
                format!("session {} already used ({state})", hex(id)),
            ))
        }
        Claim::Claimed(s) => *s,
    };
    if now > s.expires_at {
        return Err(Refusal::new(
            ErrorCode::SessionExpired,
            format!("session {} expired", hex(id)),
        ));
    }
    let who = match (s.node, s.ek_cert, auto_enroll_group) {
        (Some(node), _, _) => Who::Enrolled(node),
        (None, Some(cert), Some(group)) => Who::Admitted {
            name: admitted_name(&s.ek_hash),
            group: group.to_string(),
            cert,
        },
        _ => {
            return Err(Refusal::new(
                ErrorCode::UnknownEk,
                format!("session {} has no node and auto-enrolment is off", hex(id)),
            ))
        }
    };
    Ok(Session {
        id: *id,
        who,
        ek_hash: s.ek_hash,
        secret: s.secret,
        nonce: s.nonce,
        ak_public: s.ak_public,
        transcript: s.transcript,
        pcrs: PcrSelection {
            hash_alg: s.hash_alg,
            mask: s.mask,
        },
    })
}

/// A quote must cover exactly the PCRs the session asked for.
fn quote_covers(quoted: &PcrSelection, asked: &PcrSelection) -> Result<(), Refusal> {
    if quoted == asked {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::PcrDigestMismatch,
        format!(
            "quote covers PCR mask {:#x}, session asked {:#x}",
            quoted.mask, asked.mask
        ),
    ))
}

/// Record mode: the first boot's quoted values become the node's own policy.
fn recorded_policy(s: &Session, quoted: &[(u8, &[u8])]) -> Policy {
    Policy {
        scope: format!("node:{}", s.who.name()),
        hash_alg: s.pcrs.hash_alg,
        mask: s.pcrs.mask,
        record: false,
        allowed: quoted.iter().map(|(i, v)| (*i, v.to_vec())).collect(),
        events: vec![],
        require_log: false,
    }
}

impl Server {
    pub fn finish(&self, body: &[u8]) -> Result<Started, (Option<String>, Refusal)> {
        let req: FinishRequest = decode_msg("finish", body).map_err(|r| (None, r))?;
        let session = self.claim_session(&req.session).map_err(|r| (None, r))?;
        let name = Some(session.who.name().to_string());
        self.finish_session(&req, session).map_err(|r| (name, r))
    }

    /// Takes a session for this Finish: single use, so a replayed or second
    /// Finish fails even if the first one was refused.
    fn claim_session(&self, id: &[u8; 16]) -> Result<Session, Refusal> {
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        let claim = sessions::claim(&mut tx, id)?;
        tx.commit()?;
        session_of(
            id,
            claim,
            self.settings.auto_enroll_group.as_deref(),
            now_ms(),
        )
    }

    fn finish_session(&self, req: &FinishRequest, s: Session) -> Result<Started, Refusal> {
        self.verify_finish(&s, req)?;
        self.check_policy(&s, req)?;
        let booted = self.booted_uki(&s, req);
        self.release(&s, booted.as_deref())
    }

    /// The proof of the activated secret, then the quote over the nonce.
    fn verify_finish(&self, s: &Session, req: &FinishRequest) -> Result<(), Refusal> {
        if !keys::verify_finish_proof(&s.secret, &s.transcript, req) {
            return Err(Refusal::new(
                ErrorCode::BadProof,
                "proof of the activated secret does not verify",
            ));
        }
        let quote = self.verifier.verify_quote(
            &s.ak_public,
            &req.attest,
            &req.signature,
            &s.nonce,
            &s.pcrs,
            &req.pcr_values,
        )?;
        quote_covers(&quote.pcrs, &s.pcrs)
    }

    /// The node the session is for. The proof verified before this shows
    /// the TPM activated the credential made for this EK: only now does an
    /// admitted node get its row.
    fn node_of(&self, tx: &mut dyn Sql, s: &Session) -> Result<Node, Refusal> {
        let (name, group, cert) = match &s.who {
            Who::Enrolled(node) => return Ok(node.clone()),
            Who::Admitted { name, group, cert } => (name, group, cert),
        };
        if let Some(node) = store::nodes::by_ek_hash(tx, &s.ek_hash)? {
            return Ok(node);
        }
        let node =
            store::nodes::insert(tx, &s.ek_hash, Some(cert), name, group, "manufacturer-ca")?;
        tracing::info!("auto-enrolled node {name} in group {group} by its EK certificate chain");
        Ok(node)
    }

    /// Releases the credential and the overlay grant, in one transaction.
    fn release(&self, s: &Session, booted: Option<&Uki>) -> Result<Started, Refusal> {
        let credential: [u8; 32] = random()?;
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        let node = self.node_of(&mut tx, s)?;
        // Before any key or overlay: a node that blessed a newer UKI is
        // refused with an older one (its refusal kept for `ember nodes`).
        if let Err(r) = crate::rollback::check(&mut tx, &node, booted) {
            // Rolled back, and the connection given back before the
            // report takes one (SQLite has only one).
            drop(tx);
            drop(db);
            self.record_refusal(&node, &r)?;
            return Err(r);
        }
        let overlay = overlays::assigned(&mut tx, &node)?;
        let version_id = overlay.as_ref().map(|o| o.version_id);
        // Before anything is committed: a grant that cannot be made leaves
        // no credential behind.
        let grant = overlay.map(|o| self.grant(s, o, booted)).transpose()?;
        let expires_at = now_ms() + self.settings.credential_ttl_ms;
        let hash = keys::credential_hash(&credential);
        credentials::insert(&mut tx, &hash, &s.id, node.id, version_id, expires_at)?;
        sessions::finish(&mut tx, &s.id, node.id, booted.map(|u| &u.sha256))?;
        let report = reports::add(&mut tx, node.id, reports::Outcome::Attested, version_id, "")?;
        if let Some(u) = booted {
            reports::set_boot_image(&mut tx, report, &u.sha256)?;
        }
        tx.commit()?;
        let resp = FinishResponse {
            version: ember_proto::msg::PROTOCOL_VERSION,
            credential,
            expires_in_s: ttl_seconds(self.settings.credential_ttl_ms),
            overlay: grant,
        };
        Ok(Started {
            body: encode(&resp),
            node: node.name,
        })
    }

    /// Checks the quoted PCR values (and the event log) against the node's
    /// policy; in record mode the first boot's values become the node's
    /// own policy. A refusal of an enrolled node is kept in its boot
    /// reports, so `ember nodes` says why.
    fn check_policy(&self, s: &Session, req: &FinishRequest) -> Result<(), Refusal> {
        let judged = self.judge(s, req);
        if let (Err(r), Who::Enrolled(node)) = (&judged, &s.who) {
            self.record_refusal(node, r)?;
        }
        judged
    }

    /// Keeps a Finish refusal in the node's boot reports, with its
    /// explanation: `ember nodes show` and the console say why and what
    /// command would allow it.
    fn record_refusal(&self, node: &Node, r: &Refusal) -> Result<(), Refusal> {
        let reason = format!("attestation refused: {}", r.detail);
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        let id = reports::add(&mut tx, node.id, reports::Outcome::Failed, None, &reason)?;
        if let Some(e) = &r.explanation {
            reports::add_explanation(&mut tx, id, e)?;
        }
        // A node refused over and over keeps only its last boots too.
        reports::prune(&mut tx, node.id, self.settings.keep_boots)?;
        tx.commit()?;
        Ok(())
    }

    fn judge(&self, s: &Session, req: &FinishRequest) -> Result<(), Refusal> {
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        let policy = self.policy_for(&mut tx, &s.who)?;
        let quoted: Vec<(u8, &[u8])> = s
            .pcrs
            .indices()
            .zip(req.pcr_values.iter().map(Vec::as_slice))
            .collect();
        if policy.record {
            store::policies::put(&mut tx, &recorded_policy(s, &quoted))?;
            tx.commit()?;
            tracing::info!(
                "recorded PCR policy for node {} (mask {:#x})",
                s.who.name(),
                s.pcrs.mask
            );
            return Ok(());
        }
        drop(tx);
        crate::measured::judge(&policy, &quoted, &req.event_log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sessions::Started as Stored;

    fn stored(node: Option<Node>, ek_cert: Option<Vec<u8>>, expires_at: i64) -> Claim {
        Claim::Claimed(Box::new(Stored {
            node,
            ek_hash: [7; 32],
            ek_cert,
            secret: [1; 32],
            nonce: [2; 32],
            ak_public: vec![3],
            transcript: [4; 32],
            hash_alg: 11,
            mask: 0x801,
            expires_at,
        }))
    }

    fn node() -> Node {
        Node {
            id: 5,
            name: "n".into(),
            group: "g".into(),
        }
    }

    #[test]
    fn a_claim_that_found_nothing_usable_is_refused_with_its_own_code() {
        let id = [9; 16];
        let code = |c, group, now| session_of(&id, c, group, now).unwrap_err().code;
        assert_eq!(code(Claim::Unknown, None, 0), ErrorCode::UnknownSession);
        let used = session_of(&id, Claim::Used("finished".into()), None, 0).unwrap_err();
        assert_eq!(used.code, ErrorCode::SessionReused);
        assert!(
            used.detail.ends_with("already used (finished)"),
            "{}",
            used.detail
        );
        let late = stored(Some(node()), None, 100);
        assert_eq!(code(late, None, 101), ErrorCode::SessionExpired);
        // No node and no auto-enrolment (or no certificate): unknown EK.
        let orphan = stored(None, Some(vec![1]), 100);
        assert_eq!(code(orphan, None, 0), ErrorCode::UnknownEk);
        let no_cert = stored(None, None, 100);
        assert_eq!(code(no_cert, Some("auto"), 0), ErrorCode::UnknownEk);
    }

    #[test]
    fn a_claimed_session_is_for_its_node_or_the_node_its_ek_admits() {
        let s = session_of(&[9; 16], stored(Some(node()), None, 100), None, 100).unwrap();
        assert!(matches!(&s.who, Who::Enrolled(n) if n.id == 5));
        assert_eq!((s.pcrs.hash_alg, s.pcrs.mask), (11, 0x801));
        assert_eq!(
            (s.secret, s.nonce, s.transcript),
            ([1; 32], [2; 32], [4; 32])
        );
        let s = session_of(&[9; 16], stored(None, Some(vec![1]), 100), Some("auto"), 0).unwrap();
        assert_eq!(s.who.name(), admitted_name(&[7; 32]));
        assert_eq!(s.who.group(), "auto");
    }

    #[test]
    fn a_quote_over_other_pcrs_than_asked_is_refused() {
        let asked = PcrSelection {
            hash_alg: 11,
            mask: 0x801,
        };
        assert!(quote_covers(&asked, &asked).is_ok());
        let fewer = PcrSelection { mask: 0x1, ..asked };
        let r = quote_covers(&fewer, &asked).unwrap_err();
        assert_eq!(r.code, ErrorCode::PcrDigestMismatch);
        assert_eq!(r.detail, "quote covers PCR mask 0x1, session asked 0x801");
        let sha1 = PcrSelection {
            hash_alg: 4,
            ..asked
        };
        assert!(quote_covers(&sha1, &asked).is_err());
    }

    #[test]
    fn record_mode_keeps_the_quoted_values_as_the_nodes_own_policy() {
        let s = session_of(&[9; 16], stored(Some(node()), None, 100), None, 0).unwrap();
        let quoted: [(u8, &[u8]); 2] = [(0, &[0xa; 32]), (11, &[0xb; 32])];
        let p = recorded_policy(&s, &quoted);
        assert_eq!(p.scope, "node:n");
        assert_eq!((p.hash_alg, p.mask, p.record), (11, 0x801, false));
        assert_eq!(p.allowed, [(0, vec![0xa; 32]), (11, vec![0xb; 32])]);
        assert!(p.events.is_empty() && !p.require_log);
    }
}
