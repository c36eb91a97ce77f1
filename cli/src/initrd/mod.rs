//! The initrd image: a sorted tree of entries written as a newc cpio through
//! `ember-fs`. One implementation serves `ember initrd build`, the Bazel
//! rule and `--from-oci`.

mod tree;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ember_fs::cpio::{self, Output};
use ember_fs::gzip_writer::GzipWriter;
use ember_fs::modules_dep::{module_name, ModulesDep};
use sha2::{Digest, Sha256};

pub use tree::{Node, Tree};

/// How the cpio is compressed. Debian's kernel (6.1) unpacks all of these
/// (CONFIG_RD_GZIP/XZ/LZ4/ZSTD=y). gzip is miniz_oxide in-process; xz, zstd
/// and lz4 run Debian's CLIs (xz-utils, zstd, lz4) with fixed settings, so
/// the output stays byte-for-byte reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4,
    None,
}

impl Compression {
    /// The external compressor and its arguments (stdin to stdout).
    fn command(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Compression::Gzip | Compression::None => None,
            // The kernel's XZ decoder checks CRC32 only (not the default
            // CRC64); -T1 keeps the single-threaded, reproducible format.
            Compression::Xz => Some(("xz", &["--check=crc32", "-9", "-T1", "-c", "-q"])),
            Compression::Zstd => Some(("zstd", &["-19", "-T1", "-c", "-q"])),
            // The kernel reads lz4's legacy frame format only.
            Compression::Lz4 => Some(("lz4", &["-l", "-9", "-c", "-q"])),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExtraFile {
    pub source: PathBuf,
    pub dest: String,
}

/// Everything an initrd is made from.
#[derive(Clone, Debug)]
pub struct Spec {
    pub init: PathBuf,
    pub modules_dir: Option<PathBuf>,
    pub modules: Vec<String>,
    pub files: Vec<ExtraFile>,
    pub kernel: Option<PathBuf>,
    pub compression: Compression,
    pub mtime: u32,
}

#[derive(Debug)]
pub struct Report {
    pub entries: usize,
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    pub sha256: String,
}

/// Where the init reads the names of the modules to load.
pub const MODULE_LIST_PATH: &str = "etc/ember/modules";

/// SOURCE_DATE_EPOCH as the entries' mtime; 0 when unset.
pub fn source_date_epoch() -> anyhow::Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a 32-bit Unix time")),
        Err(_) => Ok(0),
    }
}

/// Builds the tree an initrd holds: the skeleton, /init, modules, extra files.
pub fn assemble(spec: &Spec) -> anyhow::Result<Tree> {
    assemble_onto(Tree::new(), spec)
}

/// Adds the skeleton, /init, modules and extra files to `tree` (a flattened
/// OCI image for `--from-oci`); what the spec adds wins over the tree.
pub fn assemble_onto(mut tree: Tree, spec: &Spec) -> anyhow::Result<Tree> {
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "etc/ember",
        "root",
        "var",
        "boot",
    ] {
        tree.dir(dir, 0o755)?;
    }
    tree.set_mode("tmp", 0o1777)?;
    tree.set_mode("root", 0o700)?;
    // The kernel opens /dev/console for PID 1's stdio before anything can
    // mount devtmpfs, so the node must exist in the image.
    tree.insert(
        "dev/console",
        Node::CharDevice {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    )?;

    let init = std::fs::read(&spec.init)
        .with_context(|| format!("reading init binary {}", spec.init.display()))?;
    tree.insert(
        "init",
        Node::File {
            data: init,
            mode: 0o755,
        },
    )?;

    if let Some(kernel) = &spec.kernel {
        let data = std::fs::read(kernel)
            .with_context(|| format!("reading kernel {}", kernel.display()))?;
        tree.insert("boot/vmlinuz", Node::File { data, mode: 0o644 })?;
    }

    add_modules(&mut tree, spec)?;

    for extra in &spec.files {
        let data = std::fs::read(&extra.source)
            .with_context(|| format!("reading extra file {}", extra.source.display()))?;
        let mode = file_mode(&extra.source)?;
        tree.insert(
            extra.dest.trim_start_matches('/'),
            Node::File { data, mode },
        )?;
    }
    Ok(tree)
}

fn file_mode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok(meta.permissions().mode() & 0o7777)
}

fn add_modules(tree: &mut Tree, spec: &Spec) -> anyhow::Result<()> {
    let Some(dir) = &spec.modules_dir else {
        if !spec.modules.is_empty() {
            bail!("--module given without --modules-dir");
        }
        return Ok(());
    };
    let release = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not end in a kernel release", dir.display()))?;
    let dep_path = dir.join("modules.dep");
    let dep_text = std::fs::read_to_string(&dep_path)
        .with_context(|| format!("reading {} (run depmod for this tree)", dep_path.display()))?;
    let deps = ModulesDep::parse(&dep_text)?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();

    // Built-in drivers (tpm_tis on Debian) need no file; everything else
    // must resolve, or the node would boot without it.
    let wanted: Vec<&str> = spec
        .modules
        .iter()
        .map(|m| on_demand(m).unwrap_or(m))
        .filter(|m| !ember_fs::modules_dep::is_builtin(&builtin, m))
        .collect();
    let order = deps.closure(&wanted)?;

    let base = format!("lib/modules/{release}");
    let mut dep_lines = String::new();
    for path in &order {
        let data =
            std::fs::read(dir.join(path)).with_context(|| format!("reading module {path}"))?;
        tree.insert(&format!("{base}/{path}"), Node::File { data, mode: 0o644 })?;
        let entry = deps
            .find(path)
            .expect("closure only returns listed modules");
        dep_lines.push_str(path);
        dep_lines.push(':');
        for d in &entry.deps {
            dep_lines.push(' ');
            dep_lines.push_str(d);
        }
        dep_lines.push('\n');
    }
    tree.insert(
        &format!("{base}/modules.dep"),
        Node::File {
            data: dep_lines.into_bytes(),
            mode: 0o644,
        },
    )?;
    tree.insert(
        &format!("{base}/modules.builtin"),
        Node::File {
            data: builtin.into_bytes(),
            mode: 0o644,
        },
    )?;

    let mut list = String::new();
    for m in spec.modules.iter().filter(|m| on_demand(m).is_none()) {
        list.push_str(module_name(m));
        list.push('\n');
    }
    tree.insert(
        MODULE_LIST_PATH,
        Node::File {
            data: list.into_bytes(),
            mode: 0o644,
        },
    )?;
    Ok(())
}

