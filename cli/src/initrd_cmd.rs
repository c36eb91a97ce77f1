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
        #[command(flatten)]
        sbom: crate::sbom::OriginArgs,
        /// Sign an in-toto statement (SLSA provenance v1: builder, inputs
        /// with digests, command) with this ECDSA P-256 PKCS#8 PEM key,
        /// written as OUTPUT.intoto.json; `ember verify` checks it.
        #[arg(long, value_name = "KEY")]
        sign_provenance: Option<PathBuf>,
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
            sbom,
            sign_provenance,
        } => {
            // Read first: a missing .deb fails before anything is written.
            let origins = sbom.read()?;
            if let Some(key) = &sign_provenance {
                crate::provenance::check_key(key)?;
            }
            let spec = tree.spec(compression)?;
            let inputs = provenance_inputs(&spec, &sbom)?;
            let built = match from_oci {
                None => initrd::assemble(&spec),
                Some(layout) => crate::oci::flatten_layout(&layout, oci_ref.as_deref())
                    .and_then(|base| initrd::assemble_onto(base, &spec)),
            }
            .and_then(|tree| {
                let report = initrd::write_tree(&tree, spec.compression, spec.mtime, &output)?;
                Ok((tree, report))
            })
            .with_context(|| format!("building initrd {}", output.display()))?;
            let (tree, report) = built;
            write_sbom(&tree, &report.sha256, &output, &origins, spec.mtime)?;
            if let Some(key) = &sign_provenance {
                sign(&output, &report.sha256, &inputs, key)?;
            }
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

/// The files an initrd is built from, read for their digests.
fn provenance_inputs(
    spec: &initrd::Spec,
    sbom: &crate::sbom::OriginArgs,
) -> anyhow::Result<Vec<(&'static str, PathBuf, Vec<u8>)>> {
    let mut paths: Vec<(&'static str, PathBuf)> = vec![("init", spec.init.clone())];
    paths.extend(spec.kernel.iter().map(|k| ("kernel", k.clone())));
    paths.extend(spec.files.iter().map(|f| ("file", f.source.clone())));
    if let Some(dir) = &spec.modules_dir {
        paths.push(("modules", dir.join("modules.dep")));
    }
    paths.extend(sbom.debs.iter().map(|d| ("deb", d.clone())));
    paths
        .into_iter()
        .map(|(name, path)| {
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((name, path, data))
        })
        .collect()
}

/// Signs the initrd's provenance with `key`, beside `output`.
fn sign(
    output: &std::path::Path,
    sha256: &str,
    inputs: &[(&'static str, PathBuf, Vec<u8>)],
    key: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::provenance::{self, Input};
    let inputs: Vec<Input> = inputs
        .iter()
        .map(|(name, path, data)| Input { name, path, data })
        .collect();
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let statement = provenance::statement("initrd", &name, sha256, &inputs);
    provenance::write_signed(output, &statement, key)?;
    Ok(())
}

/// Writes `OUTPUT.spdx.json`: every regular file of the initrd and its
/// origin.
fn write_sbom(
    tree: &initrd::Tree,
    sha256: &str,
    output: &std::path::Path,
    origins: &crate::sbom::Origins,
    mtime: u32,
) -> anyhow::Result<()> {
    use crate::sbom::{self, spdx::Purpose, Artifact};
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "initrd".into());
    let artifact = Artifact {
        kind: "initrd",
        file_name: &file_name,
        sha256,
        purpose: Purpose::Archive,
        created: u64::from(mtime),
    };
    let path = sbom::path_beside(output);
    let doc = describe_tree(tree, &artifact, origins, &path.display().to_string());
    sbom::write_beside(output, &doc)?;
    Ok(())
}

/// The SPDX document of `artifact`, every regular file of `tree` traced to
/// `origins`; files no origin accounts for are named on stderr under
/// `what` (where the document goes).
pub(crate) fn describe_tree(
    tree: &initrd::Tree,
    artifact: &crate::sbom::Artifact<'_>,
    origins: &crate::sbom::Origins,
    what: &str,
) -> crate::sbom::spdx::Document {
    let entries = initrd::sbom_entries(tree);
    let (doc, unidentified) = crate::sbom::describe(artifact, &entries, origins);
    if !unidentified.is_empty() && !origins.is_empty() {
        eprintln!(
            "{what}: {} files with no origin (pass the .deb they came from with --sbom-deb, \
             or --sbom-workspace for /init): {}",
            unidentified.len(),
            unidentified.join(" ")
        );
    }
    doc
}
