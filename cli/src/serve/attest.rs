//! The protocol's server side: Start, Finish, credential checks and Report,
//! as synchronous functions over the store (the HTTP layer runs them on the
//! blocking pool). Every refusal is a [`Refusal`] with its own code.

use std::sync::Mutex;

use ember_proto::keys;
use ember_proto::msg::{
    decode, encode, ErrorCode, FinishRequest, FinishResponse, Outcome, OverlayMeta, PcrSelection,
    ReportRequest, ReportResponse, StartRequest, StartResponse, PROTOCOL_VERSION,
};
use ember_proto::sealed::sealed_len;
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::Sha256;

use super::store::{self, hex, now_ms, Node, Policy, StateDir};
use super::verify::{Verifier, VerifyError};

/// Why a request was refused: the code the node sees and a detail for logs.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Refusal {
            code,
            detail: detail.into(),
        }
    }
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::new(ErrorCode::Internal, format!("{e:#}"))
    }
}

impl From<rusqlite::Error> for Refusal {
    fn from(e: rusqlite::Error) -> Self {
        Refusal::new(ErrorCode::Internal, format!("database: {e}"))
    }
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        let code = match &e {
            VerifyError::Malformed(_) => ErrorCode::Malformed,
            VerifyError::BadEkCertificate(_) => ErrorCode::BadEkCertificate,
            VerifyError::EkMismatch => ErrorCode::EkMismatch,
            VerifyError::BadAkAttributes(_) => ErrorCode::BadAkAttributes,
            VerifyError::BadSignature(_) => ErrorCode::BadSignature,
            VerifyError::StaleNonce => ErrorCode::StaleNonce,
            VerifyError::PcrDigestMismatch(_) => ErrorCode::PcrDigestMismatch,
            VerifyError::Internal(_) => ErrorCode::Internal,
        };
        Refusal::new(code, e.to_string())
    }
}

fn decode_msg<T: serde::de::DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, Refusal> {
    decode(what, body).map_err(|e| match e {
        ember_proto::Error::UnsupportedVersion { got } => Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {got} not supported (this server speaks {PROTOCOL_VERSION})"),
        ),
        e => Refusal::new(ErrorCode::Malformed, e.to_string()),
    })
}

/// Server settings that shape the protocol.
#[derive(Clone, Debug)]
pub struct Settings {
    pub session_ttl_ms: i64,
    pub credential_ttl_ms: i64,
    pub chunk_size: u32,
    /// Group for nodes admitted by a manufacturer certificate chain.
    pub auto_enroll_group: Option<String>,
    /// Test mode: nonce and secret derived from the AK, so recorded
    /// transcripts replay (load tests only; never in production).
    pub replayable_sessions: bool,
}

pub struct Server {
    pub state: StateDir,
    pub db: Mutex<Connection>,
    pub verifier: Verifier,
    pub settings: Settings,
}

fn random<const N: usize>() -> Result<[u8; N], Refusal> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("getrandom: {e}")))?;
    Ok(b)
}

