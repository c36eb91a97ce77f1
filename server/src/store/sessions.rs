//! Attestation sessions (`sessions`): Start inserts one, Finish claims it
//! (single use) and finishes it; the caps count the open ones, and the
//! purger drops expired ones no credential needs.

use super::nodes::Node;
use super::{Result, Row, Sql, Val};
use crate::params;

/// A session as Start records it.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: [u8; 16],
    /// `None` for a node admitted by its EK certificate (a row at Finish).
    pub node_id: Option<i64>,
    pub ek_hash: [u8; 32],
    pub ek_cert: Option<&'a [u8]>,
    pub peer: &'a str,
    pub secret: [u8; 32],
    pub nonce: [u8; 32],
    pub ak_public: &'a [u8],
    pub transcript: [u8; 32],
    pub hash_alg: u16,
    pub mask: u32,
    pub created_at: i64,
    pub expires_at: i64,
}

pub fn insert(tx: &mut dyn Sql, s: &NewSession<'_>) -> Result<()> {
    tx.exec(
        "INSERT INTO sessions(id, node_id, ek_hash, ek_cert, peer, secret, nonce, ak_public, transcript, hash_alg, mask, created_at, expires_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'started')",
        params![
            &s.id[..],
            s.node_id,
            &s.ek_hash[..],
            s.ek_cert,
            s.peer,
            &s.secret[..],
            &s.nonce[..],
            s.ak_public,
            &s.transcript[..],
            i64::from(s.hash_alg),
            i64::from(s.mask),
            s.created_at,
            s.expires_at
        ],
    )?;
    Ok(())
}

/// A session as Finish reads it, with its node when it has one.
#[derive(Debug, Clone)]
pub struct Started {
    pub node: Option<Node>,
    pub ek_hash: [u8; 32],
    pub ek_cert: Option<Vec<u8>>,
    pub secret: [u8; 32],
    pub nonce: [u8; 32],
    pub ak_public: Vec<u8>,
    pub transcript: [u8; 32],
    pub hash_alg: u16,
    pub mask: u32,
    pub expires_at: i64,
}

impl Started {
    /// The columns [`Started::from_row`] reads besides [`Node::JOINED`]
    /// (`s` is sessions).
    const COLUMNS: &'static str = "s.ek_hash, s.ek_cert, s.secret, s.nonce, s.ak_public, s.transcript, s.hash_alg, s.mask, s.expires_at";

    fn from_row(r: &Row) -> Result<Started> {
        Ok(Started {
            node: Node::joined(r)?,
            ek_hash: r.get("ek_hash")?,
            ek_cert: r.get("ek_cert")?,
            secret: r.get("secret")?,
            nonce: r.get("nonce")?,
            ak_public: r.get("ak_public")?,
            transcript: r.get("transcript")?,
            hash_alg: r.get("hash_alg")?,
            mask: r.get("mask")?,
            expires_at: r.get("expires_at")?,
        })
    }
}

/// What claiming a session found.
#[derive(Debug)]
pub enum Claim {
    /// No session has this id.
    Unknown,
    /// Claimed before (by a Finish, refused or not): its state.
    Used(String),
    /// Claimed now; the session is this Finish's alone.
    Claimed(Box<Started>),
}

/// Claims session `id` for one Finish: single use, so a replayed or
/// second Finish fails even if the first one was refused.
pub fn claim(tx: &mut dyn Sql, id: &[u8; 16]) -> Result<Claim> {
    // Claimed before it is read: of two Finishes racing on two replicas
    // exactly one changes the row (PostgreSQL re-checks the WHERE once the
    // first one's row lock is released).
    let claimed = tx.exec(
        "UPDATE sessions SET state = 'refused' WHERE id = $1 AND state = 'started'",
        params![&id[..]],
    )?;
    let row = tx.row(
        &format!(
            "SELECT {}, {}, s.state FROM sessions s LEFT JOIN nodes n ON n.id = s.node_id WHERE s.id = $1",
            Node::JOINED,
            Started::COLUMNS
        ),
        params![&id[..]],
    )?;
    Ok(match row {
        None => Claim::Unknown,
        Some(r) if claimed == 0 => Claim::Used(r.get("state")?),
        Some(r) => Claim::Claimed(Box::new(Started::from_row(&r)?)),
    })
}

/// A Finish that released its credential: the session is finished, for
/// `node_id`, which booted `boot_image` (the UKI Finish identified).
pub fn finish(
    tx: &mut dyn Sql,
    id: &[u8; 16],
    node_id: i64,
    boot_image: Option<&[u8; 32]>,
) -> Result<()> {
    tx.exec(
        "UPDATE sessions SET state = 'finished', node_id = $2, boot_image = $3 WHERE id = $1",
        params![&id[..], node_id, boot_image.map(|b| &b[..])],
    )?;
    Ok(())
}

