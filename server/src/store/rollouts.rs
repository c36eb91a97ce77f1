//! Rollouts (`rollouts`, `rollout_nodes`, `rollout_events`) and reboot
//! locks (`reboot_locks`): the rows the rollout engine
//! ([`crate::rollout`]) decides over, and what it reads of a node's boots
//! since it was handed a UKI ([`evidence`]).
//!
//! A node's evidence is every report with an id above the one it had
//! when it was handed the new UKI (`since_report`), not every report
//! after a time: replicas' clocks need not agree for them to judge alike.

use super::{images, Error, Result, Row, Sql};
use crate::params;
use crate::rollout::plan::{Evidence, Failure, NodeState, RolloutState, WaveSize};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub id: i64,
    pub group: String,
    /// The UKI it moves the group to, and the iPXE script chaining it.
    pub target: [u8; 32],
    pub target_script: [u8; 32],
    /// The UKI the group ran, handed back on a revert, and its script.
    pub previous: [u8; 32],
    pub previous_script: [u8; 32],
    pub canary: u32,
    pub wave_size: WaveSize,
    pub max_in_flight: u32,
    pub failure_budget: u32,
    pub soak_ms: i64,
    pub timeout_ms: i64,
    pub auto_revert: bool,
    pub max_rebooting: u32,
    /// Maintenance windows, one per line (see [`crate::rollout::window`]).
    pub windows: String,
    pub state: RolloutState,
    /// The current wave (0: the canaries, when there are any).
    pub wave: u32,
    /// Set once the current wave settled within budget.
    pub soak_until: Option<i64>,
    /// Why it halted, paused or ended.
    pub reason: String,
    pub started_at: i64,
    pub started_by: String,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, group_name, target, target_script, previous, previous_script, canary,
    wave_count, wave_percent, max_in_flight, failure_budget, soak_ms, timeout_ms, auto_revert,
    max_rebooting, windows, state, wave, soak_until, reason, started_at, started_by, updated_at";

fn rollout_row(r: &Row) -> Result<Rollout> {
    let wave_size = match (
        r.get::<Option<u32>>("wave_count")?,
        r.get::<Option<u32>>("wave_percent")?,
    ) {
        (Some(n), None) => WaveSize::Count(n),
        (None, Some(p)) => WaveSize::Percent(p),
        _ => {
            return Err(Error::Shape(
                "rollouts: one of wave_count, wave_percent".into(),
            ))
        }
    };
    let state: String = r.get("state")?;
    Ok(Rollout {
        id: r.get("id")?,
        group: r.get("group_name")?,
        target: r.get("target")?,
        target_script: r.get("target_script")?,
        previous: r.get("previous")?,
        previous_script: r.get("previous_script")?,
        canary: r.get("canary")?,
        wave_size,
        max_in_flight: r.get("max_in_flight")?,
        failure_budget: r.get("failure_budget")?,
        soak_ms: r.get("soak_ms")?,
        timeout_ms: r.get("timeout_ms")?,
        auto_revert: r.get::<i64>("auto_revert")? != 0,
        max_rebooting: r.get("max_rebooting")?,
        windows: r.get("windows")?,
        state: RolloutState::parse(&state)
            .ok_or_else(|| Error::Shape(format!("rollouts.state {state:?}")))?,
        wave: r.get("wave")?,
        soak_until: r.get("soak_until")?,
        reason: r.get("reason")?,
        started_at: r.get("started_at")?,
        started_by: r.get("started_by")?,
        updated_at: r.get("updated_at")?,
    })
}