/// Test mode only: a value fixed by the AK so a recorded quote stays valid.
fn replayable(label: &str, ak_public: &[u8]) -> [u8; 32] {
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
    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the node behind an EK: enrolled by key hash, or admitted by a
    /// certificate chain to a manufacturer CA when auto-enrolment is on.
    fn identify(&self, req: &StartRequest) -> Result<Node, Refusal> {
        let ek_hash = self.verifier.ek_hash_from_public(&req.ek_public)?;
        if let Some(node) = store::node_by_ek_hash(&self.db(), &ek_hash)? {
            return Ok(node);
        }
        let Some(group) = &self.settings.auto_enroll_group else {
            return Err(Refusal::new(
                ErrorCode::UnknownEk,
                format!("EK {} is not enrolled", hex(&ek_hash)),
            ));
        };
        let Some(cert) = &req.ek_cert else {
            return Err(Refusal::new(
                ErrorCode::UnknownEk,
                format!(
                    "EK {} is not enrolled and sent no certificate",
                    hex(&ek_hash)
                ),
            ));
        };
        self.verifier.verify_ek_certificate(cert, &req.ek_public)?;
        let mut db = self.db();
        let tx = db.transaction()?;
        // Another request for the same EK may have enrolled it meanwhile.
        if let Some(node) = store::node_by_ek_hash(&tx, &ek_hash)? {
            return Ok(node);
        }
        let name = format!("ek-{}", hex(&ek_hash[..6]));
        let node = store::insert_node(&tx, &ek_hash, Some(cert), &name, group, "manufacturer-ca")?;
        tx.commit()?;
        eprintln!(
            "ember-serve: auto-enrolled node {name} in group {group} by its EK certificate chain"
        );
        Ok(node)
    }

    pub fn start(&self, body: &[u8]) -> Result<Started, (Option<String>, Refusal)> {
        let req: StartRequest = decode_msg("start", body).map_err(|r| (None, r))?;
        let node = self.identify(&req).map_err(|r| (None, r))?;
        let name = Some(node.name.clone());
        self.start_for(&node, &req, body).map_err(|r| (name, r))
    }

    fn start_for(&self, node: &Node, req: &StartRequest, body: &[u8]) -> Result<Started, Refusal> {
        let ak_name = self.verifier.check_ak(&req.ak_public)?;
        let policy = store::effective_policy(&self.db(), &node.name, &node.group)?;
        let pcrs = PcrSelection {
            hash_alg: policy.hash_alg,
            mask: policy.mask,
        };
        let session: [u8; 16] = random()?;
        let (nonce, secret) = if self.settings.replayable_sessions {
            (
                replayable("nonce", &req.ak_public),
                replayable("secret", &req.ak_public),
            )
        } else {
            (random()?, random()?)
        };
        let (credential_blob, encrypted_secret) =
            self.verifier
                .make_credential(&req.ek_public, &ak_name, &secret)?;
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
        self.db().execute(
            "INSERT INTO sessions(id, node_id, secret, nonce, ak_public, transcript, hash_alg, mask, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'started')",
            params![
                &session[..],
                node.id,
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
        Ok(Started {
            body: resp_bytes,
            node: node.name.clone(),
        })
    }

    pub fn finish(&self, body: &[u8]) -> Result<Started, (Option<String>, Refusal)> {
        let req: FinishRequest = decode_msg("finish", body).map_err(|r| (None, r))?;
        let session = self.claim_session(&req.session).map_err(|r| (None, r))?;
        let name = Some(session.node.name.clone());
        self.finish_session(&req, session).map_err(|r| (name, r))
    }

    /// Takes a session for this Finish: single use, so a replayed or second
    /// Finish fails even if the first one was refused.
    fn claim_session(&self, id: &[u8; 16]) -> Result<Session, Refusal> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let row = tx
            .query_row(
                "SELECT s.node_id, n.name, n.group_name, s.secret, s.nonce, s.ak_public, s.transcript, s.hash_alg, s.mask, s.expires_at, s.state
                 FROM sessions s JOIN nodes n ON n.id = s.node_id WHERE s.id = ?1",
                [&id[..]],
                |r| {
                    Ok((
                        Node { id: r.get(0)?, name: r.get(1)?, group: r.get(2)? },
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, i64>(9)?,
                        r.get::<_, String>(10)?,
                    ))
                },
            )
            .optional()?;
        let Some((node, secret, nonce, ak_public, transcript, hash_alg, mask, expires_at, state)) =
            row
        else {
            return Err(Refusal::new(
                ErrorCode::UnknownSession,
                format!("session {} unknown", hex(id)),
            ));
        };
        if state != "started" {
            return Err(Refusal::new(
                ErrorCode::SessionReused,
                format!("session {} already used ({state})", hex(id)),
            ));
        }
        tx.execute(
            "UPDATE sessions SET state = 'refused' WHERE id = ?1",
            [&id[..]],
        )?;
        tx.commit()?;
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
        Ok(Session {
            id: *id,
            node,
            secret: fixed(secret, "secret")?,
            nonce: fixed(nonce, "nonce")?,
            ak_public,
            transcript: fixed(transcript, "transcript")?,
            pcrs: PcrSelection {
                hash_alg: hash_alg as u16,
                mask: mask as u32,
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
        self.check_policy(&s, &req.pcr_values)?;

        let credential: [u8; 32] = random()?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let overlay = store::assigned_overlay(&tx, &s.node)?;
        let expires_at = now_ms() + self.settings.credential_ttl_ms;
        tx.execute(
            "INSERT INTO credentials(hash, session_id, node_id, version_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&keys::credential_hash(&credential)[..], &s.id[..], s.node.id, overlay.as_ref().map(|o| o.version_id), expires_at],
        )?;
        tx.execute(
            "UPDATE sessions SET state = 'finished' WHERE id = ?1",
            [&s.id[..]],
        )?;
        tx.execute(
            "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES (?1, ?2, 'attested', ?3, '')",
            params![s.node.id, now_ms(), overlay.as_ref().map(|o| o.version_id)],
        )?;
        tx.commit()?;
        let resp = FinishResponse {
            version: PROTOCOL_VERSION,
            credential,
            expires_in_s: (self.settings.credential_ttl_ms / 1000).max(1) as u32,
            overlay: overlay.map(|o| OverlayMeta {
                version_id: o.version_id as u64,
                sha256: o.sha256,
                size: o.size,
                sealed_size: sealed_len(o.size, self.settings.chunk_size),
                chunk_size: self.settings.chunk_size,
            }),
        };
        Ok(Started {
            body: encode(&resp),
            node: s.node.name,
        })
    }

    /// Checks the quoted PCR values against the node's policy; in record
    /// mode the first boot's values become the node's own policy.
    fn check_policy(&self, s: &Session, values: &[Vec<u8>]) -> Result<(), Refusal> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let policy = store::effective_policy(&tx, &s.node.name, &s.node.group)?;
        let quoted: Vec<(u8, &Vec<u8>)> = s.pcrs.indices().zip(values).collect();
        if policy.record {
            let recorded = Policy {
                scope: format!("node:{}", s.node.name),
                hash_alg: s.pcrs.hash_alg,
                mask: s.pcrs.mask,
                record: false,
                allowed: quoted.iter().map(|(i, v)| (*i, (*v).clone())).collect(),
            };
            store::put_policy(&tx, &recorded)?;
            tx.commit()?;
            eprintln!(
                "ember-serve: recorded PCR policy for node {} (mask {:#x})",
                s.node.name, s.pcrs.mask
            );
            return Ok(());
        }
        for (pcr, value) in &quoted {
            if policy.mask & (1 << pcr) == 0 {
                continue;
            }
            let allowed = policy
                .allowed
                .iter()
                .any(|(p, v)| p == pcr && keys::ct_eq(v, value));
            if !allowed {
                return Err(Refusal::new(
                    ErrorCode::PcrPolicyMismatch,
                    format!(
                        "PCR {pcr} = {} is not allowed by policy {}",
                        hex(value),
                        policy.scope
                    ),
                ));
            }
        }
        for pcr in (0u8..24).filter(|i| policy.mask & (1 << i) != 0) {
            if !quoted.iter().any(|(p, _)| *p == pcr) {
                return Err(Refusal::new(
                    ErrorCode::PcrPolicyMismatch,
                    format!("policy requires PCR {pcr}, not quoted"),
                ));
            }
        }
        Ok(())
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
            .query_row(
                "SELECT c.hash, c.session_id, c.version_id, c.expires_at, s.secret, n.id, n.name, n.group_name
                 FROM credentials c JOIN sessions s ON s.id = c.session_id JOIN nodes n ON n.id = c.node_id
                 WHERE c.hash = ?1",
                [&hash[..]],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        Node { id: r.get(5)?, name: r.get(6)?, group: r.get(7)? },
                    ))
                },
            )
            .optional()
            .map_err(|e| (None, e.into()))?;
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

    /// The overlay the credential was issued for, and its stream key.
    pub fn overlay_for(&self, auth: &Authorized) -> Result<(store::Overlay, [u8; 32]), Refusal> {
        let Some(version_id) = auth.version_id else {
            return Err(Refusal::new(
                ErrorCode::NoOverlay,
                format!("no overlay assigned to {}", auth.node.name),
            ));
        };
        let overlay = store::overlay(&self.db(), version_id)?.ok_or_else(|| {
            Refusal::new(
                ErrorCode::NoOverlay,
                format!("overlay {version_id} was removed"),
            )
        })?;
        let key = keys::overlay_key(&auth.secret, &auth.session, &overlay.sha256);
        Ok((overlay, key))
    }

    pub fn report(&self, auth: &Authorized, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let req: ReportRequest = decode_msg("report", body)?;
        let mut db = self.db();
        let tx = db.transaction()?;
        // One report per credential: a replayed report must not count twice.
        let first = tx.execute(
            "UPDATE credentials SET reported_at = ?2 WHERE hash = ?1 AND reported_at IS NULL",
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
        tx.execute(
            "INSERT INTO boot_reports(node_id, at, outcome, version_id, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![auth.node.id, now_ms(), outcome, version, reason],
        )?;
        match req.outcome {
            Outcome::Joined => {
                let known = match version {
                    Some(v) => store::overlay(&tx, v)?.map(|o| o.version_id),
                    None => None,
                };
                tx.execute("UPDATE nodes SET attempts = 0, last_known_good = COALESCE(?2, last_known_good) WHERE id = ?1", params![auth.node.id, known])?
            }
            Outcome::Failed => tx.execute(
                "UPDATE nodes SET attempts = attempts + 1 WHERE id = ?1",
                [auth.node.id],
            )?,
        };
        let (attempts, lkg): (i64, Option<i64>) = tx.query_row(
            "SELECT attempts, last_known_good FROM nodes WHERE id = ?1",
            [auth.node.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.commit()?;
        Ok(encode(&ReportResponse {
            version: PROTOCOL_VERSION,
            attempts: attempts as u32,
            last_known_good: lkg.map(|v| v as u64),
        }))
    }
}

struct Session {
    id: [u8; 16],
    node: Node,
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
