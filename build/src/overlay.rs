//! Overlays as the boot server stores them: a deterministic tar built
//! from a directory, or a given tar, tar.gz or tar.lz4, in the compression
//! asked for (gzip, LZ4 frames or none; a file already in it is kept byte
//! for byte). The caller says where the bytes go (the server's blob store,
//! through `ember_server::overlay::store_blob`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ember_proto::manifest::Compression;

/// Writes the overlay `src` (a directory, or a tar, tar.gz or tar.lz4
/// file) into `out` in `compression`. `scratch` is where LZ4's temporary
/// tar goes (plaintext: keep it beside the blobs, owner-only).
pub fn write_overlay(
    src: &Path,
    compression: Compression,
    scratch: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let meta =
        std::fs::metadata(src).with_context(|| format!("overlay source {}", src.display()))?;
    if meta.is_dir() {
        return write_tar(src, compression, scratch, out);
    }
    if !meta.is_file() {
        bail!("{} is neither a directory nor a file", src.display())
    }
    let mut file = File::open(src)?;
    let mut magic = [0u8; 512];
    let n = read_up_to(&mut file, &mut magic)?;
    let given = Compression::sniff(&magic[..n]);
    let ustar = n >= 262 && &magic[257..262] == b"ustar";
    if given == Compression::None && !ustar {
        bail!(
            "{} is neither a directory, a tar, a tar.gz nor a tar.lz4",
            src.display()
        );
    }
    let mut file = File::open(src)?;
    if given == compression {
        io::copy(&mut file, out)?;
        return Ok(());
    }
    let mut tar: Box<dyn Read> = match given {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(file)),
    };
    let mut encoder = Encoder::new(compression, scratch, out)?;
    io::copy(&mut tar, &mut encoder)
        .with_context(|| format!("{}: decoding {}", src.display(), given.name()))?;
    encoder.finish()
}

/// A name for a temporary file in `dir` that no one else picks.
fn temp_in(dir: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    let _ = getrandom::getrandom(&mut r);
    let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(".tmp-{name}"))
}

/// Debian's `lz4` (package lz4) at its high-compression level 9, linked
/// 64 KiB blocks, no checksums: lz4_flex has no high-compression mode, and
/// HC is what makes LZ4 the fastest overlay to boot (book, "Sealed
/// overlay and manifest formats": the bench overlay is 20.6 MB at -9, as small as gzip's 20.1,
/// against 24.7 MB from lz4_flex, and opens + decodes 17% faster than
/// gzip under TCG). The node decodes linked 64 KiB blocks in 192 KiB.
const LZ4_HC: (&str, &[&str]) = ("lz4", &["-9", "-B4", "-BD", "--no-frame-crc", "-q", "-c"]);

/// The stored overlay's compressor: what `--compress` chose.
enum Encoder<'a> {
    None(&'a mut dyn Write),
    /// gzip at level 6, header without time or name (deterministic).
    Gzip(flate2::write::GzEncoder<&'a mut dyn Write>),
    /// The tar gathered in a temporary file, then compressed by [`LZ4_HC`].
    Lz4 {
        tar: File,
        path: PathBuf,
        out: &'a mut dyn Write,
    },
}

impl<'a> Encoder<'a> {
    /// `scratch`: where LZ4's temporary tar goes (beside the blobs: it is
    /// plaintext, kept owner-only and removed when done).
    fn new(compression: Compression, scratch: &Path, out: &'a mut dyn Write) -> Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(out, flate2::Compression::default()),
            ),
            Compression::Lz4 => {
                let path = temp_in(scratch);
                let tar = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("create {}", path.display()))?
                };
                Encoder::Lz4 { tar, path, out }
            }
        })
    }

    fn finish(self) -> Result<()> {
        match self {
            Encoder::None(w) => w.flush()?,
            Encoder::Gzip(g) => g.finish()?.flush()?,
            Encoder::Lz4 { tar, path, out } => {
                let result = lz4_hc(tar, out);
                let _ = std::fs::remove_file(&path);
                result?
            }
        }
        Ok(())
    }
}

