//! `ember image` subcommands: the OS root filesystem as an OCI image layout
//! (what Bazel's `//image` is), from the same inputs as `ember initrd build`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::initrd::{self, Compression};
use crate::initrd_cmd::TreeArgs;
use crate::oci::{self, ImageSpec};

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Write an OCI image layout (oci-layout, index.json, blobs/sha256) whose
    /// top layer is the tree `ember initrd build` would put in the initrd.
    ///
    /// Deterministic: root-owned entries dated SOURCE_DATE_EPOCH (0 when
    /// unset), sorted, gzip with a fixed header.
    Build {
        #[command(flatten)]
        tree: TreeArgs,
        /// A base image layout (e.g. apko's output) to stack the layer on.
        #[arg(long, value_name = "LAYOUT")]
        base: Option<PathBuf>,
        /// The base layout's image name, when it holds several.
        #[arg(long, requires = "base")]
        base_ref: Option<String>,
        /// The image name recorded in index.json.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// The layout directory to write (replaced atomically; an existing
        /// directory that is not a layout is never replaced).
        #[arg(long, short)]
        output: PathBuf,
    },
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Build {
            tree,
            base,
            base_ref,
            tag,
            output,
        } => {
            let spec = tree.spec(Compression::Gzip)?;
            let mtime = spec.mtime;
            let tree = initrd::assemble(&spec)?;
            let image = ImageSpec {
                tag,
                base,
                base_ref,
                mtime,
                entrypoint: vec!["/init".to_string()],
            };
            let report = oci::write_layout(&tree, &image, &output)
                .with_context(|| format!("writing OCI layout {}", output.display()))?;
            println!(
                "{}: manifest {}, {} layers; top layer {} ({} bytes, diff_id {}), {} entries",
                output.display(),
                report.manifest,
                report.layers,
                report.layer_digest,
                report.layer_bytes,
                report.diff_id,
                tree.len()
            );
            Ok(())
        }
    }
}
