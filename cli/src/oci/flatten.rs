//! Flattening layers into one tree, in order, with OCI whiteouts:
//! `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` empties
//! its directory of what the layers below put there. A whiteout never hides
//! entries of its own layer, so each layer's deletions are applied before
//! its additions.

use std::io::Read;

use ember_fs::tar::{self, Entry, ErrorKind, Extractor, Kind, Limits, Sink};

use super::layout::{Layout, ResolvedImage};
use super::spec::{self, Descriptor, LayerEncoding};
use super::Error;
use crate::initrd::{Node, Tree};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// aufs bookkeeping names (`.wh..wh.plnk`, ...) that carry no meaning here.
const AUFS_META: &str = ".wh..wh.";

/// What flattening did, for the caller to print.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlattenReport {
    pub layers: usize,
    /// Members added (files, directories, links, devices).
    pub members: usize,
    pub whiteouts: usize,
    pub opaque_dirs: usize,
    /// Members whose uid/gid was not 0: the tree records no owners, so
    /// they become root-owned in the initrd.
    pub non_root_owned: usize,
    /// Members of types the tar reader skips (sparse files, labels).
    pub skipped: usize,
}

/// One member of a layer, owned.
#[derive(Debug)]
struct Member {
    path: String,
    kind: Kind,
    mode: u32,
    link: String,
    data: Vec<u8>,
    dev: (u32, u32),
    owned_by_root: bool,
}

/// Collects a layer's members in archive order.
#[derive(Default)]
struct Collect {
    members: Vec<Member>,
    current: Option<Member>,
    bad_name: Option<String>,
    skipped: usize,
}

impl Sink for Collect {
    fn begin(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let (Ok(path), Ok(link)) = (
            std::str::from_utf8(entry.path),
            std::str::from_utf8(entry.link),
        ) else {
            // Remembered and reported as our own error after the stream ends;
            // ErrorKind has no variant for it and inventing one is not ours.
            self.bad_name
                .get_or_insert_with(|| String::from_utf8_lossy(entry.path).into_owned());
            self.current = None;
            return Ok(());
        };
        let m = &entry.meta;
        self.current = Some(Member {
            path: path.to_string(),
            kind: m.kind,
            mode: m.mode & 0o7777,
            link: link.to_string(),
            data: Vec::with_capacity(usize::try_from(m.size).unwrap_or(0).min(64 << 20)),
            dev: (m.dev_major, m.dev_minor),
            owned_by_root: m.uid == 0 && m.gid == 0,
        });
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        if let Some(m) = &mut self.current {
            m.data.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn end(&mut self, _entry: &Entry<'_>) -> Result<(), ErrorKind> {
        if let Some(m) = self.current.take() {
            self.members.push(m);
        }
        Ok(())
    }

    fn skipped(&mut self, _name: &[u8], _typeflag: u8) {
        self.skipped += 1;
    }
}

/// Flattens the image a layout reference names into a tree.
/// Layers apply bottom first onto an empty tree.
pub fn flatten(layout: &Layout, image: &ResolvedImage) -> Result<(Tree, FlattenReport), Error> {
    let mut tree = Tree::new();
    let mut report = FlattenReport::default();
    for desc in &image.manifest.layers {
        let collected = read_layer(layout, desc)?;
        report.layers += 1;
        report.skipped += collected.skipped;
        apply_layer(&mut tree, collected.members, &mut report)?;
    }
    Ok((tree, report))
}

/// Streams one layer blob through the tar reader, checking its digest,
/// size and that its compression matches the media type.
fn read_layer(layout: &Layout, desc: &Descriptor) -> Result<Collect, Error> {
    let encoding =
        spec::layer_encoding(&desc.media_type).ok_or_else(|| Error::UnsupportedMediaType {
            media_type: desc.media_type.clone(),
        })?;
    let (digest, path) = layout.blob_path(desc)?;
    let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut ex = Extractor::new(Collect::default(), Limits::default());
    let mut buf = vec![0u8; 256 * 1024];
    let layer_err = |source: tar::Error| Error::Layer {
        digest: desc.digest.clone(),
        source,
    };
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(&path, e))?;
        if n == 0 {
            break;
        }
        ex.write(&buf[..n]).map_err(layer_err)?;
    }
    let summary = ex.finish().map_err(layer_err)?;
    if summary.stream_bytes != desc.size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: summary.stream_bytes,
        });
    }
    if summary.sha256 != digest.raw() {
        return Err(Error::DigestMismatch {
            digest: desc.digest.clone(),
            actual: crate::initrd::hex(&summary.sha256),
        });
    }
    if summary.gzip != (encoding == LayerEncoding::Gzip) {
        return Err(Error::CompressionMismatch {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        });
    }
    let collected = ex.into_sink();
    if let Some(path) = collected.bad_name {
        return Err(Error::NonUtf8Path { path });
    }
    Ok(collected)
}

