//! Flattening layers into one tree, in order, with OCI whiteouts:
//! `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` empties
//! its directory of what the layers below put there. A whiteout never hides
//! entries of its own layer, so each layer's deletions are applied before
//! its additions.
//!
//! Layers are read with the `tar` crate rather than ember-fs's node-side
//! extractor: real producers (umoci, Go's archive/tar) write the root as an
//! absolute `/` member, which the node's confined extractor rightly refuses,
//! while here it only means "the root directory".

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest as _, Sha256};

use super::layout::{Layout, ResolvedImage};
use super::spec::{self, Descriptor, LayerEncoding};
use super::Error;
use crate::initrd::{Node, Tree};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// aufs bookkeeping names (`.wh..wh.plnk`, ...) that carry no meaning here.
const AUFS_META: &str = ".wh..wh.";
/// Uncompressed bytes one layer may hold (a decompression-bomb guard; the
/// whole tree is held in memory).
const MAX_LAYER_BYTES: u64 = 8 << 30;

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
    /// Members of types an initrd cannot hold (GNU sparse files, ...).
    pub skipped: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Directory,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One member of a layer, owned, its path normalized (relative, no `.`
/// or empty components; empty for the root itself).
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

/// Flattens the image `reference` names (the only one when `None`) of the
/// layout at `path` into a tree, for `ember initrd build --from-oci`, and
/// says on stderr what flattening did.
pub fn flatten_layout(path: &Path, reference: Option<&str>) -> anyhow::Result<Tree> {
    let layout = Layout::open(path)?;
    let image = layout
        .resolve(reference)
        .with_context(|| format!("reading {}", path.display()))?;
    let (tree, report) = flatten(&layout, &image)?;
    eprintln!(
        "{} ({}): {} layers, {} members, {} whiteouts, {} opaque dirs",
        path.display(),
        image.manifest_digest,
        report.layers,
        report.members,
        report.whiteouts,
        report.opaque_dirs
    );
    if report.non_root_owned > 0 {
        eprintln!(
            "warning: {} members were not owned by root; the initrd makes them root-owned",
            report.non_root_owned
        );
    }
    if report.skipped > 0 {
        eprintln!(
            "warning: {} members of unsupported types were skipped",
            report.skipped
        );
    }
    Ok(tree)
}

/// Layers apply bottom first onto an empty tree.
pub fn flatten(layout: &Layout, image: &ResolvedImage) -> Result<(Tree, FlattenReport), Error> {
    let mut tree = Tree::new();
    let mut report = FlattenReport::default();
    for desc in &image.manifest.layers {
        let (members, skipped) = read_layer(layout, desc)?;
        report.layers += 1;
        report.skipped += skipped;
        apply_layer(&mut tree, members, &mut report)?;
    }
    Ok((tree, report))
}

/// Hashes and counts every byte read through it: the blob's digest.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads one layer blob: its compression must match the media type, its
/// bytes its descriptor's size and digest (checked after the whole blob was
/// read, before any member is used).
fn read_layer(layout: &Layout, desc: &Descriptor) -> Result<(Vec<Member>, usize), Error> {
    let encoding =
        spec::layer_encoding(&desc.media_type).ok_or_else(|| Error::UnsupportedMediaType {
            media_type: desc.media_type.clone(),
        })?;
    let (digest, path) = layout.blob_path(desc)?;
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| Error::io(&path, e))?;
    let is_gzip = head.starts_with(&[0x1f, 0x8b]);
    if is_gzip != (encoding == LayerEncoding::Gzip) {
        return Err(Error::CompressionMismatch {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        });
    }
    let mut hashing = Hashing {
        inner: reader,
        sha: Sha256::new(),
        bytes: 0,
    };
    let tar_err = |source: std::io::Error| Error::LayerTar {
        digest: desc.digest.clone(),
        source,
    };
    let (members, skipped) = if is_gzip {
        let mut gz = flate2::read::MultiGzDecoder::new(&mut hashing);
        let r = read_members(&mut gz, desc)?;
        // Whatever follows the tar end marker inside the gzip stream.
        std::io::copy(&mut gz, &mut std::io::sink()).map_err(tar_err)?;
        r
    } else {
        read_members(&mut hashing, desc)?
    };
    // The tar reader may stop before the blob's end (padding): hash it all.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| Error::io(&path, e))?;
    if hashing.bytes != desc.size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: hashing.bytes,
        });
    }
    let actual = super::digest::Digest::from_raw(&hashing.sha.finalize().into());
    if actual != digest {
        return Err(Error::DigestMismatch {
            digest: desc.digest.clone(),
            actual: actual.hex().to_string(),
        });
    }
    Ok((members, skipped))
}

