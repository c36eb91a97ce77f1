//! `ember image` subcommands: the OS root filesystem as an OCI image layout
//! (what Bazel's `//image` is), from the same inputs as `ember initrd build`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::initrd::{self, Compression};
use crate::initrd_cmd::describe_tree;
use crate::initrd_cmd::TreeArgs;
use crate::oci::{self, ImageSpec};
use crate::sbom::{self, spdx::Purpose, Artifact};

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
        /// Where the image's files came from, for the SPDX SBOM attached to
        /// the layout (as `ember initrd build`).
        #[command(flatten)]
        sbom: crate::sbom::OriginArgs,
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
            sbom,
        } => {
            // Read first: a missing .deb fails before anything is written.
            let origins = sbom.read()?;
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
            // The SBOM describes the image by its manifest digest and lists
            // the files of its top layer, the tree (a base image's layers
            // come with their own SBOM, e.g. apko's).
            let what = format!("{} (SBOM)", output.display());
            let describe = |manifest: &oci::Digest| {
                // The layout's own name, not its path: the same inputs
                // give the same SBOM wherever the layout is written.
                let dir = output
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into());
                let name = format!("{dir}:{}", image.tag);
                let artifact = Artifact {
                    kind: "image",
                    file_name: &name,
                    sha256: manifest.hex(),
                    purpose: Purpose::Container,
                    created: u64::from(mtime),
                };
                sbom::to_bytes(&describe_tree(&tree, &artifact, &origins, &what))
            };
            let report = oci::write_layout(&tree, &image, &output, Some(&describe))
                .with_context(|| format!("writing OCI layout {}", output.display()))?;
            println!(
                "{}: manifest {}, {} layers; top layer {} ({} bytes, diff_id {}), {} entries; \
                 SBOM attached as sha256-{}.sbom",
                output.display(),
                report.manifest,
                report.layers,
                report.layer_digest,
                report.layer_bytes,
                report.diff_id,
                tree.len(),
                report.manifest.hex()
            );
            Ok(())
        }
    }
}
