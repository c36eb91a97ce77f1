//! Rollback floors, as the protocol applies them. A node that blessed a
//! UKI (reported Joined after a boot the server identified as that UKI)
//! is refused at Finish, before any overlay or key is released, when it
//! boots one older in the image order ([`crate::store::images`]), even
//! one its PCR policy still allows: a genuine, signed, older image is
//! exactly what an attacker with the node's disk or its network boot
//! brings back. The TPM's rollback counter does the same for the node's
//! own last-known-good slots; this is the server's half.
//!
//! The floor only moves on what the server itself saw: the UKI it
//! identified at Finish from the quote (PCR 11 and the firmware's PCR 4
//! extend), kept in the session; a Report authenticated by that
//! session's credential raises it. Nothing the node claims moves it.

use ember_proto::msg::ErrorCode;

use crate::refusal::Refusal;
use crate::store::images::{self, BootImage, Floor};
use crate::store::reports::{Explained, Explanation};
use crate::store::{self, hex, Node, Sql};
use crate::uki::Uki;

/// The first 16 hex digits of an image's SHA-256: what messages show and
/// `ember nodes allow-rollback --to` takes.
pub fn short(sha256: &[u8]) -> String {
    hex(&sha256[..8.min(sha256.len())])
}

fn floor_text(f: &Floor) -> String {
    match &f.image {
        Some(i) => format!("image epoch {} ({})", f.epoch, short(&i.sha256)),
        None => format!("image epoch {} (an image no longer known)", f.epoch),
    }
}

/// Judges this boot's UKI (`booted`, as Finish identified it) against the
/// node's floor. Returns the UKI's place in the image order (`None` when
/// it has none) when the node may proceed.
pub fn check(
    db: &mut dyn Sql,
    node: &Node,
    booted: Option<&Uki>,
) -> Result<Option<BootImage>, Refusal> {
    let ordered = match booted {
        Some(u) => images::by_sha256(db, &u.sha256)?,
        None => None,
    };
    let Some(floor) = images::floor_of(db, node.id)? else {
        return Ok(ordered);
    };
    let name = &node.name;
    let who = crate::measured::shell_word(name);
    let (received, fix) = match (booted, &ordered) {
        (Some(u), Some(image)) => (
            format!("image epoch {} ({})", image.epoch, short(&u.sha256)),
            format!(
                "ember nodes allow-rollback --node {who} --to {}",
                short(&u.sha256)
            ),
        ),
        (Some(u), None) => (
            format!("no image epoch ({})", short(&u.sha256)),
            format!("ember nodes allow-rollback --node {who}"),
        ),
        (None, _) => (
            "a UKI the server does not know".into(),
            format!("ember nodes allow-rollback --node {who}"),
        ),
    };
    let explanation = Explanation {
        items: vec![Explained {
            pcr: None,
            what: "UKI image epoch against the rollback floor".into(),
            expected: format!("{} or newer", floor_text(&floor)),
            received,
        }],
        fix: Some(fix),
    };
    let detail = match (booted, ordered) {
        (Some(_), Some(image)) if image.epoch >= floor.epoch => return Ok(Some(image)),
        (Some(u), Some(image)) => format!(
                "this boot's UKI {} (image epoch {}) is older than node {name}'s rollback floor, {}, which it blessed: refused as a rollback; `ember nodes allow-rollback --node {name} --to {}` lowers the floor on purpose",
                short(&u.sha256),
                image.epoch,
                floor_text(&floor),
            short(&u.sha256),
        ),
        (Some(u), None) => format!(
                "this boot's UKI {} has no image epoch (it was not allowed by `ember policy set --uki` since rollback floors), so it cannot be ordered against node {name}'s rollback floor, {}: refused; `ember policy set --uki` orders it (as the newest), `ember nodes allow-rollback --node {name}` clears the floor",
                short(&u.sha256),
            floor_text(&floor),
        ),
        (None, _) => format!(
                "this boot's UKI is none the server knows (no stored UKI has its PCR 11, several do and no quoted PCR 4 tells them apart, or the policy quotes no PCR 11), so it cannot be ordered against node {name}'s rollback floor, {}: refused; `ember nodes allow-rollback --node {name}` clears the floor",
            floor_text(&floor),
        ),
    };
    // The node's log says the same as the server's: image hashes and
    // epochs are no secret, and its operator needs the command.
    let reason = detail.clone();
    Err(Refusal::new(ErrorCode::BootImageRollback, detail)
        .because(reason)
        .explained(explanation))
}