/// Completes a tar stream that stops right after its last member's data:
/// umoci 0.4 writes layers without the final padding and end-of-archive
/// blocks. At EOF it supplies the zeros up to the block boundary and the
/// two end blocks, and remembers where the real bytes ended, so that the
/// caller can refuse a member whose data the zeros would have made up.
struct Complete<R> {
    inner: R,
    real: u64,
    fill: Option<u64>,
}

impl<R: Read> Read for Complete<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(left) = &mut self.fill {
            let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            buf[..n].fill(0);
            *left -= n as u64;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.fill = Some((512 - self.real % 512) % 512 + 1024);
            return self.read(buf);
        }
        self.real += n as u64;
        Ok(n)
    }
}

fn read_members<R: Read>(r: R, desc: &Descriptor) -> Result<(Vec<Member>, usize), Error> {
    let tar_err = |source: std::io::Error| Error::LayerTar {
        digest: desc.digest.clone(),
        source,
    };
    let mut archive = tar::Archive::new(Complete {
        inner: r,
        real: 0,
        fill: None,
    });
    let mut members = Vec::new();
    let mut skipped = 0;
    let mut total: u64 = 0;
    // Where the last member's data ends in the stream.
    let mut data_end: u64 = 0;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let header = entry.header();
        use tar::EntryType as T;
        let kind = match header.entry_type() {
            T::Regular | T::Continuous => Kind::File,
            T::Directory => Kind::Directory,
            T::Symlink => Kind::Symlink,
            T::Link => Kind::Hardlink,
            T::Char => Kind::CharDevice,
            T::Block => Kind::BlockDevice,
            T::Fifo => Kind::Fifo,
            _ => {
                skipped += 1;
                continue;
            }
        };
        let mode = header.mode().map_err(tar_err)? & 0o7777;
        let owned_by_root =
            header.uid().map_err(tar_err)? == 0 && header.gid().map_err(tar_err)? == 0;
        let dev = match kind {
            Kind::CharDevice | Kind::BlockDevice => (
                header.device_major().map_err(tar_err)?.unwrap_or(0),
                header.device_minor().map_err(tar_err)?.unwrap_or(0),
            ),
            _ => (0, 0),
        };
        let raw_path = entry.path_bytes().into_owned();
        let path = normalize(&raw_path)?;
        let raw_link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let link = match kind {
            Kind::Hardlink => normalize(&raw_link)?,
            _ => utf8(&raw_link)?.to_string(),
        };
        let mut data = Vec::new();
        if kind == Kind::File {
            total = total.saturating_add(entry.size());
            if total > MAX_LAYER_BYTES {
                return Err(Error::LayerTooLarge {
                    digest: desc.digest.clone(),
                    limit: MAX_LAYER_BYTES,
                });
            }
            data_end = data_end.max(entry.raw_file_position() + entry.size());
            entry.read_to_end(&mut data).map_err(tar_err)?;
        }
        members.push(Member {
            path,
            kind,
            mode,
            link,
            data,
            dev,
            owned_by_root,
        });
    }
    let real = archive.into_inner().real;
    if data_end > real {
        return Err(tar_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("member data runs to byte {data_end}, the layer ends at {real}"),
        )));
    }
    Ok((members, skipped))
}

fn utf8(raw: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(raw).map_err(|_| Error::NonUtf8Path {
        path: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// A member name as a tree path: leading `/`, `.` and empty components
/// dropped (`/`, `./` and `` are the root); `..` refused.
fn normalize(raw: &[u8]) -> Result<String, Error> {
    let name = utf8(raw)?;
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::PathEscapes {
                    path: name.to_string(),
                })
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
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

    fn desc() -> Descriptor {
        Descriptor {
            media_type: spec::media::LAYER_TAR.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 0,
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        }
    }

    /// A one-file ustar stream: header, then `data`, nothing after.
    fn bare_tar(name: &str, data: &[u8], size: usize) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn layer_without_padding_or_end_blocks_is_read_as_umoci_writes_it() {
        let (members, _) = read_members(&bare_tar("etc/motd", b"new\n", 4)[..], &desc()).unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].data, b"new\n");
    }

    #[test]
    fn layer_cut_inside_member_data_is_refused() {
        let cut = bare_tar("etc/motd", b"ne", 4);
        assert!(matches!(
            read_members(&cut[..], &desc()),
            Err(Error::LayerTar { .. })
        ));
    }

    #[test]
    fn absolute_and_dotted_names_are_relative_and_dotdot_is_refused() {
        assert_eq!(normalize(b"/").unwrap(), "");
        assert_eq!(normalize(b"./etc//hosts").unwrap(), "etc/hosts");
        assert_eq!(normalize(b"/usr/bin/").unwrap(), "usr/bin");
        assert!(matches!(
            normalize(b"a/../../etc"),
            Err(Error::PathEscapes { .. })
        ));
        assert!(matches!(
            normalize(&[0x66, 0xff]),
            Err(Error::NonUtf8Path { .. })
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
