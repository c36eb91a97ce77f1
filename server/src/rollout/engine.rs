//! The rollout engine over the store: starting a rollout (the server
//! cuts the group into waves), one tick (judge the nodes in flight, then
//! take the current wave's next step from [`plan::next_step`]), the
//! operator's pause, resume and abort, and which iPXE script a node's
//! next network boot gets. Every call runs in the caller's transaction;
//! `now` is passed in, so tests run a rollout on their own clock.

use std::fmt;

use super::plan::{self, Limits, NodeState, RolloutState, Step, Target, Verdict, WaveCounts};
use super::window;
use crate::rollback::short;
use crate::store::rollouts::{self, Rollout, RolloutNode};
use crate::store::{self, images, nodes, Sql};

/// Why a rollout command was refused; each cause its own variant.
#[derive(Debug)]
pub enum Error {
    Store(store::Error),
    /// The group already has a rollout that is not done or aborted.
    GroupBusy {
        group: String,
        id: i64,
    },
    /// The group has no nodes (or does not exist).
    EmptyGroup(String),
    /// A UKI has no place in the image order.
    NotOrdered {
        what: &'static str,
        sha256: [u8; 32],
    },
    /// The target is not newer than the UKI the group runs.
    NotNewer {
        target: i64,
        previous: i64,
    },
    /// A maintenance window does not parse.
    BadWindow(String),
    /// A limit is out of range.
    BadLimit(String),
    /// The group has no rollout to act on.
    NoRollout(String),
    /// The command does not apply in the rollout's state.
    WrongState {
        id: i64,
        state: RolloutState,
        command: &'static str,
        hint: &'static str,
    },
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Store(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "{e}"),
            Error::GroupBusy { group, id } => write!(
                f,
                "group {group:?} already has rollout {id} open: `ember rollout status --group {group}`; abort it first (`ember rollout abort --group {group} [--revert]`)"
            ),
            Error::EmptyGroup(g) => write!(f, "group {g:?} has no nodes to roll out to"),
            Error::NotOrdered { what, sha256 } => write!(
                f,
                "the {what} UKI {} has no image epoch: allow it with `ember policy set --uki` first (that orders it)",
                short(sha256)
            ),
            Error::NotNewer { target, previous } => write!(
                f,
                "the target UKI (image epoch {target}) is not newer than the one the group runs (image epoch {previous}): a rollout only moves forward"
            ),
            Error::BadWindow(e) => write!(f, "--window: {e}"),
            Error::BadLimit(e) => f.write_str(e),
            Error::NoRollout(g) => write!(f, "group {g:?} has no rollout"),
            Error::WrongState { id, state, command, hint } => write!(
                f,
                "rollout {id} is {}: `{command}` does not apply ({hint})",
                state.as_str()
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// What `ember rollout start` asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub group: String,
    pub target: [u8; 32],
    pub target_script: [u8; 32],
    pub previous: [u8; 32],
    pub previous_script: [u8; 32],
    pub canary: u32,
    pub wave_size: plan::WaveSize,
    pub max_in_flight: u32,
    pub failure_budget: u32,
    pub soak_ms: i64,
    pub timeout_ms: i64,
    pub auto_revert: bool,
    pub max_rebooting: u32,
    /// One window per entry.
    pub windows: Vec<String>,
    pub by: String,
}

/// Starts a rollout: checks the two UKIs are ordered and the target is
/// the newer, then cuts the group into waves. The server chooses who goes
/// first: nodes in name order, the first `canary` of them the canaries.
/// Returns the rollout and its wave sizes.
pub fn start(tx: &mut dyn Sql, q: &Request, now: i64) -> Result<(Rollout, Vec<u32>)> {
    if q.max_in_flight == 0 || q.max_rebooting == 0 {
        return Err(Error::BadLimit(
            "--max-in-flight and --max-rebooting must be at least 1".into(),
        ));
    }
    if q.timeout_ms <= 0 || q.soak_ms < 0 {
        return Err(Error::BadLimit(
            "--timeout must be above 0 and --soak not negative".into(),
        ));
    }
    for w in &q.windows {
        window::Window::parse(w).map_err(Error::BadWindow)?;
    }
    let epoch = |tx: &mut dyn Sql, what, sha256: &[u8; 32]| -> Result<i64> {
        images::by_sha256(tx, sha256)?
            .map(|i| i.epoch)
            .ok_or(Error::NotOrdered {
                what,
                sha256: *sha256,
            })
    };
    let target = epoch(tx, "target", &q.target)?;
    let previous = epoch(tx, "previous (--from)", &q.previous)?;
    if target <= previous {
        return Err(Error::NotNewer { target, previous });
    }
    if let Some(open) = rollouts::latest_of_group(tx, &q.group)?.filter(|r| r.state.is_open()) {
        return Err(Error::GroupBusy {
            group: q.group.clone(),
            id: open.id,
        });
    }
    let members = nodes::of_group(tx, Some(&q.group))?;
    if members.is_empty() {
        return Err(Error::EmptyGroup(q.group.clone()));
    }
    let sizes = plan::wave_sizes(members.len() as u32, q.canary, q.wave_size);
    let mut r = Rollout {
        id: 0,
        group: q.group.clone(),
        target: q.target,
        target_script: q.target_script,
        previous: q.previous,
        previous_script: q.previous_script,
        canary: q.canary.min(members.len() as u32),
        wave_size: q.wave_size,
        max_in_flight: q.max_in_flight,
        failure_budget: q.failure_budget,
        soak_ms: q.soak_ms,
        timeout_ms: q.timeout_ms,
        auto_revert: q.auto_revert,
        max_rebooting: q.max_rebooting,
        windows: q.windows.join("\n"),
        state: RolloutState::Running,
        wave: 0,
        soak_until: None,
        reason: String::new(),
        started_at: now,
        started_by: q.by.clone(),
        updated_at: now,
    };
    r.id = rollouts::insert(tx, &r)?;
    let mut members = members.into_iter();
    for (wave, size) in sizes.iter().enumerate() {
        for n in members.by_ref().take(*size as usize) {
            rollouts::add_node(tx, r.id, n.id, wave as u32)?;
        }
    }
    rollouts::event(
        tx,
        r.id,
        now,
        &format!(
            "started by {}: group {} ({} nodes) from UKI {} (image epoch {previous}) to {} (image epoch {target}); waves {:?}{}",
            q.by,
            q.group,
            sizes.iter().sum::<u32>(),
            short(&q.previous),
            short(&q.target),
            sizes,
            if r.canary > 0 { " (wave 0: canaries)" } else { "" }
        ),
    )?;
    Ok((r, sizes))
}

fn names(nodes: &[&RolloutNode]) -> String {
    const SHOWN: usize = 8;
    if nodes.is_empty() {
        return "none".into();
    }
    let mut s: Vec<&str> = nodes.iter().take(SHOWN).map(|n| n.name.as_str()).collect();
    let more = nodes.len().saturating_sub(SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    s.sort_unstable();
    format!("{}{more}", s.join(", "))
}

/// Runs one tick over every open rollout, each in its own transaction
/// under its row lock; returns the timeline lines it added (for the log).
pub fn tick_all(db: &mut store::Db, now: i64) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for open in rollouts::open(db)? {
        let mut tx = db.transaction()?;
        let Some(r) = rollouts::lock(&mut tx, open.id)? else {
            continue;
        };
        if !r.state.is_open() {
            continue;
        }
        let added = tick(&mut tx, r, now)?;
        tx.commit()?;
        lines.extend(added);
    }
    Ok(lines)
}

/// One rollout's tick, in the caller's transaction (holding its lock).
pub fn tick(tx: &mut dyn Sql, mut r: Rollout, now: i64) -> Result<Vec<String>> {
    let mut log = Timeline {
        id: r.id,
        lines: Vec::new(),
    };
    let target = Target {
        sha256: r.target,
        epoch: images::by_sha256(tx, &r.target)?
            .map(|i| i.epoch)
            .ok_or(Error::NotOrdered {
                what: "target",
                sha256: r.target,
            })?,
    };
    // Nodes in flight are judged whatever the rollout's state: a paused
    // or halted rollout still shows how its last boots went.
    let mut nodes = rollouts::nodes(tx, r.id)?;
    for n in nodes.iter_mut().filter(|n| n.state == NodeState::Handed) {
        let since = n.since_report.unwrap_or(0);
        let e = rollouts::evidence(tx, n.node_id, since)?;
        let verdict = plan::judge(&e, &target, n.handed_at.unwrap_or(now), now, r.timeout_ms);
        let (state, reason) = match verdict {
            Verdict::Pending => continue,
            Verdict::Upgraded => (NodeState::Upgraded, String::new()),
            Verdict::Failed(why) => (NodeState::Failed, why),
        };
        rollouts::set_node(tx, r.id, n.node_id, state, &reason, now)?;
        rollouts::release_lock(tx, n.node_id)?;
        n.state = state;
        n.reason = reason;
        if state == NodeState::Failed {
            log.add(
                tx,
                now,
                format!("wave {}: {} FAILED: {}", n.wave, n.name, n.reason),
            )?;
        }
    }
    if r.state != RolloutState::Running {
        return Ok(log.lines);
    }
    let last_wave = nodes.iter().map(|n| n.wave).max().unwrap_or(0);
    let mut counts = WaveCounts::default();
    for n in nodes.iter().filter(|n| n.wave == r.wave) {
        counts.add(n.state);
    }
    let windows = window::parse_all(&r.windows).map_err(Error::BadWindow)?;
    let open = window::any_open(&windows, now);
    let limits = Limits {
        max_in_flight: r.max_in_flight,
        failure_budget: r.failure_budget,
        soak_ms: r.soak_ms,
    };
    let was_closed = r.reason.contains("maintenance window closed");
    match plan::next_step(r.wave, last_wave, counts, limits, open, r.soak_until, now) {
        Step::Hand(k) => {
            let chosen: Vec<&RolloutNode> = nodes
                .iter()
                .filter(|n| n.wave == r.wave && n.state == NodeState::Waiting)
                .take(k as usize)
                .collect();
            for n in &chosen {
                rollouts::set_node(tx, r.id, n.node_id, NodeState::Handed, "", now)?;
            }
            if was_closed {
                log.add(tx, now, "maintenance window open: handing out again".into())?;
            }
            log.add(
                tx,
                now,
                format!(
                    "wave {}: handed UKI {} to {} node(s): {}",
                    r.wave,
                    short(&r.target),
                    chosen.len(),
                    names(&chosen)
                ),
            )?;
            r.reason = String::new();
        }
        Step::Wait(why) => {
            if why.contains("maintenance window closed") && !was_closed {
                log.add(
                    tx,
                    now,
                    format!(
                        "{why}: nothing new is handed out until one opens ({})",
                        r.windows.replace('\n', "; ")
                    ),
                )?;
            }
            r.reason = why;
        }
        Step::Soak(until) => {
            log.add(
                tx,
                now,
                format!(
                    "wave {} settled: {} upgraded, {} failed (budget {}); soaking {} s",
                    r.wave,
                    counts.upgraded,
                    counts.failed,
                    r.failure_budget,
                    r.soak_ms / 1000
                ),
            )?;
            r.soak_until = Some(until);
        }
        Step::NextWave => {
            r.wave += 1;
            r.soak_until = None;
            let size = nodes.iter().filter(|n| n.wave == r.wave).count();
            log.add(tx, now, format!("wave {} starts: {size} node(s)", r.wave))?;
        }
        Step::Done => {
            let up = nodes
                .iter()
                .filter(|n| n.state == NodeState::Upgraded)
                .count();
            let failed = nodes
                .iter()
                .filter(|n| n.state == NodeState::Failed)
                .count();
            r.state = RolloutState::Done;
            r.reason = format!("{up} upgraded, {failed} failed within budget");
            log.add(tx, now, format!("done: {}", r.reason))?;
        }
        Step::Halt(why) => {
            let failed: Vec<&RolloutNode> = nodes
                .iter()
                .filter(|n| n.wave == r.wave && n.state == NodeState::Failed)
                .collect();
            r.state = RolloutState::Halted;
            r.reason = format!(
                "{why}: {}",
                failed
                    .iter()
                    .map(|n| format!("{} ({})", n.name, n.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            log.add(tx, now, format!("HALTED: {}", r.reason))?;
            if r.auto_revert {
                let wave = r.wave;
                let lines = revert(tx, &r, &nodes, |n| n.wave == wave, now, "auto-revert")?;
                for l in lines {
                    log.add(tx, now, l)?;
                }
            }
        }
    }
    rollouts::update(tx, &r, now)?;
    Ok(log.lines)
}

/// Lines added to a rollout's timeline during one call.
struct Timeline {
    id: i64,
    lines: Vec<String>,
}

impl Timeline {
    fn add(&mut self, tx: &mut dyn Sql, now: i64, line: String) -> Result<()> {
        rollouts::event(tx, self.id, now, &line)?;
        self.lines.push(format!("rollout {}: {line}", self.id));
        Ok(())
    }
}

/// Hands the old UKI back to the nodes `which` selects that were handed
/// the new one and have not blessed it (in flight or failed); says what
/// it did. Waiting nodes never had the new UKI and keep the old one. Upgraded nodes keep the new
/// UKI: they blessed it, their floor is at its epoch, and the old one
/// would be refused as a rollback.
fn revert(
    tx: &mut dyn Sql,
    r: &Rollout,
    nodes: &[RolloutNode],
    which: impl Fn(&RolloutNode) -> bool,
    now: i64,
    cause: &str,
) -> Result<Vec<String>> {
    let mut back: Vec<&RolloutNode> = Vec::new();
    let mut kept: Vec<&RolloutNode> = Vec::new();
    for n in nodes.iter().filter(|n| which(n)) {
        if n.state.may_become(NodeState::Reverted) {
            let reason = match n.state {
                NodeState::Failed => format!("{cause} after: {}", n.reason),
                _ => cause.to_string(),
            };
            rollouts::set_node(tx, r.id, n.node_id, NodeState::Reverted, &reason, now)?;
            back.push(n);
        } else if n.state == NodeState::Upgraded {
            kept.push(n);
        }
    }
    let mut lines = vec![format!(
        "{cause}: handed the old UKI {} back to {} node(s): {}",
        short(&r.previous),
        back.len(),
        names(&back)
    )];
    if !kept.is_empty() {
        lines.push(format!(
            "{cause}: {} upgraded node(s) keep UKI {} (they blessed it; their rollback floor refuses the old one until `ember nodes allow-rollback`): {}",
            kept.len(),
            short(&r.target),
            names(&kept)
        ));
    }
    Ok(lines)
}

/// The group's newest rollout, which a command acts on.
fn newest(tx: &mut dyn Sql, group: &str) -> Result<Rollout> {
    let r = rollouts::latest_of_group(tx, group)?.ok_or_else(|| Error::NoRollout(group.into()))?;
    rollouts::lock(tx, r.id)?.ok_or_else(|| Error::NoRollout(group.into()))
}

/// `ember rollout pause`: nothing new is handed out.
pub fn pause(tx: &mut dyn Sql, group: &str, by: &str, now: i64) -> Result<String> {
    let mut r = newest(tx, group)?;
    if r.state != RolloutState::Running {
        return Err(Error::WrongState {
            id: r.id,
            state: r.state,
            command: "pause",
            hint: "only a running rollout pauses",
        });
    }
    r.state = RolloutState::Paused;
    r.reason = format!("paused by {by}");
    rollouts::update(tx, &r, now)?;
    rollouts::event(tx, r.id, now, &r.reason)?;
    Ok(format!("rollout {}: {}", r.id, r.reason))
}

/// `ember rollout resume`: a paused rollout runs again. A halted one does
/// not: its failures stand, and handing the next wave out would ignore
/// them; abort it and start again once the cause is fixed.
pub fn resume(tx: &mut dyn Sql, group: &str, by: &str, now: i64) -> Result<String> {
    let mut r = newest(tx, group)?;
    if r.state != RolloutState::Paused {
        return Err(Error::WrongState {
            id: r.id,
            state: r.state,
            command: "resume",
            hint: "only a paused rollout resumes; a halted one is aborted (`ember rollout abort --revert`) and started again once its failures are understood",
        });
    }
    r.state = RolloutState::Running;
    r.reason = String::new();
    rollouts::update(tx, &r, now)?;
    let line = format!("resumed by {by}");
    rollouts::event(tx, r.id, now, &line)?;
    Ok(format!("rollout {}: {line}", r.id))
}

/// `ember rollout abort [--revert]`: ends the rollout at any point. With
/// `revert`, every node handed the new UKI that has not blessed it, and
/// every failed one, is handed the old UKI again. Returns what it did.
pub fn abort(
    tx: &mut dyn Sql,
    group: &str,
    revert_nodes: bool,
    by: &str,
    now: i64,
) -> Result<Vec<String>> {
    let mut r = newest(tx, group)?;
    if !r.state.is_open() {
        return Err(Error::WrongState {
            id: r.id,
            state: r.state,
            command: "abort",
            hint: "it already ended",
        });
    }
    let was = r.state;
    r.state = RolloutState::Aborted;
    r.reason = format!("aborted by {by} while {}", was.as_str());
    let mut lines = vec![r.reason.clone()];
    let nodes = rollouts::nodes(tx, r.id)?;
    if revert_nodes {
        lines.extend(revert(tx, &r, &nodes, |_| true, now, "abort --revert")?);
    } else {
        let flying: Vec<&RolloutNode> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Handed)
            .collect();
        lines.push(format!(
            "{} node(s) in flight keep UKI {} (no --revert): {}",
            flying.len(),
            short(&r.target),
            names(&flying)
        ));
    }
    rollouts::update(tx, &r, now)?;
    for l in &lines {
        rollouts::event(tx, r.id, now, l)?;
    }
    Ok(lines
        .into_iter()
        .map(|l| format!("rollout {}: {l}", r.id))
        .collect())
}

/// The iPXE script (SHA-256 of a boot artifact) the node's next network
/// boot gets, and why; `None` when it is in no rollout.
pub fn boot_script(db: &mut dyn Sql, node_id: i64) -> store::Result<Option<([u8; 32], String)>> {
    let Some((r, state)) = rollouts::of_node(db, node_id)? else {
        return Ok(None);
    };
    Ok(Some(if state.boots_target() {
        (
            r.target_script,
            format!(
                "rollout {} {}: UKI {}",
                r.id,
                state.as_str(),
                short(&r.target)
            ),
        )
    } else {
        (
            r.previous_script,
            format!(
                "rollout {} {}: UKI {}",
                r.id,
                state.as_str(),
                short(&r.previous)
            ),
        )
    }))
}

/// How many nodes of the group may hold a reboot lock: its open
/// rollout's `--max-rebooting`, else one.
pub fn max_rebooting(db: &mut dyn Sql, group: &str) -> store::Result<u32> {
    Ok(rollouts::latest_of_group(db, group)?
        .filter(|r| r.state.is_open())
        .map_or(1, |r| r.max_rebooting))
}

/// Nodes per state of each open rollout (the metrics' gauge).
pub fn counts(db: &mut dyn Sql) -> store::Result<Vec<(i64, [u64; 5])>> {
    let mut out = Vec::new();
    for r in rollouts::open(db)? {
        let mut c = [0u64; 5];
        for n in rollouts::nodes(db, r.id)? {
            let i = NodeState::ALL
                .iter()
                .position(|s| *s == n.state)
                .unwrap_or(0);
            c[i] += 1;
        }
        out.push((r.id, c));
    }
    Ok(out)
}
