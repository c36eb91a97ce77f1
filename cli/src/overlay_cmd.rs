//! `ember overlay add|assign|list`: publishes configuration overlays.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ember_server::store::{self, hex, Sql};

use crate::state_args::StateArgs;

#[derive(Subcommand)]
pub enum OverlayCmd {
    /// Adds an overlay from a directory (built into a deterministic tar.gz)
    /// or a tar/tar.gz file; with --group or --node also assigns it.
    Add(AddArgs),
    /// Assigns an overlay version to a group or a node.
    Assign(AssignArgs),
    /// Lists overlays and assignments.
    List(StateArgs),
}

#[derive(Args)]
pub struct Target {
    /// Assign to this group.
    #[arg(long, conflicts_with = "node")]
    pub group: Option<String>,
    /// Assign to this node.
    #[arg(long)]
    pub node: Option<String>,
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Directory, tar or tar.gz.
    pub source: PathBuf,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct AssignArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Overlay version id (from `ember overlay add` or `list`).
    pub version: i64,
    #[command(flatten)]
    pub target: Target,
}

/// Resolves the assignment target, checking that it exists.
fn target_key(db: &mut dyn Sql, t: &Target) -> Result<Option<String>> {
    match (&t.group, &t.node) {
        (Some(g), None) => {
            crate::enroll_cmd::check_group(g)?;
            Ok(Some(format!("group:{g}")))
        }
        (None, Some(n)) => {
            if store::node_by_name(db, n)?.is_none() {
                bail!("no node named {n:?} (enroll it first)");
            }
            Ok(Some(format!("node:{n}")))
        }
        (None, None) => Ok(None),
        (Some(_), Some(_)) => bail!("give --group or --node, not both"),
    }
}

pub fn run(cmd: OverlayCmd) -> Result<()> {
    match cmd {
        OverlayCmd::Add(a) => {
            let state = a.state.dir();
            let mut db = a.state.open()?;
            let target = target_key(&mut db, &a.target)?;
            let source = std::fs::canonicalize(&a.source)
                .with_context(|| format!("overlay source {}", a.source.display()))?;
            let blob = ember_server::overlay::store_overlay(&state, &source)?;
            let mut tx = db.transaction()?;
            let version = store::insert_overlay(
                &mut tx,
                &blob.sha256,
                blob.size,
                &source.display().to_string(),
            )?;
            if let Some(t) = &target {
                store::assign(&mut tx, t, version)?;
            }
            tx.commit()?;
            println!(
                "overlay {version}: {} bytes, sha256 {}",
                blob.size,
                hex(&blob.sha256)
            );
            if let Some(t) = target {
                println!("assigned overlay {version} to {t}");
            }
            Ok(())
        }
        OverlayCmd::Assign(a) => {
            let mut db = a.state.open()?;
            let Some(target) = target_key(&mut db, &a.target)? else {
                bail!("give --group or --node")
            };
            if store::overlay(&mut db, a.version)?.is_none() {
                bail!("no overlay version {}", a.version);
            }
            let mut tx = db.transaction()?;
            store::assign(&mut tx, &target, a.version)?;
            tx.commit()?;
            println!("assigned overlay {} to {target}", a.version);
            Ok(())
        }
        OverlayCmd::List(s) => {
            let overlays = store::list_overlays(&mut s.open()?)?;
            println!(
                "{:<8} {:>10}  {:<16}  {:<30} ASSIGNED",
                "VERSION", "SIZE", "SHA256", "SOURCE"
            );
            for o in overlays {
                println!(
                    "{:<8} {:>10}  {:<16}  {:<30} {}",
                    o.overlay.version_id,
                    o.overlay.size,
                    hex(&o.overlay.sha256[..8]),
                    o.source,
                    o.targets.join(" ")
                );
            }
            Ok(())
        }
    }
}
