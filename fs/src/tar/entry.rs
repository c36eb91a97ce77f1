//! What the state machine hands a [`super::Sink`]: one archive member with
//! its name already normalized and confined, its type and its metadata.

use super::error::ErrorKind;
use super::pax;

/// Seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    /// A hard link to an earlier member, named by [`Entry::link`].
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// Scalar metadata of an entry (copied, so a sink can keep it cheaply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    /// Bytes of data that follow (files); 0 for the other kinds.
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
}

/// One archive member. `path` is relative to the extraction root, has no
/// empty, `.` or `..` components, no leading or trailing `/`; the empty path
/// is the root itself.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub path: &'a [u8],
    /// Symlink target (as stored) or hard-link target (normalized like `path`).
    pub link: &'a [u8],
    pub meta: Meta,
    pub(crate) global_pax: &'a [u8],
    pub(crate) local_pax: &'a [u8],
}

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

impl<'a> Entry<'a> {
    /// Extended attributes from pax `SCHILY.xattr.*` records (global first,
    /// then the entry's own), as `(name, value)`.
    pub fn xattrs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        pax::Records::new(self.global_pax)
            .chain(pax::Records::new(self.local_pax))
            .filter_map(Result::ok)
            .filter_map(|(k, v)| k.strip_prefix(XATTR_PREFIX).map(|name| (name, v)))
            .filter(|(name, _)| !name.is_empty())
    }
}

/// Appends the confined form of `name` to `out`: empty and `.` components
/// dropped; `..` and absolute names refused.
pub fn normalize_into(out: &mut alloc::vec::Vec<u8>, name: &[u8]) -> Result<(), ErrorKind> {
    if name.first() == Some(&b'/') {
        return Err(ErrorKind::AbsolutePath);
    }
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(ErrorKind::PathEscapes),
            c => {
                if c.contains(&0) {
                    return Err(ErrorKind::EmptyName);
                }
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn norm(n: &[u8]) -> Result<Vec<u8>, ErrorKind> {
        let mut v = Vec::new();
        normalize_into(&mut v, n).map(|_| v)
    }

    #[test]
    fn dot_and_empty_components_vanish() {
        assert_eq!(norm(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(norm(b"./").unwrap(), b"");
    }

    #[test]
    fn dotdot_and_absolute_names_are_refused() {
        assert_eq!(norm(b"a/../../etc"), Err(ErrorKind::PathEscapes));
        assert_eq!(norm(b"a/.."), Err(ErrorKind::PathEscapes));
        assert_eq!(norm(b"/etc/passwd"), Err(ErrorKind::AbsolutePath));
        assert_eq!(norm(b"a..b/..c").unwrap(), b"a..b/..c");
    }
}
