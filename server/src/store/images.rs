//! The rollback order of boot images and each node's rollback floor.
//!
//! A UKI gets its image epoch the first time an operator allows it
//! (`ember policy set --uki`): one server-wide counter, so a later image
//! always has a higher epoch, and naming an image again keeps the epoch it
//! has (re-allowing an old image does not make it new). A node's floor is
//! the highest epoch it blessed (reported Joined after a boot of it); it
//! only rises, except by `ember nodes allow-rollback`. Every change of a
//! floor is kept in `floor_changes`.

use super::{now_ms, Result, Sql};
use crate::params;

/// A UKI in the rollback order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    pub sha256: [u8; 32],
    /// Its place in the order: higher is newer.
    pub epoch: i64,
    pub size: u64,
    /// Where the operator allowed it from (the path given).
    pub source: String,
    pub added_at: i64,
}

const COLUMNS: &str = "sha256, epoch, size, source, added_at";

fn image_row(r: &super::Row) -> Result<BootImage> {
    Ok(BootImage {
        sha256: r.get("sha256")?,
        epoch: r.get("epoch")?,
        size: r.get("size")?,
        source: r.get("source")?,
        added_at: r.get("added_at")?,
    })
}

/// The image whose SHA-256 is `sha256`, if it has an epoch.
pub fn by_sha256(db: &mut dyn Sql, sha256: &[u8; 32]) -> Result<Option<BootImage>> {
    db.row(
        &format!("SELECT {COLUMNS} FROM boot_images WHERE sha256 = $1"),
        params![&sha256[..]],
    )?
    .map(|r| image_row(&r))
    .transpose()
}

/// The image of image epoch `epoch`.
pub fn by_epoch(db: &mut dyn Sql, epoch: i64) -> Result<Option<BootImage>> {
    db.row(
        &format!("SELECT {COLUMNS} FROM boot_images WHERE epoch = $1"),
        params![epoch],
    )?
    .map(|r| image_row(&r))
    .transpose()
}

/// The image Finish identified for session `session` (kept in the
/// session), if it has an epoch.
pub fn of_session(db: &mut dyn Sql, session: &[u8; 16]) -> Result<Option<BootImage>> {
    db.row(
        "SELECT b.sha256, b.epoch, b.size, b.source, b.added_at
         FROM sessions s JOIN boot_images b ON b.sha256 = s.boot_image WHERE s.id = $1",
        params![&session[..]],
    )?
    .map(|r| image_row(&r))
    .transpose()
}

/// Every ordered image, oldest first.
pub fn list(db: &mut dyn Sql) -> Result<Vec<BootImage>> {
    db.rows(
        &format!("SELECT {COLUMNS} FROM boot_images ORDER BY epoch"),
        &[],
    )?
    .iter()
    .map(image_row)
    .collect()
}

/// Gives the image its epoch if it has none yet (the next of the
/// server-wide counter); returns it and whether it was new. Replicas and
/// admin commands racing on one image agree on one epoch: the counter's
/// row lock orders them and the insert keeps the first.
pub fn register(
    tx: &mut dyn Sql,
    sha256: &[u8; 32],
    size: u64,
    source: &str,
) -> Result<(BootImage, bool)> {
    if let Some(known) = by_sha256(tx, sha256)? {
        return Ok((known, false));
    }
    let epoch: i64 = tx
        .one(
            "UPDATE image_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
            &[],
        )?
        .get("epoch")?;
    let inserted = tx.exec(
        "INSERT INTO boot_images(sha256, epoch, size, source, added_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT(sha256) DO NOTHING",
        params![&sha256[..], epoch, size as i64, source, now_ms()],
    )?;
    let image = by_sha256(tx, sha256)?
        .ok_or_else(|| super::Error::Shape("a boot image vanished as it was ordered".into()))?;
    Ok((image, inserted == 1))
}

/// A node's rollback floor: the image epoch it blessed last, highest
/// first, and the image (`None` if that epoch names no image, which only
/// an edited database has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub epoch: i64,
    pub image: Option<BootImage>,
}

pub fn floor_of(db: &mut dyn Sql, node_id: i64) -> Result<Option<Floor>> {
    let epoch: Option<i64> = match db.row(
        "SELECT rollback_floor FROM nodes WHERE id = $1",
        params![node_id],
    )? {
        Some(r) => r.get("rollback_floor")?,
        None => None,
    };
    let Some(epoch) = epoch else { return Ok(None) };
    Ok(Some(Floor {
        epoch,
        image: by_epoch(db, epoch)?,
    }))
}

/// Why a floor moved, as kept in `floor_changes`.
pub enum Cause<'a> {
    /// The node reported Joined after a boot of this image epoch.
    Blessed,
    /// `ember nodes allow-rollback`, with who ran it.
    Operator(&'a str),
}

/// Sets the node's floor to `to` (`None`: no floor) when `allowed(old)`
/// says so, under the node's row lock, and keeps the change; returns the
/// floor it had when it changed, `None` when it left it.
fn set_floor(
    tx: &mut dyn Sql,
    node_id: i64,
    to: Option<i64>,
    cause: Cause<'_>,
    allowed: impl Fn(Option<i64>) -> bool,
) -> Result<Option<Option<i64>>> {
    // The no-op update takes the row lock on PostgreSQL (SQLite's writer
    // already holds the database): the floor read next cannot change
    // under us, so a raise is a max and the log says what it replaced.
    tx.exec(
        "UPDATE nodes SET rollback_floor = rollback_floor WHERE id = $1",
        params![node_id],
    )?;
    let old: Option<i64> = match tx.row(
        "SELECT rollback_floor FROM nodes WHERE id = $1",
        params![node_id],
    )? {
        Some(r) => r.get("rollback_floor")?,
        None => return Ok(None),
    };
    if old == to || !allowed(old) {
        return Ok(None);
    }
    tx.exec(
        "UPDATE nodes SET rollback_floor = $2 WHERE id = $1",
        params![node_id, to],
    )?;
    let cause = match cause {
        Cause::Blessed => "blessed".to_string(),
        Cause::Operator(who) => format!("allow-rollback by {who}"),
    };
    tx.exec(
        "INSERT INTO floor_changes(node_id, at, old_floor, new_floor, cause) VALUES ($1, $2, $3, $4, $5)",
        params![node_id, now_ms(), old, to, &cause],
    )?;
    Ok(Some(old))
}

