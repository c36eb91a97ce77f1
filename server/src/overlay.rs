//! Content-addressed blobs in the state folder: overlays (built by
//! `ember_build::overlay`), sealed streams and boot artifacts, each written
//! to a temporary name, synced, and renamed to its SHA-256.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
pub fn store_blob(dir: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<Blob> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_named_by_its_sha256_and_a_failed_fill_leaves_nothing() {
        let d = std::env::temp_dir().join(format!("ember-blob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let blob = store_blob(&d, |w| Ok(w.write_all(b"overlay bytes")?)).unwrap();
        assert_eq!(
            blob.sha256,
            <[u8; 32]>::from(Sha256::digest(b"overlay bytes"))
        );
        assert_eq!(blob.size, 13);
        assert_eq!(
            std::fs::read(d.join(hex(&blob.sha256))).unwrap(),
            b"overlay bytes"
        );
        let err = store_blob(&d, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("the source went away")
        });
        assert!(err.is_err());
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(hex(&blob.sha256))],
            "no temporary file left"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
