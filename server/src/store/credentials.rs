//! Credentials (`credentials`): what Finish releases to a node, stored
//! only as its hash, and what a Report authenticates with, once.

use super::nodes::Node;
use super::{Result, Sql};
use crate::params;

/// Records a released credential by its hash.
pub fn insert(
    tx: &mut dyn Sql,
    hash: &[u8; 32],
    session_id: &[u8; 16],
    node_id: i64,
    version_id: Option<i64>,
    expires_at: i64,
) -> Result<()> {
    tx.exec(
        "INSERT INTO credentials(hash, session_id, node_id, version_id, expires_at) VALUES ($1, $2, $3, $4, $5)",
        params![&hash[..], &session_id[..], node_id, version_id, expires_at],
    )?;
    Ok(())
}

/// A credential with what a Report needs of its session and node.
#[derive(Debug, Clone)]
pub struct Credential {
    pub hash: [u8; 32],
    pub session_id: [u8; 16],
    pub version_id: Option<i64>,
    pub expires_at: i64,
    /// Its session's secret.
    pub secret: [u8; 32],
    pub node: Node,
}

impl Credential {
    /// The columns read besides [`Node::JOINED`] (`c` is credentials, `s`
    /// its session).
    const COLUMNS: &'static str = "c.hash, c.session_id, c.version_id, c.expires_at, s.secret";
}

/// The credential whose hash is `hash`.
pub fn by_hash(db: &mut dyn Sql, hash: &[u8; 32]) -> Result<Option<Credential>> {
    let Some(r) = db.row(
        &format!(
            "SELECT {}, {} FROM credentials c JOIN sessions s ON s.id = c.session_id
             JOIN nodes n ON n.id = c.node_id WHERE c.hash = $1",
            Credential::COLUMNS,
            Node::JOINED
        ),
        params![&hash[..]],
    )?
    else {
        return Ok(None);
    };
    let Some(node) = Node::joined(&r)? else {
        return Ok(None);
    };
    Ok(Some(Credential {
        hash: r.get("hash")?,
        session_id: r.get("session_id")?,
        version_id: r.get("version_id")?,
        expires_at: r.get("expires_at")?,
        secret: r.get("secret")?,
        node,
    }))
}

/// Marks the credential reported; false when it already was (a replayed
/// report must not count twice).
pub fn mark_reported(tx: &mut dyn Sql, hash: &[u8; 32], at: i64) -> Result<bool> {
    Ok(tx.exec(
        "UPDATE credentials SET reported_at = $2 WHERE hash = $1 AND reported_at IS NULL",
        params![&hash[..], at],
    )? == 1)
}