/// What a member name means to the overlay.
enum Role<'a> {
    /// `.wh..wh..opq`: empty the (lower) directory.
    Opaque {
        dir: &'a str,
    },
    /// `.wh.NAME`: delete the (lower) path.
    Whiteout {
        target: String,
    },
    /// aufs metadata: ignored.
    AufsMeta,
    Member,
}

fn role(path: &str) -> Role<'_> {
    let (dir, base) = match path.rsplit_once('/') {
        Some((d, b)) => (d, b),
        None => ("", path),
    };
    if base == OPAQUE {
        Role::Opaque { dir }
    } else if base.starts_with(AUFS_META) {
        Role::AufsMeta
    } else if let Some(name) = base.strip_prefix(WHITEOUT) {
        let target = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        Role::Whiteout { target }
    } else {
        Role::Member
    }
}

fn apply_layer(
    tree: &mut Tree,
    members: Vec<Member>,
    report: &mut FlattenReport,
) -> Result<(), Error> {
    // Deletions first: they only concern lower layers.
    for m in &members {
        match role(&m.path) {
            Role::Opaque { dir } => {
                report.opaque_dirs += 1;
                tree.clear_dir(dir);
            }
            Role::Whiteout { target } if !target.ends_with('/') && !target.is_empty() => {
                report.whiteouts += 1;
                tree.remove(&target);
            }
            Role::Whiteout { .. } => {
                return Err(Error::Tree {
                    path: m.path.clone(),
                    reason: "whiteout names nothing".to_string(),
                })
            }
            Role::AufsMeta | Role::Member => {}
        }
    }
    for m in members {
        if !matches!(role(&m.path), Role::Member) || m.path.is_empty() {
            // The root entry (`./`) has no place in the tree: the initrd's
            // root is the kernel's rootfs.
            continue;
        }
        report.members += 1;
        if !m.owned_by_root {
            report.non_root_owned += 1;
        }
        let node = match m.kind {
            Kind::Directory => Node::Dir { mode: m.mode },
            Kind::File => Node::File {
                data: m.data,
                mode: m.mode,
            },
            Kind::Symlink => Node::Symlink { target: m.link },
            Kind::Hardlink => match tree.get(&m.link) {
                Some(node @ Node::File { .. }) => node.clone(),
                _ => {
                    return Err(Error::HardlinkTarget {
                        path: m.path,
                        target: m.link,
                    })
                }
            },
            Kind::CharDevice => Node::CharDevice {
                major: m.dev.0,
                minor: m.dev.1,
                mode: m.mode,
            },
            Kind::BlockDevice => Node::BlockDevice {
                major: m.dev.0,
                minor: m.dev.1,
                mode: m.mode,
            },
            Kind::Fifo => Node::Fifo { mode: m.mode },
        };
        place(tree, &m.path, node)?;
    }
    Ok(())
}

