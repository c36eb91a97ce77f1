//! The API filesystems every later phase needs, mounted idempotently: a
//! target that is already a mount point (a re-exec, or a kernel that did it)
//! is left as it is.

use alloc::string::String;
use alloc::vec::Vec;

use rustix::fs::{mkdir, Mode};
use rustix::io::Errno;
use rustix::mount::{mount, MountFlags};

use crate::fsutil;
use crate::{Error, ErrorKind};

struct Spec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
    data: &'static core::ffi::CStr,
    /// Mounted only when the kernel supports the filesystem type.
    optional: bool,
}

const fn spec(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
    data: &'static core::ffi::CStr,
    optional: bool,
) -> Spec {
    Spec {
        source,
        target,
        fstype,
        flags,
        data,
        optional,
    }
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);
const NOSUID_NODEV: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);

/// In order: /proc first (it tells what is already mounted), /dev before
/// /dev/pts, /sys before its children.
const EARLY: &[Spec] = &[
    spec("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, c"", false),
    spec("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, c"", false),
    spec(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        c"mode=0755",
        false,
    ),
    spec(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID.union(MountFlags::NOEXEC),
        c"gid=5,mode=0620,ptmxmode=0666",
        false,
    ),
    spec(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        NOSUID_NODEV,
        c"mode=1777",
        false,
    ),
    spec("tmpfs", "/run", "tmpfs", NOSUID_NODEV, c"mode=0755", false),
    spec("tmpfs", "/tmp", "tmpfs", NOSUID_NODEV, c"mode=1777", false),
    spec(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        c"nsdelegate",
        false,
    ),
    spec(
        "securityfs",
        "/sys/kernel/security",
        "securityfs",
        NOSUID_NODEV_NOEXEC,
        c"",
        true,
    ),
    spec(
        "efivarfs",
        "/sys/firmware/efi/efivars",
        "efivarfs",
        NOSUID_NODEV_NOEXEC,
        c"",
        true,
    ),
];

/// What happened to each target, for the boot log.
#[derive(Debug, Default)]
pub struct Report {
    pub mounted: Vec<&'static str>,
    pub already: Vec<&'static str>,
    pub skipped: Vec<&'static str>,
}

impl Report {
    /// The boot log's line for the `mounts` phase.
    pub fn log(&self) {
        crate::info!(
            "mounts: mounted [{}]; already mounted [{}]; not available [{}]",
            self.mounted.join(" "),
            self.already.join(" "),
            self.skipped.join(" ")
        );
    }
}

/// Mounts proc, sysfs, devtmpfs, devpts, /dev/shm, /run, /tmp, cgroup2 and,
/// where the kernel has them, securityfs and efivarfs.
pub fn mount_early() -> Result<Report, Error> {
    let mut report = Report::default();
    let mut table = String::new();
    for s in EARLY {
        if s.target != "/proc" && table.is_empty() {
            table = fsutil::read_text("/proc/self/mounts").unwrap_or_default();
        }
        if is_mount_point(&table, s.target)
            || (s.target == "/proc" && fsutil::exists("/proc/self/stat"))
        {
            report.already.push(s.target);
            continue;
        }
        if s.optional && (!supported(s.fstype) || !parent_exists(s.target)) {
            report.skipped.push(s.target);
            continue;
        }
        match mkdir(s.target, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(errno) => {
                return Err(Error::new(ErrorKind::Mount {
                    target: s.target,
                    errno,
                }))
            }
        }
        match mount(s.source, s.target, s.fstype, s.flags, Some(s.data)) {
            Ok(()) => report.mounted.push(s.target),
            Err(Errno::BUSY) => report.already.push(s.target),
            Err(errno) if s.optional => {
                crate::warn!(
                    "mount {} ({}) failed: {errno}; continuing without it",
                    s.target,
                    s.fstype
                );
                report.skipped.push(s.target);
            }
            Err(errno) => {
                return Err(Error::new(ErrorKind::Mount {
                    target: s.target,
                    errno,
                }))
            }
        }
    }
    Ok(report)
}

/// Whether `target` is a mount point in a /proc/self/mounts text.
pub fn is_mount_point(mounts: &str, target: &str) -> bool {
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(target))
}

fn supported(fstype: &str) -> bool {
    fsutil::read_text("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        })
        .unwrap_or(false)
}

fn parent_exists(target: &str) -> bool {
    match target.rsplit_once('/') {
        Some((parent, _)) if !parent.is_empty() => fsutil::exists(parent),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_mount_points() {
        let t = "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n";
        assert!(super::is_mount_point(t, "/sys"));
        assert!(!super::is_mount_point(t, "/sys/fs/cgroup"));
    }
}