/// Stores a new rollout (its `id` and `state` are ignored: it starts
/// running at wave 0); returns its id.
pub fn insert(tx: &mut dyn Sql, r: &Rollout) -> Result<i64> {
    let (count, percent) = match r.wave_size {
        WaveSize::Count(n) => (Some(i64::from(n)), None),
        WaveSize::Percent(p) => (None, Some(i64::from(p))),
    };
    tx.one(
        "INSERT INTO rollouts(group_name, target, target_script, previous, previous_script, canary,
            wave_count, wave_percent, max_in_flight, failure_budget, soak_ms, timeout_ms, auto_revert,
            max_rebooting, windows, state, wave, soak_until, reason, started_at, started_by, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'running', 0, NULL, '',
            $16, $17, $16) RETURNING id",
        params![
            &r.group,
            &r.target[..],
            &r.target_script[..],
            &r.previous[..],
            &r.previous_script[..],
            i64::from(r.canary),
            count,
            percent,
            i64::from(r.max_in_flight),
            i64::from(r.failure_budget),
            r.soak_ms,
            r.timeout_ms,
            i64::from(r.auto_revert),
            i64::from(r.max_rebooting),
            &r.windows,
            r.started_at,
            &r.started_by
        ],
    )?
    .get("id")
}

pub fn get(db: &mut dyn Sql, id: i64) -> Result<Option<Rollout>> {
    db.row(
        &format!("SELECT {COLUMNS} FROM rollouts WHERE id = $1"),
        params![id],
    )?
    .map(|r| rollout_row(&r))
    .transpose()
}

/// The group's newest rollout, finished or not.
pub fn latest_of_group(db: &mut dyn Sql, group: &str) -> Result<Option<Rollout>> {
    db.row(
        &format!("SELECT {COLUMNS} FROM rollouts WHERE group_name = $1 ORDER BY id DESC LIMIT 1"),
        params![group],
    )?
    .map(|r| rollout_row(&r))
    .transpose()
}

/// Rollouts not yet done or aborted, oldest first.
pub fn open(db: &mut dyn Sql) -> Result<Vec<Rollout>> {
    db.rows(
        &format!(
            "SELECT {COLUMNS} FROM rollouts WHERE state IN ('running', 'paused', 'halted') ORDER BY id"
        ),
        &[],
    )?
    .iter()
    .map(rollout_row)
    .collect()
}

/// The newest `limit` rollouts, newest first.
pub fn recent(db: &mut dyn Sql, limit: u32) -> Result<Vec<Rollout>> {
    db.rows(
        &format!("SELECT {COLUMNS} FROM rollouts ORDER BY id DESC LIMIT $1"),
        params![i64::from(limit)],
    )?
    .iter()
    .map(rollout_row)
    .collect()
}

/// Takes the rollout's row lock for the transaction (PostgreSQL; SQLite's
/// writer already holds the database) and reads it again under it, so
/// two replicas' ticks decide one after the other, each on what the other
/// wrote.
pub fn lock(tx: &mut dyn Sql, id: i64) -> Result<Option<Rollout>> {
    tx.exec(
        "UPDATE rollouts SET updated_at = updated_at WHERE id = $1",
        params![id],
    )?;
    get(tx, id)
}

/// Sets the state, current wave, soak deadline and reason.
pub fn update(tx: &mut dyn Sql, r: &Rollout, now: i64) -> Result<()> {
    tx.exec(
        "UPDATE rollouts SET state = $2, wave = $3, soak_until = $4, reason = $5, updated_at = $6 WHERE id = $1",
        params![
            r.id,
            r.state.as_str(),
            i64::from(r.wave),
            r.soak_until,
            &r.reason,
            now
        ],
    )?;
    Ok(())
}

/// One node of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutNode {
    pub node_id: i64,
    pub name: String,
    pub wave: u32,
    pub state: NodeState,
    pub handed_at: Option<i64>,
    pub since_report: Option<i64>,
    pub settled_at: Option<i64>,
    /// Why it failed or was reverted.
    pub reason: String,
}

fn node_row(r: &Row) -> Result<RolloutNode> {
    let state: String = r.get("state")?;
    Ok(RolloutNode {
        node_id: r.get("node_id")?,
        name: r.get("name")?,
        wave: r.get("wave")?,
        state: NodeState::parse(&state)
            .ok_or_else(|| Error::Shape(format!("rollout_nodes.state {state:?}")))?,
        handed_at: r.get("handed_at")?,
        since_report: r.get("since_report")?,
        settled_at: r.get("settled_at")?,
        reason: r.get("reason")?,
    })
}

