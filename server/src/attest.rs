//! The protocol's server side: Start, Finish, credential checks and Report,
//! as synchronous functions over the store (the HTTP layer runs them on the
//! blocking pool). Every refusal is a [`Refusal`] with its own code.

use std::net::IpAddr;

use ember_proto::keys;
use ember_proto::manifest::{BootImage, SignedManifest, BOOT_IMAGE_FORMAT};
use ember_proto::msg::{
    encode, ErrorCode, FinishRequest, FinishResponse, Outcome, OverlayGrant, PcrSelection,
    ReportRequest, ReportResponse, StartRequest, StartResponse, PROTOCOL_VERSION,
};

use crate::params;
use crate::refusal::decode_msg;
pub use crate::refusal::Refusal;
use crate::store::{self, hex, now_ms, Node, Policy, Sql, StateDir};
use crate::verify::Verifier;

/// Server settings that shape the protocol.
#[derive(Clone, Debug)]
pub struct Settings {
    pub session_ttl_ms: i64,
    pub credential_ttl_ms: i64,
    /// Group for nodes admitted by a manufacturer certificate chain.
    pub auto_enroll_group: Option<String>,
    /// Open (started, unfinished, unexpired) sessions one EK may hold.
    pub max_sessions_per_ek: u64,
    /// Open sessions one client address may hold.
    pub max_sessions_per_peer: u64,
    /// Lab mode (`ember serve --lab-record-first-boot`): a node with no
    /// PCR policy gets its first boot's PCRs 0-7 recorded as its policy.
    /// Off, such a node is refused.
    pub lab_record_first_boot: bool,
    /// Test mode: nonce and secret derived from the AK, so recorded
    /// transcripts replay (load tests only; never in production builds).
    #[cfg(feature = "test-hooks")]
    pub replayable_sessions: bool,
}

pub struct Server {
    pub state: StateDir,
    /// SQLite's one connection or a few to PostgreSQL.
    pub db: store::Pool,
    pub verifier: Verifier,
    pub settings: Settings,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// How long a client may take to send a request body.
    pub body_timeout: std::time::Duration,
    /// The plain-HTTP listener's port, told to nodes in Finish so they
    /// fetch the sealed blob without TLS (set once it is bound).
    pub http_port: std::sync::OnceLock<u16>,
    /// The manifest key, which also signs each boot's boot image record.
    pub signing_key: ember_proto::manifest::SigningSecret,
    /// The UKIs among the boot artifacts, for last-known-good.
    pub ukis: crate::uki::Known,
}

fn random<const N: usize>() -> Result<[u8; N], Refusal> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("getrandom: {e}")))?;
    Ok(b)
}

/// Test mode only: a value fixed by the AK so a recorded quote stays valid.
#[cfg(feature = "test-hooks")]
fn replayable(label: &str, ak_public: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"ember test mode: replayable sessions")
        .expect("any key length");
    mac.update(label.as_bytes());
    mac.update(ak_public);
    mac.finalize().into_bytes().into()
}

pub struct Started {
    pub body: Vec<u8>,
    pub node: String,
}

