//! The filesystem root the node configuration's absolute paths refer to:
//! `/` on a node, the overlay directory when the stand-in is tried on a
//! host (`--root DIR`).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// `path` (absolute, as written in node.conf) under this root.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/") {
            Ok(rel) => self.0.join(rel),
            Err(_) => self.0.join(path),
        }
    }
}

impl Default for Root {
    fn default() -> Self {
        Root(PathBuf::from("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_land_under_the_root() {
        assert_eq!(
            Root::default().resolve(Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
        assert_eq!(
            Root::new("/tmp/ov").resolve(Path::new("/etc/ember/node.conf")),
            PathBuf::from("/tmp/ov/etc/ember/node.conf")
        );
    }
}