const NODE_COLUMNS: &str =
    "rn.node_id, n.name, rn.wave, rn.state, rn.handed_at, rn.since_report, rn.settled_at, rn.reason";

/// Puts `node_id` into wave `wave` of rollout `id`, waiting.
pub fn add_node(tx: &mut dyn Sql, id: i64, node_id: i64, wave: u32) -> Result<()> {
    tx.exec(
        "INSERT INTO rollout_nodes(rollout_id, node_id, wave, state, reason) VALUES ($1, $2, $3, 'waiting', '')",
        params![id, node_id, i64::from(wave)],
    )?;
    Ok(())
}

/// The rollout's nodes by wave, then name.
pub fn nodes(db: &mut dyn Sql, id: i64) -> Result<Vec<RolloutNode>> {
    db.rows(
        &format!(
            "SELECT {NODE_COLUMNS} FROM rollout_nodes rn JOIN nodes n ON n.id = rn.node_id
             WHERE rn.rollout_id = $1 ORDER BY rn.wave, n.name"
        ),
        params![id],
    )?
    .iter()
    .map(node_row)
    .collect()
}

/// Moves a node to `state`. Handing it records when and the newest report
/// id it had (its evidence starts after it); settling records when.
pub fn set_node(
    tx: &mut dyn Sql,
    id: i64,
    node_id: i64,
    state: NodeState,
    reason: &str,
    now: i64,
) -> Result<()> {
    let reason: String = reason.chars().take(super::reports::MAX_REASON).collect();
    if state == NodeState::Handed {
        let since: i64 = tx
            .one(
                "SELECT COALESCE(MAX(id), 0) AS m FROM boot_reports WHERE node_id = $1",
                params![node_id],
            )?
            .get("m")?;
        tx.exec(
            "UPDATE rollout_nodes SET state = 'handed', handed_at = $3, since_report = $4, reason = $5
             WHERE rollout_id = $1 AND node_id = $2",
            params![id, node_id, now, since, &reason],
        )?;
    } else {
        tx.exec(
            "UPDATE rollout_nodes SET state = $3, settled_at = $4, reason = $5 WHERE rollout_id = $1 AND node_id = $2",
            params![id, node_id, state.as_str(), now, &reason],
        )?;
    }
    Ok(())
}

/// The newest rollout the node is part of, and where it stands in it.
pub fn of_node(db: &mut dyn Sql, node_id: i64) -> Result<Option<(Rollout, NodeState)>> {
    let Some(r) = db.row(
        "SELECT rollout_id, state FROM rollout_nodes WHERE node_id = $1 ORDER BY rollout_id DESC LIMIT 1",
        params![node_id],
    )?
    else {
        return Ok(None);
    };
    let state: String = r.get("state")?;
    let state = NodeState::parse(&state)
        .ok_or_else(|| Error::Shape(format!("rollout_nodes.state {state:?}")))?;
    Ok(get(db, r.get("rollout_id")?)?.map(|ro| (ro, state)))
}

