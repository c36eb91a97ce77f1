//! What is inside each boot image (`image_sboms`, `image_packages`) and
//! which nodes run a package.
//!
//! `ember policy set --uki` stores a UKI's SPDX SBOM with the packages it
//! names (the host tool reads the SPDX; the server keeps only rows). A
//! node's packages are those of the UKI its last attested boot ran, as
//! Finish identified it from the quote-verified measurements
//! (`boot_reports.boot_image`): nothing a node says about itself enters
//! the answer.

use super::{now_ms, Result, Sql};
use crate::params;

/// One package an image's SBOM names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    /// SPDX `versionInfo`; empty when the SBOM gives none.
    pub version: String,
    /// The package URL (`pkg:deb/debian/containerd@1.6.20~ds1-1?arch=amd64`);
    /// empty when the SBOM gives none.
    pub purl: String,
}

/// Stores `document` (the SPDX JSON bytes) as the SBOM of the ordered
/// image `sha256`, with `packages`, replacing what it had: an image's
/// bytes never change, so a second SBOM for it is the same build's.
pub fn put(
    tx: &mut dyn Sql,
    sha256: &[u8; 32],
    document: &[u8],
    packages: &[Package],
) -> Result<()> {
    tx.exec(
        "DELETE FROM image_packages WHERE sha256 = $1",
        params![&sha256[..]],
    )?;
    tx.exec(
        "DELETE FROM image_sboms WHERE sha256 = $1",
        params![&sha256[..]],
    )?;
    tx.exec(
        "INSERT INTO image_sboms(sha256, document, stored_at) VALUES ($1, $2, $3)",
        params![&sha256[..], document, now_ms()],
    )?;
    for p in packages {
        tx.exec(
            "INSERT INTO image_packages(sha256, name, version, purl) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            params![
                &sha256[..],
                p.name.as_str(),
                p.version.as_str(),
                p.purl.as_str()
            ],
        )?;
    }
    Ok(())
}

/// The SBOM stored for image `sha256`, if any.
pub fn document(db: &mut dyn Sql, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>> {
    db.row(
        "SELECT document FROM image_sboms WHERE sha256 = $1",
        params![&sha256[..]],
    )?
    .map(|r| r.get("document"))
    .transpose()
}

/// The packages of image `sha256`, by name and version; empty when it has
/// no SBOM.
pub fn of_image(db: &mut dyn Sql, sha256: &[u8; 32]) -> Result<Vec<Package>> {
    db.rows(
        "SELECT name, version, purl FROM image_packages WHERE sha256 = $1 ORDER BY name, version, purl",
        params![&sha256[..]],
    )?
    .iter()
    .map(|r| {
        Ok(Package {
            name: r.get("name")?,
            version: r.get("version")?,
            purl: r.get("purl")?,
        })
    })
    .collect()
}

/// The UKI node `node_id`'s last attested boot ran, as Finish identified
/// it (`None`: it never attested, or no UKI was identified).
pub fn last_attested_image(db: &mut dyn Sql, node_id: i64) -> Result<Option<[u8; 32]>> {
    match db.row(
        "SELECT boot_image FROM boot_reports WHERE node_id = $1 AND outcome = 'attested'
         ORDER BY id DESC LIMIT 1",
        params![node_id],
    )? {
        Some(r) => r.get("boot_image"),
        None => Ok(None),
    }
}

/// A node whose last attested boot ran an image containing the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub node: String,
    pub group: String,
    pub version: String,
    /// The UKI the node's last attested boot ran.
    pub image: [u8; 32],
    pub image_epoch: Option<i64>,
    /// When the node first attested with that UKI since it last attested
    /// with another (ms since the epoch).
    pub since: i64,
    /// Its last attestation.
    pub last_attested: i64,
}

/// The answer to "which nodes run package `name` (at `version`)".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageQuery {
    pub running: Vec<Running>,
    /// Nodes whose last attested boot ran a UKI the server has no SBOM of,
    /// or none it could identify (a policy without `--uki`): about these
    /// the answer is "unknown", not "no".
    pub unknown: Vec<String>,
}

