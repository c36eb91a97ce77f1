//! `ember rollout`: moves a group of nodes to a newer UKI in waves that
//! advance only on attested success (`ember serve` runs them; these
//! commands start, show and steer them in the database, like every admin
//! command). `start` publishes both UKIs and an iPXE script for each as
//! boot artifacts; a node's next network boot chains
//! /v1/boot/node/NAME, which names the one its rollout hands it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use ember_proto::untrusted::Untrusted;
use ember_server::overlay::{store_boot_artifact, store_boot_bytes};
use ember_server::rollback::short;
use ember_server::rollout::engine::{self, Request};
use ember_server::rollout::plan::{NodeState, WaveSize};
use ember_server::store::{self, hex, rollouts};

use crate::artifact_cmd::{ipxe_uki_script, uki_cmdline};
use crate::nodes_cmd::operator;
use crate::state_args::StateArgs;

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Start moving a group to a newer UKI in waves (canaries first).
    Start(StartArgs),
    /// Show a group's newest rollout: waves, each failed node and why, the timeline.
    Status(GroupArgs),
    /// Hand no new node the new UKI until `resume` (nodes in flight are still judged).
    Pause(GroupArgs),
    /// Resume a paused rollout (a halted one is aborted and started again).
    Resume(GroupArgs),
    /// End a rollout at any point; --revert hands the old UKI back to every node not upgraded.
    Abort(AbortArgs),
}

#[derive(Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The group to upgrade.
    #[arg(long)]
    pub group: String,
    /// The new UKI (allowed and ordered by `ember policy set --uki` first).
    #[arg(long)]
    pub uki: PathBuf,
    /// The UKI the group runs now: handed back on a revert.
    #[arg(long)]
    pub from: PathBuf,
    /// Canary nodes: wave 0, alone, before the first wave.
    #[arg(long, default_value_t = 1)]
    pub canary: u32,
    /// Size of each later wave: a count (10) or a percentage of the group (25%).
    #[arg(long, default_value = "25%")]
    pub waves: String,
    /// Nodes handed the new UKI and not yet judged, at most.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: u32,
    /// Failed nodes a wave may have; one more halts the rollout.
    #[arg(long, default_value_t = 0)]
    pub failure_budget: u32,
    /// How long each wave soaks after its last node settled (30s, 10m, 1h).
    #[arg(long, default_value = "10m")]
    pub soak: String,
    /// How long a handed node may take to come back upgraded before it counts as failed.
    #[arg(long, default_value = "30m")]
    pub timeout: String,
    /// A maintenance window: "DAYS HH:MM-HH:MM ZONE" (ZONE optional, default UTC), e.g. "Mon-Fri 09:00-17:00 Europe/Berlin"
    /// (repeatable; new nodes are handed the UKI only while one is open).
    #[arg(long = "window")]
    pub windows: Vec<String>,
    /// Nodes of the group that may hold a reboot lock at once (default: --max-in-flight).
    #[arg(long)]
    pub max_rebooting: Option<u32>,
    /// On a halt, hand the halted wave's nodes that did not upgrade the old UKI again.
    #[arg(long)]
    pub auto_revert: bool,
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long)]
    pub group: String,
}

#[derive(Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long)]
    pub group: String,
    /// Hand the old UKI back to every node handed the new one that has not blessed it.
    #[arg(long)]
    pub revert: bool,
}

/// `30s`, `10m`, `2h`, or plain seconds, in milliseconds.
fn duration_ms(s: &str) -> Result<i64> {
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = n
        .parse()
        .with_context(|| format!("duration {s:?}: use 30s, 10m or 2h"))?;
    let unit = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => bail!("duration {s:?}: use 30s, 10m or 2h"),
    };
    n.checked_mul(unit)
        .with_context(|| format!("duration {s:?} too long"))
}

/// Publishes a UKI and the iPXE script chaining it; returns both SHA-256.
/// The script names the UKI by absolute path: it is served at
/// /v1/boot/node/NAME, where a relative name would not resolve.
fn publish(state: &store::StateDir, uki: &Path) -> Result<([u8; 32], [u8; 32])> {
    let cmdline = uki_cmdline(uki)?;
    let blob = store_boot_artifact(state, uki)?;
    let path = format!("{}/{}", ember_proto::msg::path::BOOT, hex(&blob.sha256));
    let script = store_boot_bytes(state, ipxe_uki_script(&path, &cmdline)?.as_bytes())?;
    Ok((blob.sha256, script.sha256))
}

pub fn run(cmd: RolloutCmd) -> Result<()> {
    match cmd {
        RolloutCmd::Start(a) => start(a),
        RolloutCmd::Status(a) => status(a),
        RolloutCmd::Pause(a) => steer(a.state, |tx| {
            Ok(vec![engine::pause(
                tx,
                &a.group,
                &operator(),
                store::now_ms(),
            )?])
        }),
        RolloutCmd::Resume(a) => steer(a.state, |tx| {
            Ok(vec![engine::resume(
                tx,
                &a.group,
                &operator(),
                store::now_ms(),
            )?])
        }),
        RolloutCmd::Abort(a) => steer(a.state, |tx| {
            Ok(engine::abort(
                tx,
                &a.group,
                a.revert,
                &operator(),
                store::now_ms(),
            )?)
        }),
    }
}

