//! `nodes` (and the `groups` they belong to): enrolment, lookups, the
//! boot-attempt counter and last-known-good overlay a Report moves, and
//! the listing `ember nodes` shows.

use super::{now_ms, Error, Result, Row, Sql};
use crate::params;

/// A node as the protocol knows it.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: i64,
    pub name: String,
    pub group: String,
}

impl Node {
    /// The columns [`Node::from_row`] reads.
    pub const COLUMNS: &'static str = "id, name, group_name";
    /// The same from a join, as [`Node::joined`] reads them (`n` is nodes).
    pub const JOINED: &'static str =
        "n.id AS node_id, n.name AS node_name, n.group_name AS node_group";

    pub fn from_row(r: &Row) -> Result<Node> {
        Ok(Node {
            id: r.get("id")?,
            name: r.get("name")?,
            group: r.get("group_name")?,
        })
    }

    /// From [`Node::JOINED`]; `None` when the join found no node.
    pub fn joined(r: &Row) -> Result<Option<Node>> {
        let Some(id) = r.get::<Option<i64>>("node_id")? else {
            return Ok(None);
        };
        Ok(Some(Node {
            id,
            name: r.get("node_name")?,
            group: r.get("node_group")?,
        }))
    }
}

pub fn by_ek_hash(db: &mut dyn Sql, ek_hash: &[u8; 32]) -> Result<Option<Node>> {
    db.row(
        &format!("SELECT {} FROM nodes WHERE ek_hash = $1", Node::COLUMNS),
        params![&ek_hash[..]],
    )?
    .map(|r| Node::from_row(&r))
    .transpose()
}

pub fn by_name(db: &mut dyn Sql, name: &str) -> Result<Option<Node>> {
    db.row(
        &format!("SELECT {} FROM nodes WHERE name = $1", Node::COLUMNS),
        params![name],
    )?
    .map(|r| Node::from_row(&r))
    .transpose()
}

/// The nodes of `group` (every node with `None`), by name.
pub fn of_group(db: &mut dyn Sql, group: Option<&str>) -> Result<Vec<Node>> {
    match group {
        Some(g) => db.rows(
            &format!(
                "SELECT {} FROM nodes WHERE group_name = $1 ORDER BY name",
                Node::COLUMNS
            ),
            params![g],
        )?,
        None => db.rows(
            &format!("SELECT {} FROM nodes ORDER BY name", Node::COLUMNS),
            &[],
        )?,
    }
    .iter()
    .map(Node::from_row)
    .collect()
}

pub fn ensure_group(tx: &mut dyn Sql, group: &str) -> Result<()> {
    tx.exec(
        "INSERT INTO groups(name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        params![group, now_ms()],
    )?;
    Ok(())
}

#[cfg(test)]
pub fn group_exists(db: &mut dyn Sql, group: &str) -> Result<bool> {
    Ok(db
        .row("SELECT name FROM groups WHERE name = $1", params![group])?
        .is_some())
}

/// Enrols a node (creating its group if needed); a duplicate EK or name
/// is a [`Error::Conflict`].
pub fn insert(
    tx: &mut dyn Sql,
    ek_hash: &[u8; 32],
    ek_cert: Option<&[u8]>,
    name: &str,
    group: &str,
    enrolled_by: &str,
) -> Result<Node> {
    ensure_group(tx, group)?;
    if by_ek_hash(tx, ek_hash)?.is_some() {
        return Err(Error::Conflict("this EK is already enrolled".into()));
    }
    if by_name(tx, name)?.is_some() {
        return Err(Error::Conflict(format!(
            "a node named {name:?} already exists"
        )));
    }
    let row = tx.one(
        "INSERT INTO nodes(ek_hash, ek_cert, name, group_name, enrolled_at, enrolled_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        params![&ek_hash[..], ek_cert, name, group, now_ms(), enrolled_by],
    )?;
    Ok(Node {
        id: row.get("id")?,
        name: name.into(),
        group: group.into(),
    })
}

/// A Joined report: the attempt counter starts over and `overlay` (when
/// the server knows it) becomes the last known good. Returns the rows changed.
pub fn joined(tx: &mut dyn Sql, node_id: i64, overlay: Option<i64>) -> Result<u64> {
    tx.exec(
        "UPDATE nodes SET attempts = 0, last_known_good = COALESCE($2, last_known_good) WHERE id = $1",
        params![node_id, overlay],
    )
}

/// A Failed report: one more failed attempt. Returns the rows changed.
pub fn failed(tx: &mut dyn Sql, node_id: i64) -> Result<u64> {
    tx.exec(
        "UPDATE nodes SET attempts = attempts + 1 WHERE id = $1",
        params![node_id],
    )
}