/// Raises the node's floor to `epoch` if it is below (a blessing never
/// lowers it); returns the floor it replaced when it rose.
pub fn raise_floor(tx: &mut dyn Sql, node_id: i64, epoch: i64) -> Result<Option<Option<i64>>> {
    set_floor(tx, node_id, Some(epoch), Cause::Blessed, |old| {
        old.is_none_or(|o| o < epoch)
    })
}

/// Lowers the node's floor to `to`, or clears it (`None`); a floor
/// already at or below `to` stays. Returns the floor it replaced.
pub fn lower_floor(
    tx: &mut dyn Sql,
    node_id: i64,
    to: Option<i64>,
    who: &str,
) -> Result<Option<Option<i64>>> {
    set_floor(tx, node_id, to, Cause::Operator(who), |old| {
        match (old, to) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(o), Some(t)) => o > t,
        }
    })
}

/// One change of a node's floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorChange {
    pub at: i64,
    pub old_floor: Option<i64>,
    pub new_floor: Option<i64>,
    pub cause: String,
}

/// A node's floor changes, oldest first.
pub fn floor_changes(db: &mut dyn Sql, node_id: i64) -> Result<Vec<FloorChange>> {
    db.rows(
        "SELECT at, old_floor, new_floor, cause FROM floor_changes WHERE node_id = $1 ORDER BY at, id",
        params![node_id],
    )?
    .iter()
    .map(|r| {
        Ok(FloorChange {
            at: r.get("at")?,
            old_floor: r.get("old_floor")?,
            new_floor: r.get("new_floor")?,
            cause: r.get("cause")?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open;
    use crate::store::tests::scratch;

    #[test]
    fn images_keep_the_epoch_they_were_first_allowed_with() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let (a, new_a) = register(&mut tx, &[0xa; 32], 10, "a.efi").unwrap();
        let (b, new_b) = register(&mut tx, &[0xb; 32], 20, "b.efi").unwrap();
        // Named again (as every `policy set --uki old --uki new` does), an
        // old image stays old.
        let (a2, again) = register(&mut tx, &[0xa; 32], 10, "elsewhere/a.efi").unwrap();
        tx.commit().unwrap();
        assert!(new_a && new_b && !again);
        assert!(a.epoch < b.epoch);
        assert_eq!(a2, a);
        assert_eq!(list(&mut db).unwrap(), [a.clone(), b.clone()]);
        assert_eq!(by_epoch(&mut db, b.epoch).unwrap(), Some(b));
    }

    #[test]
    fn a_floor_only_rises_by_blessing_and_only_the_operator_lowers_it() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n =
            crate::store::nodes::insert(&mut tx, &[1; 32], None, "a", "default", "test").unwrap();
        let (a, _) = register(&mut tx, &[0xa; 32], 10, "a.efi").unwrap();
        let (b, _) = register(&mut tx, &[0xb; 32], 20, "b.efi").unwrap();
        assert_eq!(raise_floor(&mut tx, n.id, a.epoch).unwrap(), Some(None));
        assert_eq!(
            raise_floor(&mut tx, n.id, b.epoch).unwrap(),
            Some(Some(a.epoch))
        );
        // Blessing the older one again changes nothing.
        assert_eq!(raise_floor(&mut tx, n.id, a.epoch).unwrap(), None);
        assert_eq!(raise_floor(&mut tx, n.id, b.epoch).unwrap(), None);
        tx.commit().unwrap();
        let floor = floor_of(&mut db, n.id).unwrap().unwrap();
        assert_eq!((floor.epoch, floor.image), (b.epoch, Some(b.clone())));

        let mut tx = db.transaction().unwrap();
        // "Lowering" to a newer image raises nothing.
        assert_eq!(
            lower_floor(&mut tx, n.id, Some(b.epoch + 5), "t").unwrap(),
            None
        );
        assert_eq!(
            lower_floor(&mut tx, n.id, Some(a.epoch), "uid 0").unwrap(),
            Some(Some(b.epoch))
        );
        assert_eq!(
            lower_floor(&mut tx, n.id, None, "uid 0").unwrap(),
            Some(Some(a.epoch))
        );
        assert_eq!(lower_floor(&mut tx, n.id, None, "uid 0").unwrap(), None);
        tx.commit().unwrap();
        assert_eq!(floor_of(&mut db, n.id).unwrap(), None);
        let changes: Vec<_> = floor_changes(&mut db, n.id)
            .unwrap()
            .into_iter()
            .map(|c| (c.old_floor, c.new_floor, c.cause))
            .collect();
        assert_eq!(
            changes,
            [
                (None, Some(a.epoch), "blessed".to_string()),
                (Some(a.epoch), Some(b.epoch), "blessed".to_string()),
                (
                    Some(b.epoch),
                    Some(a.epoch),
                    "allow-rollback by uid 0".to_string()
                ),
                (Some(a.epoch), None, "allow-rollback by uid 0".to_string()),
            ]
        );
    }
}
