//! `ember overlay add|assign|list|key`: publishes configuration overlays.
//! `add` seals each version once into a static blob; `add --group/--node`
//! and `assign` sign its manifest under the next epoch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use ember_proto::manifest::Compression;
use ember_server::manifest;
use ember_server::store::{self, hex, Sql, StateDir};

use crate::state_args::StateArgs;

#[derive(Subcommand)]
pub enum OverlayCmd {
    /// Adds an overlay from a directory (built into a deterministic tar) or
    /// a tar, tar.gz or tar.lz4 file, stored in --compress; with --group or
    /// --node also assigns it.
    Add(AddArgs),
    /// Assigns an overlay version to a group or a node.
    Assign(AssignArgs),
    /// Lists overlays and assignments.
    List(StateArgs),
    /// Prints the manifest public key (PEM) nodes verify manifests with:
    /// bundle it into initrds as /etc/ember/manifest.pub.
    Key(StateArgs),
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
    /// Plaintext bytes per sealed chunk.
    #[arg(long, default_value_t = ember_proto::sealed::DEFAULT_CHUNK)]
    pub chunk_size: u32,
    /// The sealed tar's compression, which the node decodes: lz4 (LZ4
    /// frames; the fastest boot under TCG, book, "Sealed overlay and manifest formats"), gzip
    /// or none. A file already in it is kept byte for byte; another is
    /// re-encoded.
    #[arg(long = "compress", value_enum, default_value_t = OverlayCompression::Lz4)]
    pub compress: OverlayCompression,
}

/// `--compress` of `overlay add`: the manifest's compression field.
#[derive(Clone, Copy, ValueEnum)]
pub enum OverlayCompression {
    Lz4,
    Gzip,
    None,
}

impl From<OverlayCompression> for Compression {
    fn from(c: OverlayCompression) -> Self {
        match c {
            OverlayCompression::Gzip => Compression::Gzip,
            OverlayCompression::Lz4 => Compression::Lz4,
            OverlayCompression::None => Compression::None,
        }
    }
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

/// Signs `version`'s manifest for `target` under the state folder's
/// manifest key (created on first use) and stores the assignment.
fn assign(tx: &mut dyn Sql, state: &StateDir, target: &str, version: i64) -> Result<u64> {
    let (key, _) = manifest::ensure_signing_key(state)?;
    manifest::assign(tx, &key, target, version)
}

pub fn run(cmd: OverlayCmd) -> Result<()> {
    match cmd {
        OverlayCmd::Add(a) => {
            let state = a.state.dir();
            let mut db = a.state.open()?;
            let target = target_key(&mut db, &a.target)?;
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
            let blobs = state.blobs();
            let blob = ember_server::overlay::store_blob(&blobs, |w| {
                ember_build::overlay::write_overlay(&source, a.compress.into(), &blobs, w)
            })?;
            let sealed =
                manifest::seal_overlay(&state, &state.blob(&hex(&blob.sha256)), a.chunk_size)?;
            let mut tx = db.transaction()?;
            let version =
                manifest::insert_overlay(&mut tx, &blob, &source.display().to_string(), &sealed)?;
            let epoch = match &target {
                Some(t) => Some(assign(&mut tx, &state, t, version)?),
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
            let mut db = a.state.open()?;
            let Some(target) = target_key(&mut db, &a.target)? else {
                bail!("give --group or --node")
            };
            if store::overlay(&mut db, a.version)?.is_none() {
                bail!("no overlay version {}", a.version);
            }
            let state = a.state.dir();
            let mut tx = db.transaction()?;
            let epoch = assign(&mut tx, &state, &target, a.version)?;
            tx.commit()?;
            println!(
                "assigned overlay {} to {target} (manifest epoch {epoch})",
                a.version
            );
            Ok(())
        }
        OverlayCmd::Key(s) => {
            let state = s.dir();
            store::lock_down(&state)?;
            let (key, _) = manifest::ensure_signing_key(&state)?;
            print!("{}", manifest::public_pem(&key.public()));
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
