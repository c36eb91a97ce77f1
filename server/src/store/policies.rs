//! PCR policies by scope (`default`, `group:G`, `node:N`): `pcr_policies`
//! with the values each allows (`pcr_allowed`) and the extends that make
//! them (`pcr_events`).

use ember_tpm::eventlog::Expected;

use super::{now_ms, Result, Row, Sql};
use crate::params;

/// A PCR policy as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub scope: String,
    pub hash_alg: u16,
    pub mask: u32,
    pub record: bool,
    /// Allowed (pcr, value) pairs; several values per PCR are allowed.
    pub allowed: Vec<(u8, Vec<u8>)>,
    /// The extends that make allowed values (from `policy set --uki`).
    pub events: Vec<AllowedEvents>,
    /// A node must send its firmware event log; without one it is refused
    /// rather than judged by PCR values alone.
    pub require_log: bool,
}

/// The extends, in order, that leave `pcr` at the allowed `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedEvents {
    pub pcr: u8,
    pub value: Vec<u8>,
    pub events: Vec<Expected>,
}

/// The lab's policy when none is set and `ember serve
/// --lab-record-first-boot` is on: record PCRs 0-7 on the first boot.
/// Without that flag a node with no policy is refused.
pub fn lab_record() -> Policy {
    Policy {
        scope: "default (lab: record first boot)".into(),
        hash_alg: ember_proto::msg::ALG_SHA256,
        mask: 0xFF,
        record: true,
        allowed: vec![],
        events: vec![],
        require_log: false,
    }
}

/// A `pcr_policies` row.
struct PolicyRow {
    hash_alg: u16,
    mask: u32,
    mode: String,
    event_log: String,
}

impl PolicyRow {
    fn from_row(r: &Row) -> Result<PolicyRow> {
        Ok(PolicyRow {
            hash_alg: r.get("hash_alg")?,
            mask: r.get("mask")?,
            mode: r.get("mode")?,
            event_log: r.get("event_log")?,
        })
    }
}

/// A `pcr_events` row: one extend of the events that make `value`.
struct EventRow {
    pcr: u8,
    value: Vec<u8>,
    event: Expected,
}

impl EventRow {
    fn from_row(r: &Row) -> Result<EventRow> {
        Ok(EventRow {
            pcr: r.get("pcr")?,
            value: r.get("value")?,
            event: Expected {
                label: r.get("label")?,
                digest: r.get("digest")?,
            },
        })
    }
}

/// The policy of one scope, `None` when it has none.
pub fn get(db: &mut dyn Sql, scope: &str) -> Result<Option<Policy>> {
    let Some(row) = db.row(
        "SELECT hash_alg, mask, mode, event_log FROM pcr_policies WHERE scope = $1",
        params![scope],
    )?
    else {
        return Ok(None);
    };
    let row = PolicyRow::from_row(&row)?;
    let allowed = db
        .rows(
            "SELECT pcr, value FROM pcr_allowed WHERE scope = $1 ORDER BY pcr, value",
            params![scope],
        )?
        .iter()
        .map(|r| Ok((r.get::<u8>("pcr")?, r.get::<Vec<u8>>("value")?)))
        .collect::<Result<Vec<_>>>()?;
    let mut events: Vec<AllowedEvents> = Vec::new();
    for r in db.rows(
        "SELECT pcr, value, label, digest FROM pcr_events WHERE scope = $1 ORDER BY pcr, value, seq",
        params![scope],
    )? {
        let EventRow { pcr, value, event } = EventRow::from_row(&r)?;
        match events.last_mut() {
            Some(a) if a.pcr == pcr && a.value == value => a.events.push(event),
            _ => events.push(AllowedEvents {
                pcr,
                value,
                events: vec![event],
            }),
        }
    }
    Ok(Some(Policy {
        scope: scope.into(),
        hash_alg: row.hash_alg,
        mask: row.mask,
        record: row.mode == "record",
        allowed,
        events,
        require_log: row.event_log == "required",
    }))
}

