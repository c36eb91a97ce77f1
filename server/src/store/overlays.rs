//! Overlay versions (`overlays`), their assignments to nodes and groups
//! with each one's signed manifest (`assignments`), and the server-wide
//! manifest epoch every assignment takes the next of (`manifest_epoch`).

use super::nodes::{ensure_group, Node};
use super::{now_ms, Result, Row, Sql};
use crate::params;

/// An overlay version: its plaintext blob's digest and size.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub version_id: i64,
    pub sha256: [u8; 32],
    pub size: u64,
}

impl Overlay {
    /// The columns [`Overlay::from_row`] reads.
    const COLUMNS: &'static str = "version_id, sha256, size";

    fn from_row(r: &Row) -> Result<Overlay> {
        Ok(Overlay {
            version_id: r.get("version_id")?,
            sha256: r.get("sha256")?,
            size: r.get("size")?,
        })
    }
}

pub fn get(db: &mut dyn Sql, version_id: i64) -> Result<Option<Overlay>> {
    db.row(
        &format!(
            "SELECT {} FROM overlays WHERE version_id = $1",
            Overlay::COLUMNS
        ),
        params![version_id],
    )?
    .map(|r| Overlay::from_row(&r))
    .transpose()
}

/// An overlay version's sealed blob as stored beside it: the blob's
/// digest and size, how it was sealed, and its data key.
#[derive(Debug, Clone)]
pub struct SealedBlob<'a> {
    pub sha256: [u8; 32],
    pub size: u64,
    pub chunk_size: u32,
    pub compression: &'a str,
    pub data_key: [u8; 32],
}

/// Records an added overlay (its plaintext blob and its sealed blob);
/// returns its version id.
pub fn insert(
    tx: &mut dyn Sql,
    sha256: &[u8; 32],
    size: u64,
    source: &str,
    sealed: &SealedBlob<'_>,
) -> Result<i64> {
    tx.one(
        "INSERT INTO overlays(sha256, size, source, created_at, blob_sha256, blob_size, chunk_size, compression, data_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING version_id",
        params![
            &sha256[..],
            size as i64,
            source,
            now_ms(),
            &sealed.sha256[..],
            sealed.size as i64,
            sealed.chunk_size as i64,
            sealed.compression,
            &sealed.data_key[..]
        ],
    )?
    .get("version_id")
}

/// What signing an assignment's manifest needs of an overlay version:
/// its plaintext size and its sealed blob. `None` in the sealed fields for
/// overlays added before sealed blobs.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub plain_size: u64,
    pub blob_sha256: Option<[u8; 32]>,
    pub blob_size: Option<u64>,
    pub chunk_size: Option<u32>,
    pub compression: Option<String>,
    pub data_key: Option<[u8; 32]>,
}

pub fn sealed(db: &mut dyn Sql, version_id: i64) -> Result<Option<Sealed>> {
    db.row(
        "SELECT size, blob_sha256, blob_size, chunk_size, compression, data_key FROM overlays WHERE version_id = $1",
        params![version_id],
    )?
    .map(|r| {
        Ok(Sealed {
            plain_size: r.get("size")?,
            blob_sha256: r.get("blob_sha256")?,
            blob_size: r.get("blob_size")?,
            chunk_size: r.get("chunk_size")?,
            compression: r.get("compression")?,
            data_key: r.get("data_key")?,
        })
    })
    .transpose()
}

/// Takes the next manifest epoch. The counter's row lock orders replicas'
/// and admin commands' assignments: each gets its own epoch, on SQLite
/// and PostgreSQL alike.
pub fn next_manifest_epoch(tx: &mut dyn Sql) -> Result<i64> {
    tx.one(
        "UPDATE manifest_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
        &[],
    )?
    .get("epoch")
}

/// Assigns overlay `version` to `target` (`group:G`, created if missing,
/// or `node:N`) with its signed `manifest` of `epoch`, replacing the
/// target's previous assignment ([`crate::manifest::assign`] signs).
pub fn assign(
    tx: &mut dyn Sql,
    target: &str,
    version: i64,
    epoch: i64,
    manifest: &[u8],
) -> Result<()> {
    if let Some(g) = target.strip_prefix("group:") {
        ensure_group(tx, g)?;
    }
    tx.exec(
        "INSERT INTO assignments(target, version_id, assigned_at, epoch, manifest) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT(target) DO UPDATE SET version_id = excluded.version_id, assigned_at = excluded.assigned_at,
             epoch = excluded.epoch, manifest = excluded.manifest",
        params![target, version, now_ms(), epoch, manifest],
    )?;
    Ok(())
}

/// The signed manifest of `target`'s assignment.
pub fn manifest_of(db: &mut dyn Sql, target: &str) -> Result<Option<Vec<u8>>> {
    match db.row(
        "SELECT manifest FROM assignments WHERE target = $1",
        params![target],
    )? {
        Some(r) => r.get("manifest"),
        None => Ok(None),
    }
}

