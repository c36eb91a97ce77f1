//! `ember initrd` subcommands.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::initrd::{self, Compression, ExtraFile, Spec};

#[derive(Subcommand)]
pub enum InitrdCmd {
    /// Build a reproducible newc cpio initrd (gzip by default).
    ///
    /// Entries are sorted, owned by root, numbered deterministically and
    /// dated SOURCE_DATE_EPOCH (0 when unset): the same inputs give the same
    /// bytes.
    Build {
        #[command(flatten)]
        tree: TreeArgs,
        /// Output compression: lz4 (the default: the kernel unpacks it
        /// fastest, book, "Sizes"), xz, zstd (Debian's CLIs, settings the
        /// kernel decompresses), gzip (in-process) or none.
        #[arg(long = "compress", alias = "compression", value_enum, default_value_t = Compression::Lz4)]
        compression: Compression,
        /// Where to write the initrd (written atomically).
        #[arg(long, short)]
        output: PathBuf,
        /// Start from an OCI image layout: its layers are flattened in order
        /// (whiteouts applied), then /init, modules and files are added.
        #[arg(long, value_name = "LAYOUT")]
        from_oci: Option<PathBuf>,
        /// Which image of the layout (its org.opencontainers.image.ref.name);
        /// needed only when index.json lists several.
        #[arg(long, requires = "from_oci")]
        oci_ref: Option<String>,
    },
}

/// What goes into the node's tree: shared by `ember initrd build` and
/// `ember image build`, which package the same tree two ways.
#[derive(Args)]
pub struct TreeArgs {
    /// The init binary, installed as /init.
    #[arg(long)]
    init: PathBuf,
    /// A kernel's module tree: the `lib/modules/<release>` directory
    /// (with modules.dep, as depmod writes it).
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// A kernel module to include and load at boot (with its
    /// dependencies); repeat or comma-separate. `NAME?` includes it
    /// without loading it at boot (the init loads it when needed).
    #[arg(long = "module", value_delimiter = ',')]
    modules: Vec<String>,
    /// An extra file as SRC:DEST (DEST absolute inside the initrd).
    #[arg(long = "file", value_parser = parse_extra_file)]
    files: Vec<ExtraFile>,
    /// Carry a kernel image at /boot/vmlinuz (last-known-good no longer
    /// reads it: a slot is the UKI the node booted).
    #[arg(long)]
    kernel: Option<PathBuf>,
}

impl TreeArgs {
    /// The build spec, dated SOURCE_DATE_EPOCH.
    pub fn spec(self, compression: Compression) -> anyhow::Result<Spec> {
        Ok(Spec {
            init: self.init,
            modules_dir: self.modules_dir,
            modules: self.modules,
            files: self.files,
            kernel: self.kernel,
            compression,
            mtime: initrd::source_date_epoch()?,
        })
    }
}

fn parse_extra_file(arg: &str) -> Result<ExtraFile, String> {
    let (src, dest) = arg
        .split_once(':')
        .ok_or_else(|| format!("expected SRC:DEST, got {arg:?}"))?;
    if !dest.starts_with('/') {
        return Err(format!(
            "destination {dest:?} must be an absolute path inside the initrd"
        ));
    }
    Ok(ExtraFile {
        source: PathBuf::from(src),
        dest: dest.to_string(),
    })
}

pub fn run(cmd: InitrdCmd) -> anyhow::Result<()> {
    match cmd {
        InitrdCmd::Build {
            tree,
            compression,
            output,
            from_oci,
            oci_ref,
        } => {
            let spec = tree.spec(compression)?;
            let report = match from_oci {
                None => initrd::build_to_file(&spec, &output),
                Some(layout) => {
                    let base = crate::oci::flatten_layout(&layout, oci_ref.as_deref())?;
                    initrd::assemble_onto(base, &spec).and_then(|tree| {
                        initrd::write_tree(&tree, spec.compression, spec.mtime, &output)
                    })
                }
            }
            .with_context(|| format!("building initrd {}", output.display()))?;
            println!(
                "{}: {} entries, {} bytes ({} uncompressed), sha256 {}",
                output.display(),
                report.entries,
                report.bytes,
                report.uncompressed_bytes,
                report.sha256
            );
            Ok(())
        }
    }
}
