//! Makes the initrd's contents a root that runc can pivot_root out of,
//! once, and writes the initrd's snapshot on the way.
//!
//! Why: pivot_root(2) refuses a root mount that has no parent, which the
//! kernel's initial rootfs is, and runc (under rke2's containerd)
//! pivot_roots into every container. A bind mount of the initial rootfs,
//! moved onto `/`, is a mount with a parent (the rootfs under it): the
//! same files, in the same RAM, with nothing copied. (The init used to copy
//! every file into a fresh tmpfs, as switch_root does; that was the
//! `rootfs` phase's largest cost on a production-sized initrd.)
//!
//! Nothing of the initrd is copied or kept: a last-known-good slot is
//! the UKI the node booted, fetched from the boot server by its signed
//! digest when the slot is written (`lkg`), not a snapshot of the initrd.

use alloc::borrow::ToOwned;
use alloc::ffi::CString;
use alloc::vec::Vec;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{mount, mount_bind, mount_move, unmount, MountFlags, UnmountFlags};

use crate::fsutil::{self, Stop};
use crate::{Error, ErrorKind};

/// Where the bind mount of the initial rootfs is made before it is moved
/// onto `/`.
const STAGING: &str = "/.ember-root";

#[derive(Debug, Default)]
pub struct Report {
    pub moved: bool,
}

impl Report {
    /// The boot log's line for the `rootfs` phase.
    pub fn log(&self) {
        match self.moved {
            true => {
                crate::info!("rootfs: / is a bind mount of the initial rootfs (nothing copied)")
            }
            false => crate::info!("rootfs: / is already a root runc can pivot_root from"),
        }
    }
}

/// Moves a bind mount of the initial rootfs onto `/`. A no-op
/// (moved=false) when `/` is already something other than the initial
/// rootfs.
pub fn ensure_tmpfs_root() -> Result<Report, Error> {
    if !on_initial_rootfs()? {
        return Ok(Report::default());
    }
    rfs::mkdir(STAGING, Mode::from_raw_mode(0o755))
        .or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) })
        .map_err(step("mkdir staging root"))?;
    // The switch itself: /proc was only needed to look at the mount table.
    let _ = unmount("/proc", UnmountFlags::DETACH);
    mount_bind("/", STAGING).map_err(step("bind-mount the initial rootfs"))?;
    rustix::process::chdir(STAGING).map_err(step("chdir new root"))?;
    mount_move(".", "/").map_err(step("move new root onto /"))?;
    rustix::process::chroot(".").map_err(step("chroot new root"))?;
    rustix::process::chdir("/").map_err(step("chdir /"))?;
    Ok(Report { moved: true })
}

/// True when `/` is the kernel's initial rootfs (fstype `rootfs` in the
/// mount table). Mounts /proc to look if it is not there yet.
fn on_initial_rootfs() -> Result<bool, Error> {
    if !fsutil::exists("/proc/self/mounts") {
        let _ = rfs::mkdir("/proc", Mode::from_raw_mode(0o555));
        mount(
            "proc",
            "/proc",
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .map_err(|errno| {
            Error::new(ErrorKind::Mount {
                target: "/proc",
                errno,
            })
        })?;
    }
    let table = fsutil::read_text("/proc/self/mounts")?;
    Ok(table.lines().any(|l| {
        let mut f = l.split(' ');
        let (_, target, fstype) = (f.next(), f.next(), f.next());
        target == Some("/") && fstype == Some("rootfs")
    }))
}

/// Reads `src`, which stat said holds `size` bytes, handing each piece to
/// `each`, in chunks: PID 1's peak memory does not grow with file size. A
/// file that is not `size` bytes long after all is an error.
fn read_exactly(
    src: &OwnedFd,
    size: u64,
    mut each: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut buf = alloc::vec![0u8; 64 * 1024];
    let mut read = 0u64;
    fsutil::read_each(src, &mut buf, |piece| {
        if read + piece.len() as u64 > size {
            return Err(step("file grew while read")(Errno::IO));
        }
        each(piece)?;
        read += piece.len() as u64;
        Ok(())
    })
    .map_err(|e| match e {
        Stop::Read(errno) => step("read file")(errno),
        Stop::Each(e) => e,
    })?;
    match read == size {
        true => Ok(()),
        false => Err(step("file shrank while read")(Errno::IO)),
    }
}

/// The names in `dir` but `.` and `..`, sorted.
fn sorted_names(dir: BorrowedFd<'_>, depth: u32) -> Result<Vec<CString>, Error> {
    if depth > 64 {
        return Err(Error::new(ErrorKind::Step {
            step: "walk tree: directories nested too deep",
            errno: Errno::LOOP,
        }));
    }
    let mut names: Vec<CString> = Vec::new();
    let mut entries = rfs::Dir::read_from(dir).map_err(step("read directory"))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(step("read directory"))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            fsutil::insert_sorted(&mut names, name.to_owned());
        }
    }
    Ok(names)
}

