//! `ember overlay add|assign|list|key`: publishes configuration overlays.
//! `add` seals each version once into a static blob; `add --group/--node`
//! and `assign` sign its manifest under the next epoch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rusqlite::params;

use ember_server::manifest;
use ember_server::store::{self, hex, now_ms, StateDir};

#[derive(Subcommand)]
pub enum OverlayCmd {
    /// Adds an overlay from a directory (built into a deterministic tar.gz)
    /// or a tar/tar.gz file; with --group or --node also assigns it.
    Add(AddArgs),
    /// Assigns an overlay version to a group or a node.
    Assign(AssignArgs),
    /// Lists overlays and assignments.
    List(StateArg),
    /// Prints the manifest public key (PEM) nodes verify manifests with:
    /// bundle it into initrds as /etc/ember/manifest.pub.
    Key(StateArg),
}

#[derive(Args)]
pub struct StateArg {
    /// State folder of the boot server.
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
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
    pub state: StateArg,
    /// Directory, tar or tar.gz.
    pub source: PathBuf,
    #[command(flatten)]
    pub target: Target,
    /// Plaintext bytes per sealed chunk.
    #[arg(long, default_value_t = ember_proto::sealed::DEFAULT_CHUNK)]
    pub chunk_size: u32,
}

#[derive(Args)]
pub struct AssignArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Overlay version id (from `ember overlay add` or `list`).
    pub version: i64,
    #[command(flatten)]
    pub target: Target,
}

/// Resolves the assignment target, checking that it exists.
fn target_key(conn: &rusqlite::Connection, t: &Target) -> Result<Option<String>> {
    match (&t.group, &t.node) {
        (Some(g), None) => {
            crate::enroll_cmd::check_group(g)?;
            Ok(Some(format!("group:{g}")))
        }
        (None, Some(n)) => {
            if store::node_by_name(conn, n)?.is_none() {
                bail!("no node named {n:?} (enroll it first)");
            }
            Ok(Some(format!("node:{n}")))
        }
        (None, None) => Ok(None),
        (Some(_), Some(_)) => bail!("give --group or --node, not both"),
    }
}

fn assign(tx: &rusqlite::Transaction, state: &StateDir, target: &str, version: i64) -> Result<u64> {
    if let Some(g) = target.strip_prefix("group:") {
        store::ensure_group(tx, g)?;
    }
    let (key, _) = manifest::ensure_signing_key(state)?;
    manifest::assign(tx, &key, target, version)
}

pub fn run(cmd: OverlayCmd) -> Result<()> {
    match cmd {
        OverlayCmd::Add(a) => {
            let state = StateDir::new(&a.state.state);
            let mut conn = store::open(&state)?;
            let target = target_key(&conn, &a.target)?;
            let source = std::fs::canonicalize(&a.source)
                .with_context(|| format!("overlay source {}", a.source.display()))?;
            if !(ember_proto::sealed::MIN_CHUNK..=ember_proto::sealed::MAX_CHUNK)
                .contains(&a.chunk_size)
            {
                bail!(
                    "--chunk-size must be {}..={}",
                    ember_proto::sealed::MIN_CHUNK,
                    ember_proto::sealed::MAX_CHUNK
                );
            }
            let blob = ember_server::overlay::store_overlay(&state, &source)?;
            let sealed =
                manifest::seal_overlay(&state, &state.blob(&hex(&blob.sha256)), a.chunk_size)?;
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO overlays(sha256, size, source, created_at, blob_sha256, blob_size, chunk_size, compression, data_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    &blob.sha256[..],
                    blob.size as i64,
                    source.display().to_string(),
                    now_ms(),
                    &sealed.blob.sha256[..],
                    sealed.blob.size as i64,
                    sealed.chunk_size,
                    sealed.compression.name(),
                    &sealed.data_key[..],
                ],
            )?;
            let version = tx.last_insert_rowid();
            let epoch = match &target {
                Some(t) => Some(assign(&tx, &state, t, version)?),
                None => None,
            };
            tx.commit()?;
            println!(
                "overlay {version}: {} bytes, sha256 {}, sealed blob {} ({} bytes, {})",
                blob.size,
                hex(&blob.sha256),
                hex(&sealed.blob.sha256),
                sealed.blob.size,
                sealed.compression.name()
            );
            if let (Some(t), Some(epoch)) = (target, epoch) {
                println!("assigned overlay {version} to {t} (manifest epoch {epoch})");
            }
            Ok(())
        }
        OverlayCmd::Assign(a) => {
            let mut conn = store::open(&StateDir::new(&a.state.state))?;
            let Some(target) = target_key(&conn, &a.target)? else {
                bail!("give --group or --node")
            };
            if store::overlay(&conn, a.version)?.is_none() {
                bail!("no overlay version {}", a.version);
            }
            let state = StateDir::new(&a.state.state);
            let tx = conn.transaction()?;
            let epoch = assign(&tx, &state, &target, a.version)?;
            tx.commit()?;
            println!(
                "assigned overlay {} to {target} (manifest epoch {epoch})",
                a.version
            );
            Ok(())
        }
        OverlayCmd::Key(s) => {
            let state = StateDir::new(&s.state);
            store::lock_down(&state)?;
            let (key, _) = manifest::ensure_signing_key(&state)?;
            print!("{}", manifest::public_pem(&key.public()));
            Ok(())
        }
        OverlayCmd::List(s) => {
            let conn = store::open(&StateDir::new(&s.state))?;
            let mut stmt = conn.prepare(
                "SELECT o.version_id, o.size, o.sha256, o.source,
                        (SELECT group_concat(target, ' ') FROM assignments a WHERE a.version_id = o.version_id)
                 FROM overlays o ORDER BY o.version_id",
            )?;
            println!(
                "{:<8} {:>10}  {:<16}  {:<30} ASSIGNED",
                "VERSION", "SIZE", "SHA256", "SOURCE"
            );
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            for row in rows {
                let (v, size, sha, src, targets) = row?;
                println!(
                    "{v:<8} {size:>10}  {:<16}  {src:<30} {}",
                    hex(&sha[..8.min(sha.len())]),
                    targets.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}