pub fn put(tx: &mut dyn Sql, p: &Policy) -> Result<()> {
    // An upsert, not delete-then-insert: replicas recording the same
    // node's first boot at once wait on the row instead of colliding.
    tx.exec(
        "INSERT INTO pcr_policies(scope, hash_alg, mask, mode, updated_at, event_log) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT(scope) DO UPDATE SET hash_alg = excluded.hash_alg, mask = excluded.mask,
             mode = excluded.mode, updated_at = excluded.updated_at, event_log = excluded.event_log",
        params![
            &p.scope,
            p.hash_alg as i64,
            p.mask as i64,
            if p.record { "record" } else { "values" },
            now_ms(),
            if p.require_log { "required" } else { "optional" }
        ],
    )?;
    // Setting a scope again replaces its allowed values and their events.
    tx.exec(
        "DELETE FROM pcr_allowed WHERE scope = $1",
        params![&p.scope],
    )?;
    tx.exec("DELETE FROM pcr_events WHERE scope = $1", params![&p.scope])?;
    for a in &p.events {
        for (seq, e) in a.events.iter().enumerate() {
            tx.exec(
                "INSERT INTO pcr_events(scope, pcr, value, seq, label, digest) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT(scope, pcr, value, seq) DO UPDATE SET label = excluded.label, digest = excluded.digest",
                params![&p.scope, a.pcr as i64, &a.value, seq as i64, &e.label, &e.digest],
            )?;
        }
    }
    for (pcr, value) in &p.allowed {
        tx.exec(
            "INSERT INTO pcr_allowed(scope, pcr, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            params![&p.scope, *pcr as i64, value],
        )?;
    }
    Ok(())
}

/// Every scope that has a policy, sorted.
pub fn scopes(db: &mut dyn Sql) -> Result<Vec<String>> {
    db.rows("SELECT scope FROM pcr_policies ORDER BY scope", &[])?
        .iter()
        .map(|r| r.get("scope"))
        .collect()
}

/// The policy that applies to a node: its own, its group's, the default;
/// `None` when none is set.
pub fn effective(db: &mut dyn Sql, node_name: &str, group: &str) -> Result<Option<Policy>> {
    for scope in [
        format!("node:{node_name}"),
        format!("group:{group}"),
        "default".to_string(),
    ] {
        if let Some(p) = get(db, &scope)? {
            return Ok(Some(p));
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
    fn node_policy_overrides_group_and_default() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        assert_eq!(effective(&mut db, "n", "g").unwrap(), None);
        let mut tx = db.transaction().unwrap();
        let g = Policy {
            scope: "group:g".into(),
            hash_alg: 11,
            mask: 0x81,
            record: false,
            allowed: vec![(0, vec![0; 32])],
            events: vec![AllowedEvents {
                pcr: 0,
                value: vec![0; 32],
                events: vec![
                    Expected {
                        label: ".linux".into(),
                        digest: vec![1; 32],
                    },
                    Expected {
                        label: ".initrd".into(),
                        digest: vec![2; 32],
                    },
                ],
            }],
            require_log: true,
        };
        put(&mut tx, &g).unwrap();
        tx.commit().unwrap();
        assert_eq!(effective(&mut db, "n", "g").unwrap(), Some(g.clone()));
        let mut tx = db.transaction().unwrap();
        let n = Policy {
            scope: "node:n".into(),
            hash_alg: 11,
            mask: 0x1,
            record: true,
            allowed: vec![],
            events: vec![],
            require_log: false,
        };
        put(&mut tx, &n).unwrap();
        tx.commit().unwrap();
        assert_eq!(effective(&mut db, "n", "g").unwrap(), Some(n));
        assert_eq!(scopes(&mut db).unwrap(), ["group:g", "node:n"]);
        // Setting a scope again replaces its allowed values and events,
        // not adds to them.
        let mut tx = db.transaction().unwrap();
        let g2 = Policy {
            allowed: vec![(7, vec![1; 32])],
            events: vec![],
            ..g
        };
        put(&mut tx, &g2).unwrap();
        tx.commit().unwrap();
        assert_eq!(get(&mut db, "group:g").unwrap(), Some(g2));
    }
}