/// An overlay as `ember overlay list` shows it.
#[derive(Debug, Clone)]
pub struct OverlayListing {
    pub overlay: Overlay,
    pub source: String,
    /// Targets it is assigned to, sorted.
    pub targets: Vec<String>,
}

pub fn list(db: &mut dyn Sql) -> Result<Vec<OverlayListing>> {
    let assignments = db
        .rows(
            "SELECT version_id, target FROM assignments ORDER BY target",
            &[],
        )?
        .iter()
        .map(|a| Ok((a.get::<i64>("version_id")?, a.get::<String>("target")?)))
        .collect::<Result<Vec<_>>>()?;
    db.rows(
        &format!(
            "SELECT {}, source FROM overlays ORDER BY version_id",
            Overlay::COLUMNS
        ),
        &[],
    )?
    .iter()
    .map(|r| {
        let overlay = Overlay::from_row(r)?;
        let targets = assignments
            .iter()
            .filter(|(v, _)| *v == overlay.version_id)
            .map(|(_, t)| t.clone())
            .collect();
        Ok(OverlayListing {
            overlay,
            source: r.get("source")?,
            targets,
        })
    })
    .collect()
}

/// An assignment as Finish needs it: the overlay version, its signed
/// manifest and its data key (`None` for overlays from before sealed blobs).
#[derive(Debug, Clone)]
pub struct Assigned {
    pub version_id: i64,
    pub manifest: Option<Vec<u8>>,
    pub data_key: Option<[u8; 32]>,
}

/// The overlay assigned to the node, else to its group.
pub fn assigned(db: &mut dyn Sql, node: &Node) -> Result<Option<Assigned>> {
    for target in [
        format!("node:{}", node.name),
        format!("group:{}", node.group),
    ] {
        let row = db.row(
            "SELECT o.version_id, a.manifest, o.data_key FROM assignments a JOIN overlays o ON o.version_id = a.version_id WHERE a.target = $1",
            params![&target],
        )?;
        if let Some(r) = row {
            return Ok(Some(Assigned {
                version_id: r.get("version_id")?,
                manifest: r.get("manifest")?,
                data_key: r.get("data_key")?,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open;
    use crate::store::tests::scratch;

    #[test]
    fn overlays_list_with_their_assignments() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let sealed = SealedBlob {
            sha256: [3; 32],
            size: 30,
            chunk_size: 65536,
            compression: "gzip",
            data_key: [4; 32],
        };
        let v1 = insert(&mut tx, &[1; 32], 10, "/a", &sealed).unwrap();
        let v2 = insert(&mut tx, &[2; 32], 20, "/b", &sealed).unwrap();
        assign(&mut tx, "group:g", v1, 1, b"m1").unwrap();
        assign(&mut tx, "group:h", v1, 2, b"m2").unwrap();
        assign(&mut tx, "group:g", v2, 3, b"m3").unwrap();
        tx.commit().unwrap();
        let l = list(&mut db).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].targets, ["group:h"]);
        assert_eq!(l[1].targets, ["group:g"]);
        assert_eq!(l[1].overlay.size, 20);
    }

    #[test]
    fn a_node_gets_its_own_assignment_before_its_groups() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let node = crate::store::nodes::insert(&mut tx, &[1; 32], None, "n", "g", "t").unwrap();
        let blob = SealedBlob {
            sha256: [3; 32],
            size: 30,
            chunk_size: 65536,
            compression: "lz4",
            data_key: [4; 32],
        };
        let v1 = insert(&mut tx, &[1; 32], 10, "/a", &blob).unwrap();
        let v2 = insert(&mut tx, &[2; 32], 20, "/b", &blob).unwrap();
        assert!(assigned(&mut tx, &node).unwrap().is_none());
        let e1 = next_manifest_epoch(&mut tx).unwrap();
        assign(&mut tx, "group:g", v1, e1, b"group").unwrap();
        assert_eq!(assigned(&mut tx, &node).unwrap().unwrap().version_id, v1);
        let e2 = next_manifest_epoch(&mut tx).unwrap();
        assert_eq!(e2, e1 + 1);
        assign(&mut tx, "node:n", v2, e2, b"node").unwrap();
        let a = assigned(&mut tx, &node).unwrap().unwrap();
        assert_eq!(
            (a.version_id, a.manifest, a.data_key),
            (v2, Some(b"node".to_vec()), Some([4; 32]))
        );
        assert_eq!(
            manifest_of(&mut tx, "group:g").unwrap(),
            Some(b"group".to_vec())
        );
        let s = sealed(&mut tx, v2).unwrap().unwrap();
        assert_eq!((s.plain_size, s.chunk_size), (20, Some(65536)));
        assert!(sealed(&mut tx, v2 + 10).unwrap().is_none());
    }
}