/// Moves the contents of directory `from` into directory `to` (files,
/// directories, symlinks, device nodes, with modes and owners), deleting
/// each source entry once copied so that RAM use does not double. Returns
/// the number of regular files and their bytes. (The storage phase moves
/// what the image holds under a writable path onto its new mount.)
pub fn move_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<(u32, u64), Error> {
    let mut mover = Mover { files: 0, bytes: 0 };
    mover.copy_dir(from, to, 0)?;
    Ok((mover.files, mover.bytes))
}

struct Mover {
    files: u32,
    bytes: u64,
}

impl Mover {
    fn copy_dir(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        depth: u32,
    ) -> Result<(), Error> {
        for name in sorted_names(from, depth)? {
            self.copy_entry(from, to, &name, depth)?;
        }
        Ok(())
    }

    /// Copies one entry of `from` into `to` (recursing into directories)
    /// and removes the source, so the source shrinks as the target fills.
    fn copy_entry(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        name: &CString,
        depth: u32,
    ) -> Result<(), Error> {
        let st = rfs::statat(from, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(step("stat source entry"))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let at = At {
            from,
            to,
            name: name.as_c_str(),
            st: &st,
        };
        let remove = match kind {
            FileType::Directory => {
                self.copy_subdir(&at, depth)?;
                AtFlags::REMOVEDIR
            }
            FileType::RegularFile => {
                self.copy_file(&at)?;
                AtFlags::empty()
            }
            FileType::Symlink => {
                let target = ember_fs::link::read_link(from, name.as_c_str())
                    .map_err(step("read source symlink"))?;
                rfs::symlinkat(target.as_slice(), to, name.as_c_str())
                    .map_err(step("create symlink in target"))?;
                AtFlags::empty()
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
                rfs::mknodat(to, name.as_c_str(), kind, perm, st.st_rdev)
                    .map_err(step("create device node in target"))?;
                AtFlags::empty()
            }
            FileType::Unknown => return Ok(()),
        };
        let _ = rfs::unlinkat(from, name.as_c_str(), remove);
        Ok(())
    }

    fn copy_subdir(&mut self, at: &At<'_>, depth: u32) -> Result<(), Error> {
        let perm = at.st.st_mode & 0o7777;
        match rfs::mkdirat(at.to, at.name, Mode::from_raw_mode(perm)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(step("create directory in target")(e)),
        }
        let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let sub_from = rfs::openat(at.from, at.name, dir, Mode::empty())
            .map_err(step("open source directory"))?;
        let sub_to = rfs::openat(at.to, at.name, dir, Mode::empty())
            .map_err(step("open target directory"))?;
        self.copy_dir(sub_from.as_fd(), sub_to.as_fd(), depth + 1)?;
        let _ = rfs::fchmod(&sub_to, Mode::from_raw_mode(perm));
        let _ = rfs::fchown(&sub_to, Some(uid(at.st.st_uid)), Some(gid(at.st.st_gid)));
        Ok(())
    }

    fn copy_file(&mut self, at: &At<'_>) -> Result<(), Error> {
        let perm = at.st.st_mode & 0o7777;
        let src = rfs::openat(
            at.from,
            at.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(step("open source file"))?;
        let dst = rfs::openat(
            at.to,
            at.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(perm),
        )
        .map_err(step("create file in target"))?;
        let size = at.st.st_size as u64;
        read_exactly(&src, size, |piece| {
            fsutil::write_all(&dst, piece).map_err(step("write file in target"))
        })?;
        let _ = rfs::fchown(&dst, Some(uid(at.st.st_uid)), Some(gid(at.st.st_gid)));
        let _ = rfs::fchmod(&dst, Mode::from_raw_mode(perm));
        self.files += 1;
        self.bytes += size;
        Ok(())
    }
}

/// One entry being moved: its directory on each side, its name, its stat.
struct At<'a> {
    from: BorrowedFd<'a>,
    to: BorrowedFd<'a>,
    name: &'a core::ffi::CStr,
    st: &'a rfs::Stat,
}

/// An errno from the named step of the move.
fn step(step: &'static str) -> impl Fn(Errno) -> Error {
    move |errno| Error::new(ErrorKind::Step { step, errno })
}

fn uid(raw: u32) -> rustix::process::Uid {
    rustix::process::Uid::from_raw(raw)
}

fn gid(raw: u32) -> rustix::process::Gid {
    rustix::process::Gid::from_raw(raw)
}