/// Puts a node where a member says, replacing what lower layers had there:
/// a non-directory replaces a whole directory subtree; a directory over a
/// directory only updates its mode.
fn place(tree: &mut Tree, path: &str, node: Node) -> Result<(), Error> {
    let is_dir = matches!(node, Node::Dir { .. });
    match tree.get(path) {
        Some(Node::Dir { .. }) if !is_dir => tree.remove(path),
        Some(existing) if is_dir && !matches!(existing, Node::Dir { .. }) => tree.remove(path),
        _ => {}
    }
    tree.insert(path, node).map_err(|e| Error::Tree {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> Member {
        Member {
            path: path.into(),
            kind: Kind::File,
            mode: 0o644,
            link: String::new(),
            data: data.to_vec(),
            dev: (0, 0),
            owned_by_root: true,
        }
    }

    fn dir(path: &str) -> Member {
        Member {
            kind: Kind::Directory,
            mode: 0o755,
            ..file(path, b"")
        }
    }

    fn paths(t: &Tree) -> Vec<&str> {
        t.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn whiteout_removes_lower_file_and_subtree() {
        let mut t = Tree::new();
        let mut r = FlattenReport::default();
        apply_layer(
            &mut t,
            vec![
                dir("etc"),
                file("etc/a", b"1"),
                dir("opt/x"),
                file("opt/x/y", b"2"),
            ],
            &mut r,
        )
        .unwrap();
        apply_layer(
            &mut t,
            vec![file("etc/.wh.a", b""), file("opt/.wh.x", b"")],
            &mut r,
        )
        .unwrap();
        assert_eq!(paths(&t), ["etc", "opt"]);
        assert_eq!(r.whiteouts, 2);
    }

    #[test]
    fn whiteout_does_not_hide_its_own_layer() {
        let mut t = Tree::new();
        let mut r = FlattenReport::default();
        apply_layer(&mut t, vec![file("a", b"old")], &mut r).unwrap();
        // Same layer: a new `a` and a whiteout of `a`, in either order.
        apply_layer(&mut t, vec![file("a", b"new"), file(".wh.a", b"")], &mut r).unwrap();
        assert_eq!(
            t.get("a"),
            Some(&Node::File {
                data: b"new".to_vec(),
                mode: 0o644
            })
        );
    }

    #[test]
    fn opaque_dir_hides_lower_children_but_keeps_upper_ones() {
        let mut t = Tree::new();
        let mut r = FlattenReport::default();
        apply_layer(
            &mut t,
            vec![
                dir("d"),
                file("d/lower", b"1"),
                dir("d/sub"),
                file("d/sub/deep", b"2"),
                file("dx", b"3"),
            ],
            &mut r,
        )
        .unwrap();
        apply_layer(
            &mut t,
            vec![file("d/upper", b"4"), file("d/.wh..wh..opq", b"")],
            &mut r,
        )
        .unwrap();
        assert_eq!(paths(&t), ["d", "d/upper", "dx"]);
        assert_eq!(r.opaque_dirs, 1);
    }

    #[test]
    fn file_replaces_lower_directory_and_directory_replaces_file() {
        let mut t = Tree::new();
        let mut r = FlattenReport::default();
        apply_layer(
            &mut t,
            vec![dir("x"), file("x/in", b""), file("y", b"")],
            &mut r,
        )
        .unwrap();
        apply_layer(&mut t, vec![file("x", b"now a file"), dir("y")], &mut r).unwrap();
        assert_eq!(paths(&t), ["x", "y"]);
        assert!(matches!(t.get("y"), Some(Node::Dir { .. })));
    }

    #[test]
    fn hard_link_copies_its_target_and_missing_target_is_an_error() {
        let mut t = Tree::new();
        let mut r = FlattenReport::default();
        let link = Member {
            kind: Kind::Hardlink,
            link: "bin/busybox".into(),
            ..file("bin/sh", b"")
        };
        apply_layer(&mut t, vec![file("bin/busybox", b"elf"), link], &mut r).unwrap();
        assert_eq!(t.get("bin/sh"), t.get("bin/busybox"));
        let dangling = Member {
            kind: Kind::Hardlink,
            link: "nope".into(),
            ..file("bin/ls", b"")
        };
        assert!(matches!(
            apply_layer(&mut t, vec![dangling], &mut r),
            Err(Error::HardlinkTarget { .. })
        ));
    }

    #[test]
    fn non_root_owners_are_counted() {
        let mut t = Tree::new();
        let mut r = FlattenReport::default();
        let m = Member {
            owned_by_root: false,
            ..file("home/user/x", b"")
        };
        apply_layer(&mut t, vec![m], &mut r).unwrap();
        assert_eq!(r.non_root_owned, 1);
    }
}