/// Runs [`LZ4_HC`] over the tar in `tar`, its output into `out`.
fn lz4_hc(mut tar: File, out: &mut dyn Write) -> Result<()> {
    use std::io::Seek;
    tar.flush()?;
    tar.rewind()?;
    let (program, args) = LZ4_HC;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(tar)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("run {program} (Debian package lz4) for --compress lz4"))?;
    let copied = io::copy(child.stdout.as_mut().expect("piped stdout"), out);
    let status = child.wait()?;
    copied.with_context(|| format!("read {program}'s output"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    out.flush()?;
    Ok(())
}

impl Write for Encoder<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Lz4 { tar, .. } => tar.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(g) => g.flush(),
            Encoder::Lz4 { tar, .. } => tar.flush(),
        }
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A tar of `dir` in `compression` that depends only on the tree: entries
/// sorted by name, owner 0:0 without names, permissions and mtimes kept,
/// gzip header without time or name.
pub fn write_tar(
    dir: &Path,
    compression: Compression,
    scratch: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let mut tar = tar::Builder::new(Encoder::new(compression, scratch, out)?);
    tar.follow_symlinks(false);
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries)?;
    for rel in entries {
        let full = dir.join(&rel);
        let md = std::fs::symlink_metadata(&full)?;
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_mode(md.permissions().mode() & 0o7777);
        let ft = md.file_type();
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, &rel, io::empty())?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            tar.append_data(&mut h, &rel, File::open(&full)?)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = std::fs::read_link(&full)?;
            tar.append_link(&mut h, &rel, &target)?;
        } else {
            bail!(
                "{}: only directories, regular files and symlinks can go into an overlay",
                full.display()
            );
        }
    }
    tar.into_inner()?.finish()
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
        .with_context(|| format!("read {}", root.join(rel).display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let p = rel.join(&name);
        let md = std::fs::symlink_metadata(root.join(&p))?;
        out.push(p.clone());
        if md.is_dir() {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_gives_the_same_bytes_in_every_compression() {
        for compression in Compression::ALL {
            let d = std::env::temp_dir()
                .join(format!("ember-build-overlay-det-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("etc/rancher")).unwrap();
            std::fs::write(d.join("etc/rancher/config.yaml"), b"token: x\n").unwrap();
            std::fs::write(d.join("etc/hostname"), b"node1\n").unwrap();
            std::os::unix::fs::symlink("hostname", d.join("etc/name")).unwrap();
            let mut a = Vec::new();
            write_tar(&d, compression, &std::env::temp_dir(), &mut a).unwrap();
            assert_eq!(Compression::sniff(&a), compression);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut b = Vec::new();
            write_tar(&d, compression, &std::env::temp_dir(), &mut b).unwrap();
            assert_eq!(a, b);
            std::fs::write(d.join("etc/hostname"), b"node2\n").unwrap();
            let mut c = Vec::new();
            write_tar(&d, compression, &std::env::temp_dir(), &mut c).unwrap();
            assert_ne!(a, c);
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_given_file_is_kept_in_its_compression_or_re_encoded_into_another() {
        let d =
            std::env::temp_dir().join(format!("ember-build-overlay-conv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("tree/etc")).unwrap();
        std::fs::write(d.join("tree/etc/hostname"), b"node1\n").unwrap();
        let mut tar = Vec::new();
        write_tar(&d.join("tree"), Compression::None, &d, &mut tar).unwrap();
        for given in Compression::ALL {
            let file = d.join(format!("given.{}", given.name()));
            let mut bytes = Vec::new();
            write_tar(&d.join("tree"), given, &d, &mut bytes).unwrap();
            std::fs::write(&file, &bytes).unwrap();
            for wanted in Compression::ALL {
                let mut stored = Vec::new();
                write_overlay(&file, wanted, &d, &mut stored).unwrap();
                assert_eq!(Compression::sniff(&stored), wanted);
                if given == wanted {
                    assert_eq!(stored, bytes, "{} kept byte for byte", given.name());
                }
                let mut plain = Vec::new();
                let mut r: Box<dyn Read> = match wanted {
                    Compression::None => Box::new(&stored[..]),
                    Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&stored[..])),
                    Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(&stored[..])),
                };
                r.read_to_end(&mut plain).unwrap();
                assert_eq!(plain, tar, "{} -> {}", given.name(), wanted.name());
            }
        }
        std::fs::write(d.join("junk"), [7u8; 600]).unwrap();
        let err = write_overlay(&d.join("junk"), Compression::Lz4, &d, &mut Vec::new())
            .expect_err("junk is refused");
        assert!(
            err.to_string().contains("neither a directory, a tar"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
