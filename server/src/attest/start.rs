//! Start: who is behind the EK, whether it may open another session, and
//! the session itself (MakeCredential for the AK, a nonce to quote over).
//! The cheap checks (decoding, key parsing, AK attributes, the session
//! caps) come before the expensive work (a certificate chain,
//! MakeCredential's RSA/ECDH, the database insert).

use std::net::IpAddr;

use ember_proto::keys;
use ember_proto::msg::{
    encode, ErrorCode, PcrSelection, StartRequest, StartResponse, PROTOCOL_VERSION,
};

use super::{random, ttl_seconds, Refusal, Server, Started, Who};
use crate::refusal::decode_msg;
use crate::store::{self, hex, now_ms, sessions, Sql};

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

/// Which cap a count is held against.
#[derive(Clone, Copy, Debug)]
enum Cap<'a> {
    /// One EK's sessions from one source.
    Ek(&'a [u8; 32], &'a str),
    Peer(&'a str),
}

/// Refuses when `held` open sessions already fill the cap of `max`.
fn within_cap(cap: Cap<'_>, held: u64, max: u64) -> Result<(), Refusal> {
    if held < max {
        return Ok(());
    }
    let (detail, reason) = match cap {
        Cap::Ek(ek_hash, peer) => (
            format!(
                "EK {} holds {held} open sessions from peer {peer}",
                hex(ek_hash)
            ),
            "too-many-sessions-for-this-ek",
        ),
        Cap::Peer(peer) => (
            format!("peer {peer} holds {held} open sessions"),
            "too-many-sessions-for-this-peer",
        ),
    };
    Err(Refusal::new(ErrorCode::TooManySessions, detail).because(reason))
}

/// The session a Start opens for `req`: what the node is told, and what
/// is kept to check its Finish by.
struct Opened {
    response: StartResponse,
    secret: [u8; 32],
}

impl Server {
    /// Start: decode, check the keys and caps, find who it is, open the
    /// session.
    pub fn start(&self, body: &[u8], peer: IpAddr) -> Result<Started, (Option<String>, Refusal)> {
        let req: StartRequest = decode_msg("start", body).map_err(|r| (None, r))?;
        // Counted per source: an IPv4 address or an IPv6 /64 (peer.rs).
        let peer = crate::peer::Source::of(peer).to_string();
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

    /// Finds who is behind an EK: an enrolled node by key hash, or (when
    /// auto-enrolment is on) a node to be admitted by its certificate chain.
    /// Such a node gets its row at Finish, once ActivateCredential proved
    /// the TPM holds this EK.
    fn identify(&self, req: &StartRequest, ek_hash: &[u8; 32]) -> Result<Who, Refusal> {
        if let Some(node) = store::nodes::by_ek_hash(&mut self.db()?, ek_hash)? {
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
            name: super::admitted_name(ek_hash),
            group: group.clone(),
            cert: cert.clone(),
        })
    }

    /// Refuses when the EK (from this source) or the source already holds
    /// its share of open sessions (one indexed count each, before any
    /// expensive work). The EK's share is per source: Starts replayed for
    /// a victim's EK from elsewhere fill only their own source's share, and
    /// the victim's own address still gets its sessions.
    fn check_caps(&self, db: &mut dyn Sql, ek_hash: &[u8; 32], peer: &str) -> Result<(), Refusal> {
        let now = now_ms();
        let per_ek = sessions::open_of_ek_from(db, ek_hash, peer, now)?;
        within_cap(
            Cap::Ek(ek_hash, peer),
            per_ek,
            self.settings.max_sessions_per_ek,
        )?;
        let per_peer = sessions::open_of_peer(db, peer, now)?;
        within_cap(
            Cap::Peer(peer),
            per_peer,
            self.settings.max_sessions_per_peer,
        )
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

    /// The expensive half: MakeCredential under the EK for this AK.
    fn open_session(
        &self,
        pcrs: PcrSelection,
        ak_name: &[u8],
        req: &StartRequest,
    ) -> Result<Opened, Refusal> {
        let session: [u8; 16] = random()?;
        let (nonce, secret) = self.session_values(&req.ak_public)?;
        let (credential_blob, encrypted_secret) =
            self.verifier
                .make_credential(&req.ek_public, ak_name, &secret)?;
        Ok(Opened {
            response: StartResponse {
                version: PROTOCOL_VERSION,
                session,
                nonce,
                credential_blob,
                encrypted_secret,
                pcrs,
                expires_in_s: ttl_seconds(self.settings.session_ttl_ms),
            },
            secret,
        })
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
        let opened = self.open_session(pcrs, ak_name, req)?;
        let resp_bytes = encode(&opened.response);
        let now = now_ms();
        let (node_id, ek_cert) = match who {
            Who::Enrolled(n) => (Some(n.id), None),
            Who::Admitted { cert, .. } => (None, Some(cert.as_slice())),
        };
        let session = sessions::NewSession {
            id: opened.response.session,
            node_id,
            ek_hash: *ek_hash,
            ek_cert,
            peer,
            secret: opened.secret,
            nonce: opened.response.nonce,
            ak_public: &req.ak_public,
            transcript: keys::start_transcript(body, &resp_bytes),
            hash_alg: pcrs.hash_alg,
            mask: pcrs.mask,
            created_at: now,
            expires_at: now + self.settings.session_ttl_ms,
        };
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        // Counted again with the insert, under a lock every replica takes:
        // concurrent Starts cannot overshoot the caps.
        tx.lock_sessions()?;
        self.check_caps(&mut tx, ek_hash, peer)?;
        sessions::insert(&mut tx, &session)?;
        tx.commit()?;
        Ok(Started {
            body: resp_bytes,
            node: who.name().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_refuses_once_it_is_full_and_names_what_is_capped() {
        let ek = [0xab; 32];
        assert!(within_cap(Cap::Ek(&ek, "10.0.0.8"), 0, 1).is_ok());
        let r = within_cap(Cap::Ek(&ek, "10.0.0.8"), 1, 1).unwrap_err();
        assert_eq!(r.code, ErrorCode::TooManySessions);
        assert_eq!(r.reason, "too-many-sessions-for-this-ek");
        assert!(r.detail.contains(&hex(&ek)), "{}", r.detail);
        assert!(r.detail.ends_with("from peer 10.0.0.8"), "{}", r.detail);
        let r = within_cap(Cap::Peer("10.0.0.9"), 7, 4).unwrap_err();
        assert_eq!(r.reason, "too-many-sessions-for-this-peer");
        assert_eq!(r.detail, "peer 10.0.0.9 holds 7 open sessions");
        // A cap of zero refuses every session.
        assert!(within_cap(Cap::Peer("x"), 0, 0).is_err());
    }
}
