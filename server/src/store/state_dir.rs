//! The state folder: its layout and its permissions.

use std::path::{Path, PathBuf};

/// The state folder's layout.
#[derive(Clone, Debug)]
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new(path: &Path) -> Self {
        StateDir(path.to_path_buf())
    }
    pub fn root(&self) -> &Path {
        &self.0
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("ember.db")
    }
    pub fn blobs(&self) -> PathBuf {
        self.0.join("blobs")
    }
    pub fn blob(&self, sha256_hex: &str) -> PathBuf {
        self.blobs().join(sha256_hex)
    }
    /// Sealed overlay blobs, named by the SHA-256 of their sealed bytes:
    /// ciphertext, served to anyone on both listeners.
    pub fn sealed_dir(&self) -> PathBuf {
        self.0.join("sealed")
    }
    pub fn tls(&self) -> PathBuf {
        self.0.join("tls")
    }
    /// Static boot artifacts (kernel, initrd), named by SHA-256.
    pub fn boot_dir(&self) -> PathBuf {
        self.0.join("boot")
    }
    pub fn boot_artifact(&self, sha256_hex: &str) -> PathBuf {
        self.boot_dir().join(sha256_hex)
    }
}

/// Makes everything this process creates owner-only, whatever umask it
/// was started with, and tightens a state folder made by an older ember:
/// the database holds session secrets (overlay keys derive from them), the
/// blobs plaintext configuration, tls/ the server's keys.
pub fn lock_down(state: &StateDir) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let root = state.root();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("create state folder {}", root.display()))?;
    fn walk(dir: &Path) -> anyhow::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", dir.display()))?;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(&e.path())?;
            } else if ft.is_file() {
                let mode = e.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("chmod {}", e.path().display()))?;
                }
            }
        }
        Ok(())
    }
    walk(root)
}