/// What the server saw of a node in its reports after id `since`.
pub fn evidence(db: &mut dyn Sql, node_id: i64, since: i64) -> Result<Evidence> {
    let attested = db
        .row(
            "SELECT id, boot_image FROM boot_reports WHERE node_id = $1 AND id > $2 AND outcome = 'attested'
             ORDER BY id DESC LIMIT 1",
            params![node_id, since],
        )?
        .map(|r| -> Result<(i64, Option<[u8; 32]>)> { Ok((r.get("id")?, r.get("boot_image")?)) })
        .transpose()?;
    let joined_after = match attested {
        Some((id, _)) => db
            .row(
                "SELECT id FROM boot_reports WHERE node_id = $1 AND id > $2 AND outcome = 'joined' LIMIT 1",
                params![node_id, id],
            )?
            .is_some(),
        None => false,
    };
    let failure = match db.row(
        "SELECT id, reason FROM boot_reports WHERE node_id = $1 AND id > $2 AND outcome = 'failed'
         ORDER BY id DESC LIMIT 1",
        params![node_id, since],
    )? {
        Some(r) => {
            let report_id: i64 = r.get("id")?;
            let phase = db
                .row(
                    "SELECT name FROM boot_phases WHERE report_id = $1 AND status = 'failed' ORDER BY seq LIMIT 1",
                    params![report_id],
                )?
                .map(|p| p.get::<String>("name"))
                .transpose()?;
            Some(Failure {
                report_id,
                reason: r.get("reason")?,
                phase,
            })
        }
        None => None,
    };
    Ok(Evidence {
        attested,
        joined_after,
        floor: images::floor_of(db, node_id)?.map(|f| f.epoch),
        failure,
    })
}

/// Keeps one line of the rollout's timeline.
pub fn event(tx: &mut dyn Sql, id: i64, at: i64, text: &str) -> Result<()> {
    tx.exec(
        "INSERT INTO rollout_events(rollout_id, at, text) VALUES ($1, $2, $3)",
        params![id, at, text],
    )?;
    Ok(())
}

/// The rollout's timeline, oldest first.
pub fn events(db: &mut dyn Sql, id: i64) -> Result<Vec<(i64, String)>> {
    db.rows(
        "SELECT at, text FROM rollout_events WHERE rollout_id = $1 ORDER BY id",
        params![id],
    )?
    .iter()
    .map(|r| Ok((r.get("at")?, r.get("text")?)))
    .collect()
}

/// The advisory lock key reboot locks are taken under ("EMBR" "BOOT").
const LOCKS_KEY: i64 = 0x454d_4252_424f_4f54;

/// Takes node `node_id`'s reboot lock in `group` if fewer than `max`
/// nodes of the group hold one (or it holds one already). Serialised
/// over replicas: SQLite's one writer, PostgreSQL's advisory lock.
/// Returns the holders when refused.
pub fn take_lock(
    tx: &mut dyn Sql,
    node_id: i64,
    group: &str,
    max: u32,
    now: i64,
) -> Result<std::result::Result<(), Vec<String>>> {
    if tx.dialect() == super::Dialect::Postgres {
        tx.exec("SELECT pg_advisory_xact_lock($1)", params![LOCKS_KEY])?;
    }
    let holders: Vec<(i64, String)> = tx
        .rows(
            "SELECT l.node_id, n.name FROM reboot_locks l JOIN nodes n ON n.id = l.node_id
             WHERE l.group_name = $1 ORDER BY n.name",
            params![group],
        )?
        .iter()
        .map(|r| Ok((r.get("node_id")?, r.get("name")?)))
        .collect::<Result<_>>()?;
    if holders.iter().any(|(id, _)| *id == node_id) {
        return Ok(Ok(()));
    }
    if holders.len() >= max as usize {
        return Ok(Err(holders.into_iter().map(|(_, n)| n).collect()));
    }
    tx.exec(
        "INSERT INTO reboot_locks(node_id, group_name, taken_at) VALUES ($1, $2, $3)",
        params![node_id, group, now],
    )?;
    Ok(Ok(()))
}

/// Releases the node's reboot lock; false when it held none.
pub fn release_lock(tx: &mut dyn Sql, node_id: i64) -> Result<bool> {
    Ok(tx.exec(
        "DELETE FROM reboot_locks WHERE node_id = $1",
        params![node_id],
    )? > 0)
}

/// The names of the group's nodes holding a reboot lock.
pub fn lock_holders(db: &mut dyn Sql, group: &str) -> Result<Vec<String>> {
    db.rows(
        "SELECT n.name FROM reboot_locks l JOIN nodes n ON n.id = l.node_id
         WHERE l.group_name = $1 ORDER BY n.name",
        params![group],
    )?
    .iter()
    .map(|r| r.get("name"))
    .collect()
}
