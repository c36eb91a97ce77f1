//! Overlays in the store: a deterministic tar.gz built from a directory (or
//! a given tar/tar.gz taken as is), kept as a blob named by its SHA-256.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::store::{hex, StateDir};

/// Writes through while hashing and counting.
struct Hashing<W: Write> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob just written to the store.
pub struct Blob {
    pub sha256: [u8; 32],
    pub size: u64,
}

fn temp_in(dir: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    let _ = getrandom::getrandom(&mut r);
    dir.join(format!(".tmp-{}", hex(&r)))
}

/// Stores what `fill` writes as a content-addressed blob in `dir`.
pub(crate) fn store_blob(
    dir: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<Blob> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = temp_in(dir);
    let result = (|| {
        // Owner-only whatever the umask: plaintext overlays carry configuration.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
        }
        .with_context(|| format!("create {}", tmp.display()))?;
        let mut w = Hashing {
            inner: io::BufWriter::new(file),
            sha: Sha256::new(),
            len: 0,
        };
        fill(&mut w)?;
        w.flush()?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let sha256: [u8; 32] = w.sha.finalize().into();
        std::fs::rename(&tmp, dir.join(hex(&sha256)))?;
        Ok(Blob {
            sha256,
            size: w.len,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Stores an overlay from a directory (deterministic tar.gz) or a tar(.gz) file.
pub fn store_overlay(state: &StateDir, src: &Path) -> Result<Blob> {
    let meta =
        std::fs::metadata(src).with_context(|| format!("overlay source {}", src.display()))?;
    if meta.is_dir() {
        store_blob(&state.blobs(), |w| write_tar_gz(src, w))
    } else if meta.is_file() {
        let mut f = File::open(src)?;
        let mut magic = [0u8; 512];
        let n = read_up_to(&mut f, &mut magic)?;
        let gzip = n >= 2 && magic[..2] == [0x1f, 0x8b];
        let ustar = n >= 262 && &magic[257..262] == b"ustar";
        if !gzip && !ustar {
            bail!(
                "{} is neither a directory, a tar nor a tar.gz",
                src.display()
            );
        }
        store_blob(&state.blobs(), |w| {
            io::copy(&mut File::open(src)?, w)?;
            Ok(())
        })
    } else {
        bail!("{} is neither a directory nor a file", src.display())
    }
}

/// Stores a static boot artifact (kernel, initrd) under its SHA-256.
pub fn store_boot_artifact(state: &StateDir, src: &Path) -> Result<Blob> {
    store_blob(&state.boot_dir(), |w| {
        io::copy(
            &mut File::open(src).with_context(|| format!("open {}", src.display()))?,
            w,
        )?;
        Ok(())
    })
}

/// Stores bytes made here (an iPXE script) as a boot artifact.
pub fn store_boot_bytes(state: &StateDir, bytes: &[u8]) -> Result<Blob> {
    store_blob(&state.boot_dir(), |w| {
        w.write_all(bytes)?;
        Ok(())
    })
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

/// A tar.gz of `dir` that depends only on the tree: entries sorted by name,
/// owner 0:0 without names, permissions and mtimes kept, gzip header
/// without time or name.
pub fn write_tar_gz(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
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
    let gz = tar.into_inner()?;
    gz.finish()?;
    Ok(())
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
    fn same_tree_gives_the_same_bytes() {
        let d = std::env::temp_dir().join(format!("ember-overlay-det-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("etc/rancher")).unwrap();
        std::fs::write(d.join("etc/rancher/config.yaml"), b"token: x\n").unwrap();
        std::fs::write(d.join("etc/hostname"), b"node1\n").unwrap();
        std::os::unix::fs::symlink("hostname", d.join("etc/name")).unwrap();
        let mut a = Vec::new();
        write_tar_gz(&d, &mut a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = Vec::new();
        write_tar_gz(&d, &mut b).unwrap();
        assert_eq!(a, b);
        std::fs::write(d.join("etc/hostname"), b"node2\n").unwrap();
        let mut c = Vec::new();
        write_tar_gz(&d, &mut c).unwrap();
        assert_ne!(a, c);
        let _ = std::fs::remove_dir_all(&d);
    }
}