impl Server {
    /// A connection for one step; never hold two at once (SQLite has one).
    fn db(&self) -> Result<store::Pooled<'_>, Refusal> {
        Ok(self.db.get()?)
    }

    /// Finds who is behind an EK: an enrolled node by key hash, or (when
    /// auto-enrolment is on) a node to be admitted by its certificate chain.
    /// Such a node gets its row at Finish, once ActivateCredential proved
    /// the TPM holds this EK.
    fn identify(&self, req: &StartRequest, ek_hash: &[u8; 32]) -> Result<Who, Refusal> {
        if let Some(node) = store::node_by_ek_hash(&mut self.db()?, ek_hash)? {
            return Ok(Who::Enrolled(node));
        }
        let Some(group) = &self.settings.auto_enroll_group else {
            return Err(Refusal::new(
                ErrorCode::UnknownEk,
                format!("EK {} is not enrolled", hex(ek_hash)),
            ));
        };
        let Some(cert) = &req.ek_cert else {
            return Err(Refusal::new(
                ErrorCode::UnknownEk,
                format!(
                    "EK {} is not enrolled and sent no certificate",
                    hex(ek_hash)
                ),
            ));
        };
        self.verifier.verify_ek_certificate(cert, &req.ek_public)?;
        Ok(Who::Admitted {
            name: admitted_name(ek_hash),
            group: group.clone(),
            cert: cert.clone(),
        })
    }

    /// Refuses when the EK or the peer already holds its share of open
    /// sessions (one indexed count each, before any expensive work).
    fn check_caps(&self, db: &mut dyn Sql, ek_hash: &[u8; 32], peer: &str) -> Result<(), Refusal> {
        let now = now_ms();
        let per_ek = store::open_sessions_of_ek(db, ek_hash, now)?;
        if per_ek >= self.settings.max_sessions_per_ek {
            return Err(Refusal::new(
                ErrorCode::TooManySessions,
                format!("EK {} holds {per_ek} open sessions", hex(ek_hash)),
            )
            .because("too-many-sessions-for-this-ek"));
        }
        let per_peer = store::open_sessions_of_peer(db, peer, now)?;
        if per_peer >= self.settings.max_sessions_per_peer {
            return Err(Refusal::new(
                ErrorCode::TooManySessions,
                format!("peer {peer} holds {per_peer} open sessions"),
            )
            .because("too-many-sessions-for-this-peer"));
        }
        Ok(())
    }

    /// The session's nonce and secret: random, or (test builds in test
    /// mode) fixed by the AK so recorded transcripts replay.
    fn session_values(&self, _ak_public: &[u8]) -> Result<([u8; 32], [u8; 32]), Refusal> {
        #[cfg(feature = "test-hooks")]
        if self.settings.replayable_sessions {
            return Ok((
                replayable("nonce", _ak_public),
                replayable("secret", _ak_public),
            ));
        }
        Ok((random()?, random()?))
    }

    /// Start: the cheap checks (decoding, key parsing, AK attributes, the
    /// session caps) come before the expensive work (a certificate chain,
    /// MakeCredential's RSA/ECDH, the database insert).
    pub fn start(&self, body: &[u8], peer: IpAddr) -> Result<Started, (Option<String>, Refusal)> {
        let req: StartRequest = decode_msg("start", body).map_err(|r| (None, r))?;
        let peer = peer.to_string();
        let ek_hash = self
            .verifier
            .ek_hash_from_public(&req.ek_public)
            .map_err(|e| (None, e.into()))?;
        let ak_name = self
            .verifier
            .check_ak(&req.ak_public)
            .map_err(|e| (None, e.into()))?;
        self.db()
            .and_then(|mut db| self.check_caps(&mut db, &ek_hash, &peer))
            .map_err(|r| (None, r))?;
        let who = self.identify(&req, &ek_hash).map_err(|r| (None, r))?;
        let name = Some(who.name().to_string());
        self.start_for(&who, &ek_hash, &ak_name, &peer, &req, body)
            .map_err(|r| (name, r))
    }

    fn start_for(
        &self,
        who: &Who,
        ek_hash: &[u8; 32],
        ak_name: &[u8],
        peer: &str,
        req: &StartRequest,
        body: &[u8],
    ) -> Result<Started, Refusal> {
        let policy = self.policy_for(&mut self.db()?, who)?;
        let pcrs = PcrSelection {
            hash_alg: policy.hash_alg,
            mask: policy.mask,
        };
        let session: [u8; 16] = random()?;
        let (nonce, secret) = self.session_values(&req.ak_public)?;
        let (credential_blob, encrypted_secret) =
            self.verifier
                .make_credential(&req.ek_public, ak_name, &secret)?;
        let ttl = self.settings.session_ttl_ms;
        let resp = StartResponse {
            version: PROTOCOL_VERSION,
            session,
            nonce,
            credential_blob,
            encrypted_secret,
            pcrs,
            expires_in_s: (ttl / 1000).max(1) as u32,
        };
        let resp_bytes = encode(&resp);
        let transcript = keys::start_transcript(body, &resp_bytes);
        let now = now_ms();
        let (node_id, cert) = match who {
            Who::Enrolled(n) => (Some(n.id), None),
            Who::Admitted { cert, .. } => (None, Some(cert.as_slice())),
        };
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        // Counted again with the insert, under a lock every replica takes:
        // concurrent Starts cannot overshoot the caps.
        tx.lock_sessions()?;
        self.check_caps(&mut tx, ek_hash, peer)?;
        tx.exec(
            "INSERT INTO sessions(id, node_id, ek_hash, ek_cert, peer, secret, nonce, ak_public, transcript, hash_alg, mask, created_at, expires_at, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'started')",
            params![
                &session[..],
                node_id,
                &ek_hash[..],
                cert,
                peer,
                &secret[..],
                &nonce[..],
                &req.ak_public,
                &transcript[..],
                pcrs.hash_alg as i64,
                pcrs.mask as i64,
                now,
                now + ttl
            ],
        )?;
        tx.commit()?;
        Ok(Started {
            body: resp_bytes,
            node: who.name().to_string(),
        })
    }

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
        // Claimed before it is read: of two Finishes racing on two
        // replicas exactly one changes the row (PostgreSQL re-checks the
        // WHERE once the first one's row lock is released).
        let claimed = tx.exec(
            "UPDATE sessions SET state = 'refused' WHERE id = $1 AND state = 'started'",
            params![&id[..]],
        )?;
        let row = tx.row(
            "SELECT n.id, n.name, n.group_name, s.ek_hash, s.ek_cert, s.secret, s.nonce, s.ak_public, s.transcript, s.hash_alg, s.mask, s.expires_at, s.state
             FROM sessions s LEFT JOIN nodes n ON n.id = s.node_id WHERE s.id = $1",
            params![&id[..]],
        )?;
        tx.commit()?;
        let Some(r) = row else {
            return Err(Refusal::new(
                ErrorCode::UnknownSession,
                format!("session {} unknown", hex(id)),
            ));
        };
        if claimed == 0 {
            let state: String = r.get(12)?;
            return Err(Refusal::new(
                ErrorCode::SessionReused,
                format!("session {} already used ({state})", hex(id)),
            ));
        }
        let node = match r.get::<Option<i64>>(0)? {
            Some(_) => Some(Node::from_row(&r, 0)?),
            None => None,
        };
        let expires_at: i64 = r.get(11)?;
        if now_ms() > expires_at {
            return Err(Refusal::new(
                ErrorCode::SessionExpired,
                format!("session {} expired", hex(id)),
            ));
        }
        let fixed = |v: Vec<u8>, what: &str| -> Result<[u8; 32], Refusal> {
            v.try_into().map_err(|_| {
                Refusal::new(
                    ErrorCode::Internal,
                    format!("stored {what} has the wrong length"),
                )
            })
        };
        let ek_hash = fixed(r.get(3)?, "EK hash")?;
        let who = match (node, r.get(4)?, &self.settings.auto_enroll_group) {
            (Some(node), _, _) => Who::Enrolled(node),
            (None, Some(cert), Some(group)) => Who::Admitted {
                name: admitted_name(&ek_hash),
                group: group.clone(),
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
            ek_hash,
            secret: fixed(r.get(5)?, "secret")?,
            nonce: fixed(r.get(6)?, "nonce")?,
            ak_public: r.get(7)?,
            transcript: fixed(r.get(8)?, "transcript")?,
            pcrs: PcrSelection {
                hash_alg: r.get::<i64>(9)? as u16,
                mask: r.get::<i64>(10)? as u32,
            },
        })
    }

    fn finish_session(&self, req: &FinishRequest, s: Session) -> Result<Started, Refusal> {
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
        if quote.pcrs != s.pcrs {
            return Err(Refusal::new(
                ErrorCode::PcrDigestMismatch,
                format!(
                    "quote covers PCR mask {:#x}, session asked {:#x}",
                    quote.pcrs.mask, s.pcrs.mask
                ),
            ));
        }
        self.check_policy(&s, req)?;
        let booted = self.booted_uki(&s, req);

        let credential: [u8; 32] = random()?;
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        let node = match &s.who {
            Who::Enrolled(node) => node.clone(),
            // The proof above shows the TPM activated the credential made
            // for this EK: only now does the admitted node get its row.
            Who::Admitted { name, group, cert } => {
                match store::node_by_ek_hash(&mut tx, &s.ek_hash)? {
                    Some(node) => node,
                    None => {
                        let node = store::insert_node(
                            &mut tx,
                            &s.ek_hash,
                            Some(cert),
                            name,
                            group,
                            "manufacturer-ca",
                        )?;
                        eprintln!(
                        "ember-serve: auto-enrolled node {name} in group {group} by its EK certificate chain"
                    );
                        node
                    }
                }
            }
        };
        // Before any key or overlay: a node that blessed a newer UKI is
        // refused with an older one (its refusal kept for `ember nodes`).
        if let Err(r) = crate::rollback::check(&mut tx, &node, booted.as_deref()) {
            // Rolled back, and the connection given back before the
            // report takes one (SQLite has only one).
            drop(tx);
            drop(db);
            self.record_refusal(&node, &r)?;
            return Err(r);
        }
        let overlay = store::assigned_overlay(&mut tx, &node)?;
        // Before anything is committed: a grant that cannot be made leaves
        // no credential behind.
        let grant = overlay
            .clone()
            .map(|o| self.grant(&s, o, booted.as_deref()))
            .transpose()?;
        let expires_at = now_ms() + self.settings.credential_ttl_ms;
        tx.exec(
            "INSERT INTO credentials(hash, session_id, node_id, version_id, expires_at) VALUES ($1, $2, $3, $4, $5)",
            params![&keys::credential_hash(&credential)[..], &s.id[..], node.id, overlay.as_ref().map(|o| o.version_id), expires_at],
        )?;
        tx.exec(
            "UPDATE sessions SET state = 'finished', node_id = $2, boot_image = $3 WHERE id = $1",
            params![&s.id[..], node.id, booted.as_ref().map(|u| &u.sha256[..])],
        )?;
        tx.exec(
            "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES ($1, $2, 'attested', $3, '')",
            params![node.id, now_ms(), overlay.as_ref().map(|o| o.version_id)],
        )?;
        tx.commit()?;
        let resp = FinishResponse {
            version: PROTOCOL_VERSION,
            credential,
            expires_in_s: (self.settings.credential_ttl_ms / 1000).max(1) as u32,
            overlay: grant,
        };
        Ok(Started {
            body: encode(&resp),
            node: node.name,
        })
    }

    /// The assigned overlay for this session: its stored signed manifest
    /// and its data key wrapped under a key only this session's secret
    /// derives. Nothing is sealed here.
    fn grant(
        &self,
        s: &Session,
        o: store::Assigned,
        booted: Option<&crate::uki::Uki>,
    ) -> Result<OverlayGrant, Refusal> {
        let (Some(manifest), Some(data_key)) = (o.manifest, o.data_key) else {
            return Err(Refusal::new(
                ErrorCode::Internal,
                format!(
                    "overlay {} predates sealed blobs: add it again with `ember overlay add` and assign it",
                    o.version_id
                ),
            )
            .because("overlay-unavailable"));
        };
        let manifest = SignedManifest::from_bytes(&manifest).map_err(|e| {
            Refusal::new(
                ErrorCode::Internal,
                format!("stored manifest of overlay {}: {e}", o.version_id),
            )
        })?;
        let data_key: [u8; 32] = data_key.try_into().map_err(|_| {
            Refusal::new(
                ErrorCode::Internal,
                format!(
                    "stored data key of overlay {} has the wrong length",
                    o.version_id
                ),
            )
        })?;
        let wrapped_key = keys::wrap_data_key(&s.secret, &s.id, &manifest.body, &data_key).to_vec();
        // Without the ESP's loader no slot PCR 4 is known: no record.
        let boot_image = booted.filter(|u| !u.pcr4_from_esp.is_empty()).map(|u| {
            self.signing_key.sign_boot_image(&BootImage {
                format: BOOT_IMAGE_FORMAT,
                manifest_sha256: manifest.body_sha256(),
                sha256: u.sha256,
                size: u.size,
                pcr11: u.pcr11,
                pcr4: u.pcr4_from_esp.clone(),
            })
        });
        Ok(OverlayGrant {
            manifest,
            wrapped_key,
            http_port: self.http_port.get().copied(),
            boot_image,
        })
    }

    /// The UKI this node booted, among the boot artifacts: the one whose
    /// PCR 11 it quoted (and, with an event log, which the firmware
    /// measured into PCR 4). `None`, logged, when the server knows none:
    /// the node then writes no last-known-good slot.
    fn booted_uki(
        &self,
        s: &Session,
        req: &FinishRequest,
    ) -> Option<std::sync::Arc<crate::uki::Uki>> {
        let pcr11 = s
            .pcrs
            .indices()
            .zip(&req.pcr_values)
            .find(|(i, _)| *i == crate::uki::measure::PCR_KERNEL_IMAGE)
            .map(|(_, v)| v.as_slice());
        let said = |why: String| {
            eprintln!(
                "ember-serve: step=finish node={} boot-image=none: {why}; the node writes no last-known-good slot",
                s.who.name()
            );
            None
        };
        if s.pcrs.hash_alg != ember_proto::msg::ALG_SHA256 {
            return said("the quote is not in the sha256 bank".into());
        }
        let Some(pcr11) = pcr11 else {
            return said("its policy does not quote PCR 11, which names the UKI booted (`ember policy set --uki`)".into());
        };
        let log = ember_tpm::eventlog::EventLog::parse(&req.event_log).ok();
        let extends = log
            .as_ref()
            .filter(|_| !req.event_log.is_empty())
            .map(crate::uki::pcr4_extends);
        match self
            .ukis
            .find(&self.state.boot_dir(), pcr11, extends.as_deref())
        {
            Ok(Some(u)) => {
                eprintln!(
                    "ember-serve: step=finish node={} boot-image={} (PCR 11 {}){}",
                    s.who.name(),
                    hex(&u.sha256),
                    hex(pcr11),
                    if u.pcr4_from_esp.is_empty() {
                        "; no --esp-loader, so no boot image record: the node writes no last-known-good slot"
                    } else {
                        ""
                    }
                );
                Some(u)
            }
            Ok(None) => said(format!(
                "PCR 11 {} is no UKI's among the boot artifacts (`ember policy set --uki` and `ember artifact ipxe --uki` store them)",
                hex(pcr11)
            )),
            Err(e) => said(format!("reading the boot artifacts: {e:#}")),
        }
    }

    /// The policy that applies to `who`: its own, its group's, the
    /// default, or (lab mode only) record-on-first-boot; none is a refusal.
    fn policy_for(&self, db: &mut dyn Sql, who: &Who) -> Result<Policy, Refusal> {
        match store::effective_policy(db, who.name(), who.group())? {
            Some(p) => Ok(p),
            None if self.settings.lab_record_first_boot => Ok(store::lab_record_policy()),
            None => Err(Refusal::new(
                ErrorCode::PcrPolicyMismatch,
                format!(
                    "no PCR policy for node {} (group {}): set one with `ember policy set --uki`; `ember serve --lab-record-first-boot` records first boots (lab only)",
                    who.name(),
                    who.group()
                ),
            )
            .because("no PCR policy set for this node")),
        }
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

    /// Keeps a Finish refusal in the node's boot reports: `ember nodes`
    /// shows why.
    fn record_refusal(&self, node: &Node, r: &Refusal) -> Result<(), Refusal> {
        let reason: String = format!("attestation refused: {}", r.detail)
            .chars()
            .take(500)
            .collect();
        self.db()?.exec(
            "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES ($1, $2, 'failed', NULL, $3)",
            params![node.id, now_ms(), &reason],
        )?;
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
            let recorded = Policy {
                scope: format!("node:{}", s.who.name()),
                hash_alg: s.pcrs.hash_alg,
                mask: s.pcrs.mask,
                record: false,
                allowed: quoted.iter().map(|(i, v)| (*i, v.to_vec())).collect(),
                events: vec![],
                require_log: false,
            };
            store::put_policy(&mut tx, &recorded)?;
            tx.commit()?;
            eprintln!(
                "ember-serve: recorded PCR policy for node {} (mask {:#x})",
                s.who.name(),
                s.pcrs.mask
            );
            return Ok(());
        }
        drop(tx);
        crate::measured::judge(&policy, &quoted, &req.event_log)
    }

    /// Open sessions over all replicas (the metrics gauge); None when the
    /// database does not answer.
    pub fn open_sessions(&self) -> Option<u64> {
        let mut db = self.db().ok()?;
        store::open_sessions(&mut db, now_ms()).ok()
    }

    /// Checks `Authorization: Bearer <hex>`.
    pub fn authorize(&self, header: Option<&str>) -> Result<Authorized, (Option<String>, Refusal)> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(store::unhex)
            .and_then(|t| <[u8; 32]>::try_from(t).ok())
            .ok_or((
                None,
                Refusal::new(ErrorCode::MissingCredential, "no bearer credential"),
            ))?;
        let hash = keys::credential_hash(&token);
        let row = self
            .db()
            .and_then(|mut db| {
                Ok(db.row(
                    "SELECT c.hash, c.session_id, c.version_id, c.expires_at, s.secret, n.id, n.name, n.group_name
                     FROM credentials c JOIN sessions s ON s.id = c.session_id JOIN nodes n ON n.id = c.node_id
                     WHERE c.hash = $1",
                    params![&hash[..]],
                )?)
            })
            .and_then(|row| {
                let Some(r) = row else { return Ok(None) };
                Ok(Some((
                    r.get::<Vec<u8>>(0)?,
                    r.get::<Vec<u8>>(1)?,
                    r.get::<Option<i64>>(2)?,
                    r.get::<i64>(3)?,
                    r.get::<Vec<u8>>(4)?,
                    Node::from_row(&r, 5)?,
                )))
            })
            .map_err(|e| (None, e))?;
        let Some((stored, session, version_id, expires_at, secret, node)) = row else {
            return Err((
                None,
                Refusal::new(ErrorCode::UnknownCredential, "credential unknown"),
            ));
        };
        let name = Some(node.name.clone());
        if !keys::ct_eq(&stored, &hash) {
            return Err((
                name,
                Refusal::new(ErrorCode::UnknownCredential, "credential unknown"),
            ));
        }
        if now_ms() > expires_at {
            return Err((
                name,
                Refusal::new(ErrorCode::CredentialExpired, "credential expired"),
            ));
        }
        let (Ok(session), Ok(secret)) =
            (<[u8; 16]>::try_from(session), <[u8; 32]>::try_from(secret))
        else {
            return Err((
                name,
                Refusal::new(ErrorCode::Internal, "stored session has the wrong shape"),
            ));
        };
        Ok(Authorized {
            hash,
            session,
            secret,
            version_id,
            node,
        })
    }

    pub fn report(&self, auth: &Authorized, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let req: ReportRequest = decode_msg("report", body)?;
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        // One report per credential: a replayed report must not count twice.
        let first = tx.exec(
            "UPDATE credentials SET reported_at = $2 WHERE hash = $1 AND reported_at IS NULL",
            params![&auth.hash[..], now_ms()],
        )?;
        if first == 0 {
            return Err(Refusal::new(
                ErrorCode::SessionReused,
                "this credential already reported",
            ));
        }
        let outcome = match req.outcome {
            Outcome::Joined => "joined",
            Outcome::Failed => "failed",
        };
        let reason: String = req.reason.chars().take(500).collect();
        let version = req.overlay_version.map(|v| v as i64);
        let mut raised = None;
        tx.exec(
            "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES ($1, $2, $3, $4, $5)",
            params![auth.node.id, now_ms(), outcome, version, &reason],
        )?;
        match req.outcome {
            Outcome::Joined => {
                let known = match version {
                    Some(v) => store::overlay(&mut tx, v)?.map(|o| o.version_id),
                    None => None,
                };
                let n = tx.exec("UPDATE nodes SET attempts = 0, last_known_good = COALESCE($2, last_known_good) WHERE id = $1", params![auth.node.id, known])?;
                // The UKI Finish identified for this credential's session
                // is blessed: the node is refused below it from now on.
                raised = crate::rollback::bless(&mut tx, &auth.node, &auth.session)?;
                n
            }
            Outcome::Failed => tx.exec(
                "UPDATE nodes SET attempts = attempts + 1 WHERE id = $1",
                params![auth.node.id],
            )?,
        };
        let r = tx.one(
            "SELECT attempts, last_known_good FROM nodes WHERE id = $1",
            params![auth.node.id],
        )?;
        let (attempts, lkg): (i64, Option<i64>) = (r.get(0)?, r.get(1)?);
        tx.commit()?;
        if let Some(raised) = raised {
            eprintln!("ember-serve: step=report node={} {raised}", auth.node.name);
        }
        Ok(encode(&ReportResponse {
            version: PROTOCOL_VERSION,
            attempts: attempts as u32,
            last_known_good: lkg.map(|v| v as u64),
        }))
    }
}

/// Who a session is for.
enum Who {
    Enrolled(Node),
    /// Not enrolled, admitted by its EK certificate chain: becomes a node
    /// at Finish.
    Admitted {
        name: String,
        group: String,
        cert: Vec<u8>,
    },
}

impl Who {
    fn name(&self) -> &str {
        match self {
            Who::Enrolled(n) => &n.name,
            Who::Admitted { name, .. } => name,
        }
    }
    fn group(&self) -> &str {
        match self {
            Who::Enrolled(n) => &n.group,
            Who::Admitted { group, .. } => group,
        }
    }
}

/// The name a node admitted by its EK certificate gets.
fn admitted_name(ek_hash: &[u8; 32]) -> String {
    format!("ek-{}", hex(&ek_hash[..6]))
}

struct Session {
    id: [u8; 16],
    who: Who,
    ek_hash: [u8; 32],
    secret: [u8; 32],
    nonce: [u8; 32],
    ak_public: Vec<u8>,
    transcript: [u8; 32],
    pcrs: PcrSelection,
}

pub struct Authorized {
    pub hash: [u8; 32],
    pub session: [u8; 16],
    pub secret: [u8; 32],
    pub version_id: Option<i64>,
    pub node: Node,
}