/// After a Joined report on `session`'s credential: raises the node's
/// floor to the image epoch of the UKI Finish identified for that session
/// (never lowers it). Returns the new floor when it rose, for the log.
pub fn bless(tx: &mut dyn Sql, node: &Node, session: &[u8; 16]) -> store::Result<Option<String>> {
    let Some(image) = images::of_session(tx, session)? else {
        return Ok(None);
    };
    Ok(images::raise_floor(tx, node.id, image.epoch)?.map(|old| {
        format!(
            "rollback-floor=image epoch {} ({}) was {}",
            image.epoch,
            short(&image.sha256),
            old.map_or("none".to_string(), |o| format!("image epoch {o}"))
        )
    }))
}

/// Lowers (or, with `to` None, clears) the floors of `nodes` on an
/// operator's word: what `ember nodes allow-rollback` and the console's
/// "allow rollback" button both run, in the caller's transaction. `who`
/// goes into the floor log. Returns one line per node saying what changed.
pub fn allow(
    tx: &mut dyn Sql,
    nodes: &[Node],
    to: Option<&BootImage>,
    who: &str,
) -> Result<Vec<String>, store::Error> {
    let target = match to {
        Some(i) => format!("image epoch {} ({})", i.epoch, short(&i.sha256)),
        None => "none".to_string(),
    };
    let mut lines = Vec::new();
    for n in nodes {
        let line = match images::lower_floor(tx, n.id, to.map(|i| i.epoch), who)? {
            Some(old) => format!(
                "{}: rollback floor lowered from {} to {target}",
                n.name,
                old.map_or("none".to_string(), |e| format!("image epoch {e}"))
            ),
            None => format!(
                "{}: rollback floor {} unchanged (already at or below {target})",
                n.name,
                images::floor_of(tx, n.id)?
                    .map_or("none".to_string(), |f| format!("image epoch {}", f.epoch))
            ),
        };
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{images, insert_node, open, StateDir};

    fn uki(sha: u8) -> Uki {
        Uki {
            sha256: [sha; 32],
            size: 1,
            pcr11: [0; 32],
            authenticode: [0; 32],
            pcr4_from_esp: vec![],
        }
    }

    #[test]
    fn a_node_is_refused_below_its_floor_and_passes_at_or_above_it() {
        let dir = std::env::temp_dir().join(format!("ember-rollback-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut db = open(&StateDir::new(&dir), None).unwrap();
        let mut tx = db.transaction().unwrap();
        let node = insert_node(&mut tx, &[1; 32], None, "node-a", "default", "t").unwrap();
        let (a, _) = images::register(&mut tx, &[0xaa; 32], 1, "a.efi").unwrap();
        let (b, _) = images::register(&mut tx, &[0xbb; 32], 1, "b.efi").unwrap();
        tx.commit().unwrap();

        // No floor yet: anything the policy allowed passes, with its order.
        assert_eq!(
            check(&mut db, &node, Some(&uki(0xaa))).unwrap(),
            Some(a.clone())
        );
        assert_eq!(check(&mut db, &node, Some(&uki(0xcc))).unwrap(), None);
        assert_eq!(check(&mut db, &node, None).unwrap(), None);

        let mut tx = db.transaction().unwrap();
        images::raise_floor(&mut tx, node.id, b.epoch).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            check(&mut db, &node, Some(&uki(0xbb))).unwrap(),
            Some(b.clone())
        );
        let older = check(&mut db, &node, Some(&uki(0xaa))).unwrap_err();
        assert_eq!(older.code, ErrorCode::BootImageRollback);
        for said in [&older.detail, &older.reason.to_string()] {
            assert!(
                said.contains("this boot's UKI aaaaaaaaaaaaaaaa (image epoch 1)"),
                "{said}"
            );
            assert!(
                said.contains("rollback floor, image epoch 2 (bbbbbbbbbbbbbbbb)"),
                "{said}"
            );
            assert!(
                said.contains("`ember nodes allow-rollback --node node-a --to aaaaaaaaaaaaaaaa`"),
                "{said}"
            );
        }
        let e = older.explanation.as_ref().expect("explained");
        assert_eq!(
            (e.items[0].expected.as_str(), e.items[0].received.as_str()),
            (
                "image epoch 2 (bbbbbbbbbbbbbbbb) or newer",
                "image epoch 1 (aaaaaaaaaaaaaaaa)"
            )
        );
        assert_eq!(
            e.fix.as_deref(),
            Some("ember nodes allow-rollback --node node-a --to aaaaaaaaaaaaaaaa")
        );
        // An image with no place in the order, or none the server knows,
        // cannot be shown to be newer: refused as well.
        let unordered = check(&mut db, &node, Some(&uki(0xcc))).unwrap_err();
        assert_eq!(unordered.code, ErrorCode::BootImageRollback);
        assert!(
            unordered.detail.contains("has no image epoch"),
            "{}",
            unordered.detail
        );
        let unknown = check(&mut db, &node, None).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::BootImageRollback);
        assert!(
            unknown.detail.contains("none the server knows"),
            "{}",
            unknown.detail
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