/// `NAME?` is a module carried in the initrd (with its dependencies) but
/// not loaded at boot: the init loads it when a feature needs it (ext4 for
/// a scratch disk), so nodes without that feature do not pay for it.
fn on_demand(module: &str) -> Option<&str> {
    module.strip_suffix('?')
}

/// Runs `program args` with `input` on its stdin and its stdout into `out`.
fn pipe_through(
    program: &str,
    args: &[&str],
    input: &[u8],
    out: &mut CountingFile,
) -> anyhow::Result<()> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (Debian: scripts/install-deps installs it)"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let copied = std::thread::scope(|s| {
        // Fed from another thread: the compressor writes while it reads.
        let feeder = s.spawn(move || stdin.write_all(input));
        let mut buf = vec![0u8; 1 << 16];
        let read: anyhow::Result<()> = loop {
            match stdout.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = out.put(&buf[..n]) {
                        break Err(anyhow::anyhow!("writing the initrd: {e}"));
                    }
                }
                Err(e) => break Err(e.into()),
            }
        };
        // Closing our end stops a compressor we no longer read from.
        drop(stdout);
        let fed = feeder.join().expect("stdin feeder thread");
        read.and(fed.map_err(anyhow::Error::from))
    });
    let status = child
        .wait_with_output()
        .context("waiting for the compressor")?;
    copied.with_context(|| format!("piping through {program}"))?;
    if !status.status.success() {
        bail!(
            "{program} failed ({}): {}",
            status.status,
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    Ok(())
}

/// Hashes and counts what passes through to the file.
struct CountingFile {
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl Output for CountingFile {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ember_fs::Error> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .map_err(|e| ember_fs::Error::Output(e.raw_os_error().unwrap_or(0)))
    }
}

/// Counts uncompressed bytes on their way into the compressor.
struct Uncompressed<O: Output> {
    inner: O,
    bytes: u64,
}

impl<O: Output> Output for Uncompressed<O> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ember_fs::Error> {
        self.bytes += bytes.len() as u64;
        self.inner.put(bytes)
    }
}

/// Writes `tree` as a cpio to `output` atomically: a temporary file in the
/// same directory, renamed into place only when complete.
pub fn write_tree(
    tree: &Tree,
    compression: Compression,
    mtime: u32,
    output: &Path,
) -> anyhow::Result<Report> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        output
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("initrd"),
        std::process::id()
    ));
    let result = write_tree_to(tree, compression, mtime, &tmp);
    match result {
        Ok(report) => {
            std::fs::rename(&tmp, output)
                .with_context(|| format!("renaming into {}", output.display()))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_tree_to(
    tree: &Tree,
    compression: Compression,
    mtime: u32,
    path: &Path,
) -> anyhow::Result<Report> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let sink = CountingFile {
        file: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let (sink, uncompressed_bytes) = match compression {
        Compression::None => {
            let sink = tree.write_cpio(cpio::Writer::new(sink), mtime)?.finish()?;
            let n = sink.bytes;
            (sink, n)
        }
        Compression::Gzip => {
            let counted = Uncompressed {
                inner: GzipWriter::new(sink, 9),
                bytes: 0,
            };
            let counted = tree
                .write_cpio(cpio::Writer::new(counted), mtime)?
                .finish()?;
            let n = counted.bytes;
            (counted.inner.finish()?, n)
        }
        external => {
            let plain = tree
                .write_cpio(cpio::Writer::new(Vec::new()), mtime)?
                .finish()?;
            let (program, args) = external.command().expect("external compressor");
            let mut sink = sink;
            pipe_through(program, args, &plain, &mut sink)?;
            (sink, plain.len() as u64)
        }
    };
    let CountingFile {
        file,
        hasher,
        bytes,
    } = sink;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(Report {
        entries: tree.len(),
        bytes,
        uncompressed_bytes,
        sha256: ember_fs::hex::hex(&hasher.finalize()),
    })
}

/// The initrd's regular files for its SBOM, each with what the build
/// knows of it: /init, the files this module writes itself (the module
/// list and modules.dep), and everything copied in from an input.
pub fn sbom_entries(tree: &Tree) -> Vec<crate::sbom::Entry<'_>> {
    use crate::sbom::{Entry, Role};
    tree.iter()
        .filter_map(|(path, node)| match node {
            Node::File { data, .. } => Some(Entry {
                path: path.clone(),
                data,
                role: if path == "init" {
                    Role::Init
                } else if path == MODULE_LIST_PATH
                    || (path.starts_with("lib/modules/") && path.ends_with("/modules.dep"))
                {
                    Role::Generated
                } else {
                    Role::Input
                },
            }),
            _ => None,
        })
        .collect()
}