/// Every node whose last attested boot ran an image whose SBOM names
/// package `name`, at `version` when given, by node name.
pub fn running(db: &mut dyn Sql, name: &str, version: Option<&str>) -> Result<PackageQuery> {
    // The last attested report of each node; "since" is the first
    // attestation of the same image after the node's last attestation of
    // anything else.
    const LAST: &str = "boot_reports a ON a.id = (SELECT MAX(b.id) FROM boot_reports b
            WHERE b.node_id = n.id AND b.outcome = 'attested')";
    let rows = db.rows(
        &format!(
            "SELECT n.name AS node, n.group_name, p.version, a.boot_image, a.at AS last_at, i.epoch,
                (SELECT MIN(s.at) FROM boot_reports s
                  WHERE s.node_id = n.id AND s.outcome = 'attested' AND s.boot_image = a.boot_image
                    AND s.id > COALESCE((SELECT MAX(o.id) FROM boot_reports o
                          WHERE o.node_id = n.id AND o.outcome = 'attested'
                            AND (o.boot_image IS NULL OR o.boot_image <> a.boot_image)), 0)) AS since
             FROM nodes n JOIN {LAST}
               JOIN image_packages p ON p.sha256 = a.boot_image
               LEFT JOIN boot_images i ON i.sha256 = a.boot_image
             WHERE p.name = $1 AND ($2 = '' OR p.version = $2)
             ORDER BY n.name, p.version"
        ),
        params![name, version.unwrap_or("")],
    )?;
    let mut out = PackageQuery::default();
    for r in &rows {
        let node: String = r.get("node")?;
        // One row per node: an image naming the package at two versions
        // (two copies) lists the first.
        if out.running.last().is_some_and(|l| l.node == node) {
            continue;
        }
        out.running.push(Running {
            node,
            group: r.get("group_name")?,
            version: r.get("version")?,
            image: r.get("boot_image")?,
            image_epoch: r.get("epoch")?,
            since: r.get("since")?,
            last_attested: r.get("last_at")?,
        });
    }
    out.unknown = db
        .rows(
            &format!(
                "SELECT n.name FROM nodes n JOIN {LAST}
                 WHERE a.boot_image IS NULL
                    OR NOT EXISTS (SELECT 1 FROM image_sboms m WHERE m.sha256 = a.boot_image)
                 ORDER BY n.name"
            ),
            &[],
        )?
        .iter()
        .map(|r| r.get("name"))
        .collect::<Result<_>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::scratch;
    use crate::store::{images, open, reports};

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            purl: format!("pkg:deb/debian/{name}@{version}"),
        }
    }

    #[test]
    fn nodes_are_answered_from_the_image_their_last_attestation_ran() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let (old, new, bare) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        for (sha, v) in [(&old, "1.6.20"), (&new, "1.7.2")] {
            images::register(&mut tx, sha, 1, "x.efi").unwrap();
            put(
                &mut tx,
                sha,
                b"{}",
                &[pkg("containerd", v), pkg("runc", "1.1")],
            )
            .unwrap();
        }
        images::register(&mut tx, &bare, 1, "bare.efi").unwrap();
        let node = |tx: &mut dyn Sql, name: &str| {
            let ek = [name.len() as u8; 32];
            crate::store::nodes::insert(tx, &ek, None, name, "default", "test")
                .unwrap()
                .id
        };
        let (a, b, c) = (
            node(&mut tx, "a"),
            node(&mut tx, "bb"),
            node(&mut tx, "ccc"),
        );
        let attest = |tx: &mut dyn Sql, node: i64, image: &[u8; 32]| {
            let r = reports::add(tx, node, reports::Outcome::Attested, None, "").unwrap();
            reports::set_boot_image(tx, r, image).unwrap();
        };
        // a: old, then new twice; bb: new, then old (a rollback); ccc: a
        // UKI without an SBOM.
        attest(&mut tx, a, &old);
        attest(&mut tx, a, &new);
        attest(&mut tx, a, &new);
        attest(&mut tx, b, &new);
        attest(&mut tx, b, &old);
        attest(&mut tx, c, &bare);
        // A refusal after it does not change what a node last ran.
        reports::add(&mut tx, b, reports::Outcome::Failed, None, "refused").unwrap();
        tx.commit().unwrap();

        let q = running(&mut db, "containerd", None).unwrap();
        let names: Vec<(&str, &str)> = q
            .running
            .iter()
            .map(|r| (r.node.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(names, [("a", "1.7.2"), ("bb", "1.6.20")]);
        assert_eq!(q.unknown, ["ccc"]);
        // Since: a's first attestation of the new UKI (its second report).
        let a_reports = reports::of_node(&mut db, a, 10).unwrap();
        let first_new = a_reports.iter().map(|r| r.at).min().unwrap();
        assert!(q.running[0].since >= first_new);
        assert!(q.running[0].since <= q.running[0].last_attested);
        let q = running(&mut db, "containerd", Some("1.6.20")).unwrap();
        assert_eq!(q.running.len(), 1);
        assert_eq!(q.running[0].node, "bb");
        assert_eq!(q.running[0].image, old);
        assert!(running(&mut db, "containerd", Some("1.6"))
            .unwrap()
            .running
            .is_empty());
        assert!(running(&mut db, "nothing", None)
            .unwrap()
            .running
            .is_empty());
        assert_eq!(last_attested_image(&mut db, b).unwrap(), Some(old));
        assert_eq!(last_attested_image(&mut db, c).unwrap(), Some(bare));
        assert_eq!(of_image(&mut db, &old).unwrap().len(), 2);
        assert_eq!(document(&mut db, &old).unwrap().unwrap(), b"{}");
        assert_eq!(document(&mut db, &bare).unwrap(), None);
    }
}
