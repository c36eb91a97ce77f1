//! `ember tar`: extract or list an overlay through exactly the node's code
//! path (`ember_fs::tar::Extractor`), so operators see what a node would.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use ember_fs::tar::{
    Confinement, Entry, ErrorKind, Extractor, FsSink, Kind, Limits, Protection, Sink, Summary,
};

#[derive(Subcommand)]
pub enum TarCmd {
    /// Extract a tar or tar.gz (FILE, or stdin with `-`) into DIR.
    Extract {
        /// Fail unless the SHA-256 of the input stream (compressed bytes) is this.
        #[arg(long, value_name = "HEX")]
        expect_sha256: Option<String>,
        /// Directory to extract into (must exist).
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        /// How symlinks met while resolving names are confined to DIR.
        #[arg(long, value_enum, default_value_t = Confine::Beneath)]
        confine: Confine,
        /// Cap on inflated tar bytes (zip-bomb guard).
        #[arg(long, value_name = "BYTES")]
        max_bytes: Option<u64>,
        /// Refuse what the node refuses in `/`: entries under proc, sys,
        /// dev, boot or run/ember of DIR, links into them, and any
        /// directory on another mount than DIR.
        #[arg(long)]
        protect_system: bool,
        /// Input file; `-` (the default) is stdin.
        #[arg(default_value = "-")]
        file: String,
    },
    /// List the members of a tar or tar.gz as the node parses them.
    List {
        /// Input file; `-` is stdin.
        file: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Confine {
    /// Refuse names whose resolution leaves DIR through a symlink.
    Beneath,
    /// Resolve names as if DIR were `/` (chroot-like).
    InRoot,
}

/// Large reads keep the syscall count low; memory stays fixed.
const READ_CHUNK: usize = 256 * 1024;

pub fn run(cmd: TarCmd) -> anyhow::Result<()> {
    match cmd {
        TarCmd::Extract {
            expect_sha256,
            into,
            confine,
            max_bytes,
            protect_system,
            file,
        } => {
            let expected = expect_sha256.as_deref().map(parse_hex).transpose()?;
            let confinement = match confine {
                Confine::Beneath => Confinement::Beneath,
                Confine::InRoot => Confinement::InRoot,
            };
            let mut sink = FsSink::open(into.as_path(), confinement)
                .map_err(|k| anyhow::anyhow!("{}: {k}", into.display()))?;
            if protect_system {
                sink = sink
                    .protect(Protection::SYSTEM)
                    .map_err(|k| anyhow::anyhow!("{}: {k}", into.display()))?;
            }
            let mut limits = Limits::default();
            if let Some(m) = max_bytes {
                limits.max_tar_bytes = m;
            }
            let summary = pump(&file, Extractor::new(Warn(sink), limits))?;
            report(&summary);
            if let Some(e) = expected {
                summary
                    .check_sha256(&e)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Ok(())
        }
        TarCmd::List { file } => {
            let summary = pump(&file, Extractor::new(Lister, Limits::default()))?;
            report(&summary);
            Ok(())
        }
    }
}

fn pump<S: Sink>(file: &str, mut x: Extractor<S>) -> anyhow::Result<Summary> {
    let mut input: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("open {file}"))?)
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("read {file}")),
        };
        x.write(&buf[..n]).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    x.finish().map_err(|e| anyhow::anyhow!("{e}"))
}

fn report(s: &Summary) {
    eprintln!(
        "sha256 {}  {} entries, {} skipped, {} tar bytes from {} {} bytes",
        hex(&s.sha256),
        s.entries,
        s.skipped,
        s.tar_bytes,
        s.stream_bytes,
        match s.compression {
            ember_fs::tar::Compression::None => "plain",
            ember_fs::tar::Compression::Gzip => "gzip",
            ember_fs::tar::Compression::Lz4 => "lz4",
        }
    );
}

use ember_fs::hex::hex;

fn parse_hex(s: &str) -> anyhow::Result<[u8; 32]> {
    ember_fs::hex::unhex(s.trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| anyhow::anyhow!("--expect-sha256 wants 64 hex digits"))
}

/// Passes everything to the filesystem sink and prints skip warnings.
struct Warn(FsSink);

impl Sink for Warn {
    fn begin(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        self.0.begin(e)
    }
    fn data(&mut self, b: &[u8]) -> Result<(), ErrorKind> {
        self.0.data(b)
    }
    fn end(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        self.0.end(e)
    }
    fn skipped(&mut self, name: &[u8], typeflag: u8) {
        tracing::warn!(
            "warning: skipped {:?}: unsupported member type {:?}",
            String::from_utf8_lossy(name),
            typeflag as char
        );
        self.0.skipped(name, typeflag)
    }
    fn finish(&mut self) -> Result<(), ErrorKind> {
        self.0.finish()
    }
    fn abort(&mut self) {
        self.0.abort()
    }
}

/// Prints one `tar tv`-like line per member.
struct Lister;

impl Sink for Lister {
    fn begin(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        let m = e.meta;
        let t = match m.kind {
            Kind::File => '-',
            Kind::Directory => 'd',
            Kind::Symlink => 'l',
            Kind::Hardlink => 'h',
            Kind::CharDevice => 'c',
            Kind::BlockDevice => 'b',
            Kind::Fifo => 'p',
        };
        let size = match m.kind {
            Kind::CharDevice | Kind::BlockDevice => format!("{},{}", m.dev_major, m.dev_minor),
            _ => m.size.to_string(),
        };
        let path = if e.path.is_empty() {
            ".".into()
        } else {
            String::from_utf8_lossy(e.path)
        };
        let link = match m.kind {
            Kind::Symlink => format!(" -> {}", String::from_utf8_lossy(e.link)),
            Kind::Hardlink => format!(" link to {}", String::from_utf8_lossy(e.link)),
            _ => String::new(),
        };
        let xattrs: Vec<String> = e
            .xattrs()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        let xattrs = if xattrs.is_empty() {
            String::new()
        } else {
            format!("  [xattrs: {}]", xattrs.join(", "))
        };
        println!(
            "{t}{} {}/{} {size:>12} {}.{:09} {path}{link}{xattrs}",
            perms(m.mode),
            m.uid,
            m.gid,
            m.mtime.secs,
            m.mtime.nanos
        );
        Ok(())
    }
    fn data(&mut self, _: &[u8]) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn end(&mut self, _: &Entry<'_>) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn skipped(&mut self, name: &[u8], typeflag: u8) {
        println!(
            "? skipped (type {:?}) {}",
            typeflag as char,
            String::from_utf8_lossy(name)
        );
    }
}

fn perms(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        let set = mode & bit != 0;
        let special = match i {
            2 => Some((0o4000, 's')),
            5 => Some((0o2000, 's')),
            8 => Some((0o1000, 't')),
            _ => None,
        };
        s.push(match special {
            Some((sb, ch)) if mode & sb != 0 => {
                if set {
                    ch
                } else {
                    ch.to_ascii_uppercase()
                }
            }
            _ if set => c,
            _ => '-',
        });
    }
    s
}