fn steer(
    state: StateArgs,
    f: impl FnOnce(&mut dyn store::Sql) -> Result<Vec<String>>,
) -> Result<()> {
    let mut db = state.open()?;
    let mut tx = db.transaction()?;
    let lines = f(&mut tx)?;
    tx.commit()?;
    for l in lines {
        println!("{}", Untrusted(&l));
    }
    Ok(())
}

fn start(a: StartArgs) -> Result<()> {
    let wave_size = WaveSize::parse(&a.waves).map_err(anyhow::Error::msg)?;
    let dir = a.state.dir();
    let (target, target_script) = publish(&dir, &a.uki)?;
    let (previous, previous_script) = publish(&dir, &a.from)?;
    let q = Request {
        group: a.group.clone(),
        target,
        target_script,
        previous,
        previous_script,
        canary: a.canary,
        wave_size,
        max_in_flight: a.max_in_flight,
        failure_budget: a.failure_budget,
        soak_ms: duration_ms(&a.soak)?,
        timeout_ms: duration_ms(&a.timeout)?,
        auto_revert: a.auto_revert,
        max_rebooting: a.max_rebooting.unwrap_or(a.max_in_flight),
        windows: a.windows.clone(),
        by: operator(),
    };
    let mut db = a.state.open()?;
    let mut tx = db.transaction()?;
    let (r, sizes) = engine::start(&mut tx, &q, store::now_ms())?;
    tx.commit()?;
    println!(
        "rollout {}: group {} from UKI {} to {}, waves {:?}{}",
        r.id,
        r.group,
        short(&previous),
        short(&target),
        sizes,
        if r.canary > 0 {
            " (wave 0: canaries)"
        } else {
            ""
        }
    );
    println!(
        "nodes boot http://SERVER{}/NAME (chain it from their iPXE script); `ember rollout status --group {}` follows it",
        ember_proto::msg::path::BOOT_NODE,
        r.group
    );
    Ok(())
}

fn status(a: GroupArgs) -> Result<()> {
    let mut db = a.state.open()?;
    let Some(r) = rollouts::latest_of_group(&mut db, &a.group)? else {
        bail!("group {:?} has no rollout", a.group);
    };
    let nodes = rollouts::nodes(&mut db, r.id)?;
    println!(
        "rollout {}  group {}  {}  wave {}  UKI {} -> {}",
        r.id,
        r.group,
        r.state.as_str(),
        r.wave,
        short(&r.previous),
        short(&r.target)
    );
    println!(
        "canary {}  waves {}  max in flight {}  failure budget {}  soak {} s  timeout {} s  auto-revert {}  windows {}",
        r.canary,
        r.wave_size,
        r.max_in_flight,
        r.failure_budget,
        r.soak_ms / 1000,
        r.timeout_ms / 1000,
        if r.auto_revert { "on" } else { "off" },
        if r.windows.is_empty() { "always".to_string() } else { r.windows.replace('\n', "; ") }
    );
    if !r.reason.is_empty() {
        println!("why: {}", Untrusted(&r.reason));
    }
    println!();
    println!(
        "{:<6} {:>6} {:>8} {:>7} {:>9} {:>7} {:>9}",
        "WAVE", "NODES", "WAITING", "HANDED", "UPGRADED", "FAILED", "REVERTED"
    );
    let last = nodes.iter().map(|n| n.wave).max().unwrap_or(0);
    for w in 0..=last {
        let c = |s: NodeState| nodes.iter().filter(|n| n.wave == w && n.state == s).count();
        let total = nodes.iter().filter(|n| n.wave == w).count();
        println!(
            "{:<6} {total:>6} {:>8} {:>7} {:>9} {:>7} {:>9}",
            if w == 0 && r.canary > 0 {
                "canary".to_string()
            } else {
                w.to_string()
            },
            c(NodeState::Waiting),
            c(NodeState::Handed),
            c(NodeState::Upgraded),
            c(NodeState::Failed),
            c(NodeState::Reverted)
        );
    }
    let troubled: Vec<_> = nodes
        .iter()
        .filter(|n| {
            matches!(
                n.state,
                NodeState::Failed | NodeState::Reverted | NodeState::Handed
            )
        })
        .collect();
    if !troubled.is_empty() {
        println!();
        for n in troubled {
            println!(
                "{:<24} wave {:<3} {:<9} {}",
                Untrusted(&n.name).to_string(),
                n.wave,
                n.state.as_str(),
                Untrusted(&n.reason)
            );
        }
    }
    let holders = rollouts::lock_holders(&mut db, &r.group)?;
    println!();
    println!(
        "reboot locks: {} of {}{}",
        holders.len(),
        r.max_rebooting,
        if holders.is_empty() {
            String::new()
        } else {
            format!(" ({})", holders.join(", "))
        }
    );
    println!();
    println!("timeline:");
    for (at, text) in rollouts::events(&mut db, r.id)? {
        let s = (at - r.started_at).max(0) / 1000;
        println!(
            "  +{:02}:{:02}:{:02}  {}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            Untrusted(&text)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::duration_ms;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("30s").unwrap(), 30_000);
        assert_eq!(duration_ms("10m").unwrap(), 600_000);
        assert_eq!(duration_ms("2h").unwrap(), 7_200_000);
        assert_eq!(duration_ms("45").unwrap(), 45_000);
        assert_eq!(duration_ms("250ms").unwrap(), 250);
        for bad in ["", "m", "10d", "-5s", "99999999999999999h"] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
    }
}
