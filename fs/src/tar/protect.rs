//! Which parts of the extraction root an overlay may not touch.
//!
//! The overlay is extracted into the node's `/`, where the kernel's
//! filesystems (/proc, /sys, /dev) and the init's own state (/boot holds the
//! initrd and kernel last-known-good copies to the ESP; /run/ember holds the
//! sealed overlay) live beside the files the overlay should add. A
//! [`Protection`] names those areas; [`super::FsSink::protect`] enforces it
//! twice: lexically on every entry name and link target (a clear refusal
//! naming the entry, before anything is created), and on the real location
//! of every directory the sink opens (its mount and its path), so a symlink
//! that already exists in the root cannot lead an entry there either.

use alloc::vec::Vec;

/// Paths (relative to the root, normalized, no leading `/`) that no entry
/// may be at or under, and whether entries may leave the root's mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    pub paths: &'static [&'static str],
    /// Refuse any directory on a different mount than the root (what makes
    /// /proc, /sys, /dev and everything under /run unreachable in the init,
    /// whatever the name used to get there).
    pub same_mount: bool,
}

impl Protection {
    /// The node's system areas: what the init passes when extracting the
    /// overlay into `/`.
    /// The initrd's trust files are among them (the manifest key and the
    /// boot server's CA): the overlay is what they judge, so it must not
    /// replace them, nor the folders that lead to them ([`Self::shadowing`]).
    /// The rest of /etc/ember (node.conf and what it names) is the
    /// overlay's to write.
    pub const SYSTEM: Protection = Protection {
        paths: &[
            "proc",
            "sys",
            "dev",
            "boot",
            "run/ember",
            "etc/ember/manifest.pub",
            "etc/ember/ca.pem",
        ],
        same_mount: true,
    };

    /// The protected path that `path` (normalized, relative) is at or
    /// under, if any.
    pub fn covering(&self, path: &[u8]) -> Option<&'static str> {
        self.paths.iter().copied().find(|p| {
            let p = p.as_bytes();
            path.starts_with(p) && (path.len() == p.len() || path[p.len()] == b'/')
        })
    }
}

impl Protection {
    /// The protected path that `path` (normalized, relative) leads to: one
    /// strictly under it. Only a directory may stand there; a file or a
    /// symlink in its place would replace the protected path by another.
    pub fn shadowing(&self, path: &[u8]) -> Option<&'static str> {
        if path.is_empty() {
            return None;
        }
        self.paths.iter().copied().find(|p| {
            let p = p.as_bytes();
            p.len() > path.len() && p.starts_with(path) && p[path.len()] == b'/'
        })
    }
}

/// Where a symlink at `entry` (normalized, relative) pointing to `target`
/// lands, lexically, with the root acting as `/` (`..` stops at the root):
/// written to `out` normalized. Symlinks inside the target are not
/// followed; the sink's real-location check covers those.
pub fn symlink_destination(entry: &[u8], target: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if target.first() != Some(&b'/') {
        if let Some(i) = entry.iter().rposition(|&b| b == b'/') {
            out.extend_from_slice(&entry[..i]);
        }
    }
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                let keep = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(keep);
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_areas_cover_themselves_and_what_is_under_them_only() {
        let p = Protection::SYSTEM;
        assert_eq!(p.covering(b"proc"), Some("proc"));
        assert_eq!(p.covering(b"sys/kernel/uevent_helper"), Some("sys"));
        assert_eq!(p.covering(b"run/ember/overlay.sealed"), Some("run/ember"));
        assert_eq!(p.covering(b"boot/initrd.cpio"), Some("boot"));
        assert_eq!(p.covering(b"run"), None);
        assert_eq!(p.covering(b"run/embers"), None);
        assert_eq!(p.covering(b"bootstrap/x"), None);
        assert_eq!(p.covering(b"etc/boot"), None);
        assert_eq!(p.covering(b""), None);
        assert_eq!(
            p.covering(b"etc/ember/manifest.pub"),
            Some("etc/ember/manifest.pub")
        );
        assert_eq!(p.covering(b"etc/ember/ca.pem"), Some("etc/ember/ca.pem"));
        // The overlay's own files under /etc/ember stay writable.
        assert_eq!(p.covering(b"etc/ember/node.conf"), None);
        assert_eq!(p.covering(b"etc/ember"), None);
    }

    #[test]
    fn the_folders_leading_to_a_trust_file_are_shadowing_it() {
        let p = Protection::SYSTEM;
        assert_eq!(p.shadowing(b"etc"), Some("etc/ember/manifest.pub"));
        assert_eq!(p.shadowing(b"etc/ember"), Some("etc/ember/manifest.pub"));
        assert_eq!(p.shadowing(b"run"), Some("run/ember"));
        assert_eq!(p.shadowing(b"etc/ember/manifest.pub"), None);
        assert_eq!(p.shadowing(b"etc/embers"), None);
        assert_eq!(p.shadowing(b"et"), None);
        assert_eq!(p.shadowing(b""), None);
    }

    #[test]
    fn symlink_targets_resolve_from_the_link_with_the_root_as_slash() {
        let dest = |entry: &[u8], target: &[u8]| {
            let mut v = Vec::new();
            symlink_destination(entry, target, &mut v);
            v
        };
        assert_eq!(dest(b"etc/evil", b"/boot"), b"boot");
        assert_eq!(dest(b"etc/evil", b"../boot/x"), b"boot/x");
        assert_eq!(dest(b"etc/evil", b"../../../../run/ember"), b"run/ember");
        assert_eq!(dest(b"a/b/c", b"./d/../e"), b"a/b/e");
        assert_eq!(dest(b"top", b"x"), b"x");
        assert_eq!(dest(b"top", b".."), b"");
        assert_eq!(dest(b"var/run", b"../run"), b"run");
    }
}