/// What a Report answers: the node's failed attempts in a row and its
/// last-known-good overlay version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts {
    pub attempts: u32,
    pub last_known_good: Option<u64>,
}

pub fn attempts(db: &mut dyn Sql, node_id: i64) -> Result<Attempts> {
    let r = db.one(
        "SELECT attempts, last_known_good FROM nodes WHERE id = $1",
        params![node_id],
    )?;
    Ok(Attempts {
        attempts: r.get("attempts")?,
        last_known_good: r.get("last_known_good")?,
    })
}

/// A node as `ember nodes` lists it, with its latest boot.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub group: String,
    pub ek_hash: Vec<u8>,
    pub attempts: i64,
    pub last_known_good: Option<i64>,
    pub last_report_at: Option<i64>,
    pub last_outcome: Option<String>,
    /// The latest reason a node gave (its own text: escape before printing).
    pub last_reason: Option<String>,
    /// Its rollback floor: the image epoch it blessed last and that
    /// image's SHA-256 ([`super::images`]).
    pub rollback_floor: Option<(i64, Option<Vec<u8>>)>,
}

impl NodeStatus {
    fn from_row(r: &Row) -> Result<NodeStatus> {
        Ok(NodeStatus {
            name: r.get("name")?,
            group: r.get("group_name")?,
            ek_hash: r.get("ek_hash")?,
            attempts: r.get("attempts")?,
            last_known_good: r.get("last_known_good")?,
            last_report_at: r.get("last_report_at")?,
            last_outcome: r.get("last_outcome")?,
            last_reason: r.get("last_reason")?,
            rollback_floor: r
                .get::<Option<i64>>("rollback_floor")?
                .map(|e| Ok::<_, Error>((e, r.get("floor_sha256")?)))
                .transpose()?,
        })
    }
}

pub fn list(db: &mut dyn Sql) -> Result<Vec<NodeStatus>> {
    db.rows(
        "SELECT n.name, n.group_name, n.ek_hash, n.attempts, n.last_known_good,
                (SELECT at FROM boot_reports b WHERE b.node_id = n.id ORDER BY at DESC, id DESC LIMIT 1) AS last_report_at,
                (SELECT outcome FROM boot_reports b WHERE b.node_id = n.id ORDER BY at DESC, id DESC LIMIT 1) AS last_outcome,
                (SELECT reason FROM boot_reports b WHERE b.node_id = n.id AND outcome != 'attested' ORDER BY at DESC, id DESC LIMIT 1) AS last_reason,
                n.rollback_floor, i.sha256 AS floor_sha256
         FROM nodes n LEFT JOIN boot_images i ON i.epoch = n.rollback_floor ORDER BY n.name",
        &[],
    )?
    .iter()
    .map(NodeStatus::from_row)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::scratch;
    use crate::store::{open, reports};

    #[test]
    fn failed_enrolment_leaves_nothing_behind() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        insert(&mut tx, &[1; 32], None, "a", "rack1", "test").unwrap();
        tx.commit().unwrap();
        let mut tx = db.transaction().unwrap();
        // New group created, then the duplicate name fails: the group must not remain.
        assert!(matches!(
            insert(&mut tx, &[2; 32], None, "a", "rack2", "test"),
            Err(Error::Conflict(_))
        ));
        drop(tx);
        assert!(!group_exists(&mut db, "rack2").unwrap());
        assert!(by_ek_hash(&mut db, &[2; 32]).unwrap().is_none());
    }

    #[test]
    fn reports_move_attempts_and_the_listing_shows_the_latest() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n = insert(&mut tx, &[1; 32], None, "a", "g", "test").unwrap();
        failed(&mut tx, n.id).unwrap();
        failed(&mut tx, n.id).unwrap();
        reports::add(&mut tx, n.id, reports::Outcome::Failed, None, "no disk").unwrap();
        reports::add(&mut tx, n.id, reports::Outcome::Attested, None, "").unwrap();
        tx.commit().unwrap();
        assert_eq!(
            attempts(&mut db, n.id).unwrap(),
            Attempts {
                attempts: 2,
                last_known_good: None
            }
        );
        assert_eq!(joined(&mut db, n.id, None).unwrap(), 1);
        assert_eq!(attempts(&mut db, n.id).unwrap().attempts, 0);
        let listed = list(&mut db).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].group, "g");
        // The latest reason is the node's, not the attestation's empty one.
        assert_eq!(listed[0].last_reason.as_deref(), Some("no disk"));
        assert_eq!(of_group(&mut db, Some("g")).unwrap()[0].name, "a");
        assert!(of_group(&mut db, Some("h")).unwrap().is_empty());
    }
}