fn count(db: &mut dyn Sql, sql: &str, params: &[Val<'_>]) -> Result<u64> {
    db.one(sql, params)?.get("open")
}

/// Started, unfinished, unexpired sessions of one EK opened from one
/// source (`peer`). Counted per source, not per EK alone: a Start needs
/// only the EK's public key, which is no secret, so a count per EK would
/// let anyone fill the EK's share and lock its owner out.
pub fn open_of_ek_from(db: &mut dyn Sql, ek_hash: &[u8; 32], peer: &str, now: i64) -> Result<u64> {
    count(
        db,
        "SELECT COUNT(*) AS open FROM sessions
         WHERE ek_hash = $1 AND state = 'started' AND expires_at > $2 AND peer = $3",
        params![&ek_hash[..], now, peer],
    )
}

/// Started, unfinished, unexpired sessions one client address opened.
pub fn open_of_peer(db: &mut dyn Sql, peer: &str, now: i64) -> Result<u64> {
    count(
        db,
        "SELECT COUNT(*) AS open FROM sessions WHERE peer = $1 AND state = 'started' AND expires_at > $2",
        params![peer, now],
    )
}

/// Started, unfinished, unexpired sessions (the metrics gauge).
pub fn open(db: &mut dyn Sql, now: i64) -> Result<u64> {
    count(
        db,
        "SELECT COUNT(*) AS open FROM sessions WHERE state = 'started' AND expires_at > $1",
        params![now],
    )
}

/// Deletes expired credentials and the sessions (with their secrets) no
/// credential needs any more; returns (credentials, sessions) removed.
pub fn purge_expired(db: &mut dyn Sql, now: i64) -> Result<(u64, u64)> {
    let creds = db.exec(
        "DELETE FROM credentials WHERE expires_at < $1",
        params![now],
    )?;
    let sessions = db.exec(
        "DELETE FROM sessions WHERE expires_at < $1 AND id NOT IN (SELECT session_id FROM credentials)",
        params![now],
    )?;
    Ok((creds, sessions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::scratch;
    use crate::store::{credentials, nodes, open as open_db};

    fn started(id: u8, node_id: Option<i64>, peer: &str, expires_at: i64) -> NewSession<'_> {
        NewSession {
            id: [id; 16],
            node_id,
            ek_hash: [1; 32],
            ek_cert: None,
            peer,
            secret: [0; 32],
            nonce: [0; 32],
            ak_public: &[0],
            transcript: [0; 32],
            hash_alg: 11,
            mask: 1,
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn purge_drops_expired_sessions_but_keeps_those_a_credential_needs() {
        let (_d, s) = scratch();
        let mut db = open_db(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n = nodes::insert(&mut tx, &[1; 32], None, "a", "default", "test").unwrap();
        tx.commit().unwrap();
        for (id, expires) in [(1u8, 10i64), (2, 10), (3, 1000)] {
            insert(&mut db, &started(id, Some(n.id), "127.0.0.1", expires)).unwrap();
            finish(&mut db, &[id; 16], n.id, None).unwrap();
        }
        credentials::insert(&mut db, &[1; 32], &[2; 16], n.id, None, 1000).unwrap();
        assert_eq!(purge_expired(&mut db, 100).unwrap(), (0, 1));
        assert_eq!(purge_expired(&mut db, 2000).unwrap(), (1, 2));
    }

    #[test]
    fn a_session_is_claimed_once_and_counts_while_open() {
        let (_d, s) = scratch();
        let mut db = open_db(&s, None).unwrap();
        insert(&mut db, &started(1, None, "10.0.0.1", 1000)).unwrap();
        insert(&mut db, &started(2, None, "10.0.0.2", 1000)).unwrap();
        assert_eq!(
            open_of_ek_from(&mut db, &[1; 32], "10.0.0.1", 10).unwrap(),
            1
        );
        assert_eq!(
            open_of_ek_from(&mut db, &[1; 32], "10.0.0.3", 10).unwrap(),
            0
        );
        assert_eq!(open_of_peer(&mut db, "10.0.0.1", 10).unwrap(), 1);
        assert_eq!(open(&mut db, 10).unwrap(), 2);
        assert_eq!(open(&mut db, 1000).unwrap(), 0, "expired ones are not open");
        let Claim::Claimed(s) = claim(&mut db, &[1; 16]).unwrap() else {
            panic!("the first claim takes it")
        };
        assert!(s.node.is_none());
        assert_eq!((s.hash_alg, s.mask, s.expires_at), (11, 1, 1000));
        assert!(
            matches!(claim(&mut db, &[1; 16]).unwrap(), Claim::Used(state) if state == "refused")
        );
        assert!(matches!(claim(&mut db, &[9; 16]).unwrap(), Claim::Unknown));
        assert_eq!(open(&mut db, 10).unwrap(), 1);
    }
}
