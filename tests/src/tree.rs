//! Compares two directory trees the way an extraction must reproduce its
//! source: type, content, mode (with setuid/setgid/sticky), uid/gid, mtime,
//! symlink target, device numbers, hard-link identity and xattrs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Which properties to compare (all by default).
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    pub xattrs: bool,
    /// Compare nanoseconds of mtimes, not only seconds.
    pub mtime_nanos: bool,
    pub symlink_mtimes: bool,
    /// Compare the roots' own metadata too (the archive had a `./` member).
    pub root: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            xattrs: true,
            mtime_nanos: true,
            symlink_mtimes: true,
            root: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Char(u64),
    Block(u64),
    Fifo,
    Socket,
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    /// The first path (in sorted order) sharing this inode: hard-link identity.
    link_leader: PathBuf,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(p, &mut names[..]) {
        Ok(n) => n,
        Err(_) => return out,
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::lgetxattr(p, name, &mut val[..]) {
            val.truncate(len);
            out.insert(name.to_vec(), val);
        }
    }
    out
}

fn scan(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut raw: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let md = std::fs::symlink_metadata(&abs)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", abs.display()));
        if md.is_dir() {
            for e in std::fs::read_dir(&abs).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        raw.push((rel, md));
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let mut leaders: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (rel, md) in raw {
        let abs = root.join(&rel);
        let ft = md.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink(
                std::fs::read_link(&abs)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_char_device() {
            Kind::Char(md.rdev())
        } else if ft.is_block_device() {
            Kind::Block(md.rdev())
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let leader = if ft.is_dir() {
            rel.clone()
        } else {
            leaders
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                size: md.len(),
                link_leader: leader,
                xattrs: xattrs(&abs),
            },
        );
    }
    out
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Every difference between `expected` (the source) and `actual` (the
/// extraction), one line each; empty when the trees match.
pub fn diff(expected: &Path, actual: &Path, cmp: Compare) -> Vec<String> {
    let (e, a) = (scan(expected), scan(actual));
    let mut out = Vec::new();
    for p in e.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("missing: {}", p.display()));
    }
    for p in a.keys().filter(|p| !e.contains_key(*p)) {
        out.push(format!("unexpected: {}", p.display()));
    }
    for (p, en) in &e {
        let Some(an) = a.get(p) else { continue };
        let is_root = p.as_os_str().is_empty();
        let name = if is_root {
            ".".to_string()
        } else {
            p.display().to_string()
        };
        let mut d = |what: &str, x: String, y: String| {
            if x != y {
                out.push(format!("{name}: {what}: expected {x}, got {y}"));
            }
        };
        match (&en.kind, &an.kind) {
            (Kind::Symlink(x), Kind::Symlink(y)) => d(
                "symlink target",
                String::from_utf8_lossy(x).into_owned(),
                String::from_utf8_lossy(y).into_owned(),
            ),
            (x, y) => d("type", format!("{x:?}"), format!("{y:?}")),
        }
        if en.kind != an.kind || (is_root && !cmp.root) {
            continue;
        }
        let is_link = matches!(en.kind, Kind::Symlink(_));
        if !is_link {
            d("mode", format!("{:o}", en.mode), format!("{:o}", an.mode));
        }
        d(
            "owner",
            format!("{}:{}", en.uid, en.gid),
            format!("{}:{}", an.uid, an.gid),
        );
        if !is_link || cmp.symlink_mtimes {
            let (em, am) = if cmp.mtime_nanos {
                (en.mtime, an.mtime)
            } else {
                ((en.mtime.0, 0), (an.mtime.0, 0))
            };
            d("mtime", format!("{em:?}"), format!("{am:?}"));
        }
        d(
            "hard-link group",
            en.link_leader.display().to_string(),
            an.link_leader.display().to_string(),
        );
        if cmp.xattrs && !is_link {
            d(
                "xattrs",
                format!("{:?}", en.xattrs),
                format!("{:?}", an.xattrs),
            );
        }
        if en.kind == Kind::File {
            d("size", en.size.to_string(), an.size.to_string());
            if en.size == an.size && !same_content(&expected.join(p), &actual.join(p)) {
                out.push(format!("{name}: content differs"));
            }
        }
    }
    out
}

/// Panics with the list of differences unless the trees match.
pub fn assert_same(expected: &Path, actual: &Path, cmp: Compare, what: &str) {
    let d = diff(expected, actual, cmp);
    assert!(
        d.is_empty(),
        "{what}: extracted tree differs from its source:\n  {}",
        d.join("\n  ")
    );
}
