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

/// A node's EK hash and counters (the console's node page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub ek_hash: [u8; 32],
    pub attempts: u32,
    pub last_known_good: Option<i64>,
}

pub fn facts(db: &mut dyn Sql, node_id: i64) -> Result<Facts> {
    let r = db.one(
        "SELECT ek_hash, attempts, last_known_good FROM nodes WHERE id = $1",
        params![node_id],
    )?;
    Ok(Facts {
        ek_hash: r.get("ek_hash")?,
        attempts: r.get("attempts")?,
        last_known_good: r.get("last_known_good")?,
    })
}

/// What the console's fleet page asks for: a filter, an order, a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetQuery {
    /// Only this group (None: all).
    pub group: Option<String>,
    /// Only nodes whose last boot report has this outcome (None: all).
    pub outcome: Option<FleetOutcome>,
    pub sort: FleetSort,
    pub descending: bool,
    pub offset: u32,
    pub limit: u32,
}

/// A last boot's outcome, as the fleet page filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetOutcome {
    Joined,
    Failed,
    Attested,
    /// No report yet.
    Never,
}

impl FleetOutcome {
    pub const ALL: [FleetOutcome; 4] = [
        FleetOutcome::Joined,
        FleetOutcome::Failed,
        FleetOutcome::Attested,
        FleetOutcome::Never,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetOutcome::Joined => "joined",
            FleetOutcome::Failed => "failed",
            FleetOutcome::Attested => "attested",
            FleetOutcome::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<FleetOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// The fleet page's sortable columns. Each maps to fixed SQL text, so no
/// request text ever reaches a query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FleetSort {
    #[default]
    Name,
    Group,
    LastBoot,
    Attempts,
    Floor,
}

impl FleetSort {
    pub const ALL: [FleetSort; 5] = [
        FleetSort::Name,
        FleetSort::Group,
        FleetSort::LastBoot,
        FleetSort::Attempts,
        FleetSort::Floor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetSort::Name => "name",
            FleetSort::Group => "group",
            FleetSort::LastBoot => "last-boot",
            FleetSort::Attempts => "attempts",
            FleetSort::Floor => "floor",
        }
    }

    pub fn parse(s: &str) -> Option<FleetSort> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    fn column(self) -> &'static str {
        match self {
            FleetSort::Name => "n.name",
            FleetSort::Group => "n.group_name",
            FleetSort::LastBoot => "COALESCE(r.at, 0)",
            FleetSort::Attempts => "n.attempts",
            FleetSort::Floor => "COALESCE(n.rollback_floor, 0)",
        }
    }
}

/// One row of the fleet page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRow {
    pub name: String,
    pub group: String,
    pub ek_hash: [u8; 32],
    pub attempts: u32,
    pub last_known_good: Option<i64>,
    pub rollback_floor: Option<i64>,
    /// The newest boot report: when, its outcome, the overlay it named.
    pub last_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_version: Option<i64>,
    /// The UKI the newest attestation identified.
    pub booted_uki: Option<[u8; 32]>,
}

/// A page of the fleet and how many nodes match the filter in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPage {
    pub rows: Vec<FleetRow>,
    pub total: u64,
}

/// The fleet page's nodes: filtered, ordered and cut to one page in the
/// database, so the server's work stays one page's at 10,000 nodes.
pub fn fleet(db: &mut dyn Sql, q: &FleetQuery) -> Result<FleetPage> {
    let group = q.group.as_deref().unwrap_or("");
    let outcome = q.outcome.map(FleetOutcome::as_str).unwrap_or("");
    // The newest report of each node, joined once.
    const FROM: &str = "FROM nodes n LEFT JOIN boot_reports r
            ON r.id = (SELECT MAX(b.id) FROM boot_reports b WHERE b.node_id = n.id)
        WHERE ($1 = '' OR n.group_name = $1)
          AND ($2 = '' OR COALESCE(r.outcome, 'never') = $2)";
    let total: i64 = db
        .one(
            &format!("SELECT COUNT(*) AS n {FROM}"),
            params![group, outcome],
        )?
        .get("n")?;
    let order = format!(
        "{} {dir}, n.name {dir}",
        q.sort.column(),
        dir = if q.descending { "DESC" } else { "ASC" }
    );
    let rows = db.rows(
        &format!(
            "SELECT n.name, n.group_name, n.ek_hash, n.attempts, n.last_known_good, n.rollback_floor,
                    r.at AS last_at, r.outcome AS last_outcome, r.version_id AS last_version,
                    (SELECT a.boot_image FROM boot_reports a
                      WHERE a.node_id = n.id AND a.outcome = 'attested' ORDER BY a.id DESC LIMIT 1) AS booted_uki
             {FROM} ORDER BY {order} LIMIT $3 OFFSET $4"
        ),
        params![group, outcome, i64::from(q.limit), i64::from(q.offset)],
    )?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(FleetRow {
                name: r.get("name")?,
                group: r.get("group_name")?,
                ek_hash: r.get("ek_hash")?,
                attempts: r.get("attempts")?,
                last_known_good: r.get("last_known_good")?,
                rollback_floor: r.get("rollback_floor")?,
                last_at: r.get("last_at")?,
                last_outcome: r.get("last_outcome")?,
                last_version: r.get("last_version")?,
                booted_uki: r.get("booted_uki")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(FleetPage {
        rows,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// Every group's name (the fleet page's filter).
pub fn groups(db: &mut dyn Sql) -> Result<Vec<String>> {
    db.rows("SELECT name FROM groups ORDER BY name", &[])?
        .iter()
        .map(|r| r.get("name"))
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

    #[test]
    fn the_fleet_is_filtered_sorted_and_paged_in_the_database() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        for i in 0..30u8 {
            let group = if i % 3 == 0 { "rack-a" } else { "rack-b" };
            let n = insert(&mut tx, &[i; 32], None, &format!("node-{i:02}"), group, "t").unwrap();
            if i % 2 == 0 {
                let id = reports::add(&mut tx, n.id, reports::Outcome::Attested, None, "").unwrap();
                reports::set_boot_image(&mut tx, id, &[9; 32]).unwrap();
                let last = if i % 4 == 0 {
                    reports::Outcome::Joined
                } else {
                    reports::Outcome::Failed
                };
                reports::add(&mut tx, n.id, last, Some(7), "").unwrap();
            }
        }
        tx.commit().unwrap();
        let all = fleet(
            &mut db,
            &FleetQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.total, 30);
        assert_eq!(all.rows.len(), 10);
        assert_eq!(all.rows[0].name, "node-00");
        assert_eq!(all.rows[0].last_outcome.as_deref(), Some("joined"));
        assert_eq!(all.rows[0].booted_uki, Some([9; 32]));
        assert_eq!(all.rows[0].last_version, Some(7));
        assert_eq!(all.rows[1].last_outcome, None);
        let q = FleetQuery {
            group: Some("rack-a".into()),
            outcome: Some(FleetOutcome::Joined),
            sort: FleetSort::Name,
            descending: true,
            offset: 1,
            limit: 10,
        };
        let page = fleet(&mut db, &q).unwrap();
        // rack-a: 0, 3, ..., 27; joined: i % 4 == 0 too: 0, 12, 24.
        assert_eq!(page.total, 3);
        let names: Vec<_> = page.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["node-12", "node-00"]);
        let never = FleetQuery {
            outcome: Some(FleetOutcome::Never),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(fleet(&mut db, &never).unwrap().total, 15);
        assert_eq!(groups(&mut db).unwrap(), ["default", "rack-a", "rack-b"]);
    }
}
