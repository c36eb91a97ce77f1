//! An in-memory file tree with deterministic order and inode numbers.

use std::collections::BTreeMap;

use anyhow::bail;
use ember_fs::cpio::{self, mode, Header, Output};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32, mode: u32 },
    BlockDevice { major: u32, minor: u32, mode: u32 },
    Fifo { mode: u32 },
}

/// Paths (relative, no leading `/`) to nodes, sorted bytewise so that a
/// parent always precedes its children.
#[derive(Default, Debug)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Self {
        Tree::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Adds a directory (and its parents); an existing directory is kept.
    pub fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        match self.nodes.get(&path) {
            Some(Node::Dir { .. }) => Ok(()),
            Some(_) => bail!("{path}: exists and is not a directory"),
            None => {
                self.nodes.insert(path, Node::Dir { mode });
                Ok(())
            }
        }
    }

    pub fn set_mode(&mut self, path: &str, new_mode: u32) -> anyhow::Result<()> {
        match self.nodes.get_mut(path) {
            Some(Node::Dir { mode } | Node::File { mode, .. }) => {
                *mode = new_mode;
                Ok(())
            }
            _ => bail!("{path}: no such directory or file"),
        }
    }

    /// Adds or replaces a node, creating missing parent directories (0755).
    pub fn insert(&mut self, path: &str, node: Node) -> anyhow::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        if let (Some(Node::Dir { .. }), false) =
            (self.nodes.get(&path), matches!(node, Node::Dir { .. }))
        {
            bail!("{path}: a directory is in the way");
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Removes a path and everything below it.
    pub fn remove(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|k, _| k != path && !k.starts_with(&prefix));
    }

    /// Removes everything below a directory, keeping the directory.
    pub fn clear_dir(&mut self, path: &str) {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        self.nodes
            .retain(|k, _| !k.starts_with(&prefix) || k.as_str() == path);
    }

    fn parents(&mut self, path: &str) -> anyhow::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.nodes.get(parent) {
                Some(Node::Dir { .. }) => {}
                Some(_) => bail!("{path}: parent {parent} is not a directory"),
                None => {
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { mode: 0o755 });
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Writes every node in path order with inode numbers 1, 2, ...
    pub fn write_cpio<O: Output>(
        &self,
        mut w: cpio::Writer<O>,
        mtime: u32,
    ) -> anyhow::Result<cpio::Writer<O>> {
        for (i, (path, node)) in self.nodes.iter().enumerate() {
            let ino = u32::try_from(i + 1)?;
            let (m, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir { mode: p } => (mode::S_IFDIR | p, &[], (0, 0)),
                Node::File { data, mode: p } => (mode::S_IFREG | p, data, (0, 0)),
                Node::Symlink { target } => (mode::S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
                Node::CharDevice {
                    major,
                    minor,
                    mode: p,
                } => (mode::S_IFCHR | p, &[], (*major, *minor)),
                Node::BlockDevice {
                    major,
                    minor,
                    mode: p,
                } => (mode::S_IFBLK | p, &[], (*major, *minor)),
                Node::Fifo { mode: p } => (mode::S_IFIFO | p, &[], (0, 0)),
            };
            let mut header = Header::new(path, ino, m, mtime);
            header.rdev_major = rdev.0;
            header.rdev_minor = rdev.1;
            w.entry(&header, data)?;
        }
        Ok(w)
    }
}

fn normalize(path: &str) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("{path}: `..` is not allowed in initrd paths"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!("{path:?}: empty path");
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::new();
        t.insert(
            "a/b/c",
            Node::File {
                data: b"x".to_vec(),
                mode: 0o644,
            },
        )
        .unwrap();
        t.insert("a-b", Node::Fifo { mode: 0o600 }).unwrap();
        let paths: Vec<&String> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["a", "a-b", "a/b", "a/b/c"]);
    }

    #[test]
    fn dotdot_is_refused() {
        let mut t = Tree::new();
        assert!(t.insert("../etc/passwd", Node::Fifo { mode: 0 }).is_err());
    }

    #[test]
    fn file_under_file_is_refused() {
        let mut t = Tree::new();
        t.insert(
            "f",
            Node::File {
                data: vec![],
                mode: 0o644,
            },
        )
        .unwrap();
        assert!(t
            .insert(
                "f/g",
                Node::File {
                    data: vec![],
                    mode: 0o644
                }
            )
            .is_err());
    }
}
