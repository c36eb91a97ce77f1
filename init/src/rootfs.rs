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
//! On the way the init writes `/boot/initrd.cpio`: an uncompressed newc
//! image of exactly what the initrd held, hashed as it is written (the
//! initrd's measurement), which is what last-known-good copies to the ESP
//! (the kernel does not keep the initrd it booted on x86). It is a second
//! copy of the initrd in RAM for the node's life: removing it needs
//! last-known-good to produce the image when it writes the ESP.

use alloc::borrow::ToOwned;
use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec::Vec;

use ember_fs::cpio::{self, Header, Output};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{mount, mount_bind, mount_move, unmount, MountFlags, UnmountFlags};

use crate::fsutil::{self, Stop};
use crate::Error;

/// Where the bind mount of the initial rootfs is made before it is moved
/// onto `/`. Not initrd content: left out of the snapshot.
const STAGING: &str = "/.ember-root";
/// The snapshot while it is written: at the top, where the walk skips it,
/// and renamed to [`INITRD_SNAPSHOT`] once complete.
const SNAPSHOT_PARTIAL: &str = "/.ember-initrd.cpio";
/// The snapshot of the initrd.
pub const INITRD_SNAPSHOT: &str = "/boot/initrd.cpio";

#[derive(Debug, Default)]
pub struct Report {
    pub moved: bool,
    pub files: u32,
    pub bytes: u64,
    pub snapshot_bytes: u64,
    /// SHA-256 of the snapshot: the initrd's measurement.
    pub snapshot_sha256: [u8; 32],
}

impl Report {
    /// The boot log's line for the `rootfs` phase.
    pub fn log(&self) {
        match self.moved {
            true => log::info!(
                "rootfs: / is a bind mount of the initial rootfs ({} files, {} bytes, none copied); initrd snapshot {} bytes",
                self.files,
                self.bytes,
                self.snapshot_bytes
            ),
            false => log::info!("rootfs: / is already a root runc can pivot_root from"),
        }
    }
}

/// Writes the initrd's snapshot and moves a bind mount of the initial
/// rootfs onto `/`. A no-op (moved=false) when `/` is already something
/// other than the initial rootfs.
pub fn ensure_tmpfs_root() -> Result<Report, Error> {
    if !on_initial_rootfs()? {
        return Ok(Report::default());
    }
    rfs::mkdir(STAGING, Mode::from_raw_mode(0o755))
        .or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) })
        .map_err(step("mkdir staging root"))?;
    let root = rfs::open(
        "/",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("open /"))?;
    let snap_fd = rfs::open(
        SNAPSHOT_PARTIAL,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o400),
    )
    .map_err(step("create initrd snapshot"))?;
    let mut snapshot = Snapshot {
        cpio: cpio::Writer::new(FdOutput {
            fd: snap_fd,
            bytes: 0,
            sha256: sha2::Digest::new(),
        }),
        next_ino: 1,
        report: Report::default(),
        path: String::new(),
    };
    snapshot.walk_dir(root.as_fd(), 0)?;
    let mut report = snapshot.report;
    let out = snapshot.cpio.finish().map_err(|_| snapshot_failed())?;
    report.snapshot_bytes = out.bytes;
    report.snapshot_sha256 = sha2::Digest::finalize(out.sha256).into();
    let _ = rfs::fsync(&out.fd);
    rfs::mkdir("/boot", Mode::from_raw_mode(0o755))
        .or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) })
        .map_err(step("mkdir /boot"))?;
    rfs::rename(SNAPSHOT_PARTIAL, INITRD_SNAPSHOT).map_err(step("rename initrd snapshot"))?;

    // The switch itself: /proc was only needed to look at the mount table.
    let _ = unmount("/proc", UnmountFlags::DETACH);
    mount_bind("/", STAGING).map_err(step("bind-mount the initial rootfs"))?;
    rustix::process::chdir(STAGING).map_err(step("chdir new root"))?;
    mount_move(".", "/").map_err(step("move new root onto /"))?;
    rustix::process::chroot(".").map_err(step("chroot new root"))?;
    rustix::process::chdir("/").map_err(step("chdir /"))?;
    report.moved = true;
    Ok(report)
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
        .map_err(|errno| Error::Mount {
            target: "/proc",
            errno,
        })?;
    }
    let table = fsutil::read_text("/proc/self/mounts")?;
    Ok(table.lines().any(|l| {
        let mut f = l.split(' ');
        let (_, target, fstype) = (f.next(), f.next(), f.next());
        target == Some("/") && fstype == Some("rootfs")
    }))
}

struct FdOutput {
    fd: OwnedFd,
    bytes: u64,
    sha256: sha2::Sha256,
}

impl Output for FdOutput {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ember_fs::Error> {
        fsutil::write_all(&self.fd, bytes)
            .map_err(|e| ember_fs::Error::Output(e.raw_os_error()))?;
        self.bytes += bytes.len() as u64;
        sha2::Digest::update(&mut self.sha256, bytes);
        Ok(())
    }
}

fn snapshot_failed() -> Error {
    step("write initrd snapshot")(Errno::IO)
}

/// Writes the initrd's tree, as the kernel unpacked it, into a newc cpio:
/// directories in name order, inode numbers in walk order, mtime 0, so the
/// same initrd gives the same bytes on every boot (PCR 11 measures them).
struct Snapshot {
    cpio: cpio::Writer<FdOutput>,
    next_ino: u32,
    report: Report,
    /// Path of the directory being walked, relative.
    path: String,
}

impl Snapshot {
    fn walk_dir(&mut self, dir: BorrowedFd<'_>, depth: u32) -> Result<(), Error> {
        for name in sorted_names(dir, depth)? {
            let bytes = name.to_bytes();
            // The staging mount point, the partial snapshot and the API
            // mount point are not initrd content.
            if depth == 0
                && (bytes == &STAGING.as_bytes()[1..]
                    || bytes == &SNAPSHOT_PARTIAL.as_bytes()[1..]
                    || bytes == b"proc")
            {
                continue;
            }
            let parent_len = self.path.len();
            if !self.path.is_empty() {
                self.path.push('/');
            }
            self.path.push_str(&String::from_utf8_lossy(bytes));
            let result = self.entry(dir, &name, depth);
            self.path.truncate(parent_len);
            result?;
        }
        Ok(())
    }

    /// Adds one entry of `dir` to the snapshot (recursing into directories).
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CString, depth: u32) -> Result<(), Error> {
        let st = rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(step("stat initrd entry"))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let ino = self.next_ino;
        self.next_ino += 1;
        let path = self.path.clone();
        let mut header = Header::new(&path, ino, st.st_mode, 0);
        header.uid = st.st_uid;
        header.gid = st.st_gid;
        let entry = |cpio: &mut cpio::Writer<FdOutput>, header: &Header<'_>, data: &[u8]| {
            cpio.entry(header, data).map_err(|_| snapshot_failed())
        };
        match kind {
            FileType::Directory => {
                entry(&mut self.cpio, &header, &[])?;
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = rfs::openat(dir, name.as_c_str(), flags, Mode::empty())
                    .map_err(step("open initrd directory"))?;
                self.walk_dir(sub.as_fd(), depth + 1)
            }
            FileType::RegularFile => self.file(dir, name, &header, st.st_size as u64),
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name.as_c_str(), Vec::new())
                    .map_err(step("read initrd symlink"))?;
                entry(&mut self.cpio, &header, target.to_bytes())
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                header.rdev_major = rustix::fs::major(st.st_rdev);
                header.rdev_minor = rustix::fs::minor(st.st_rdev);
                entry(&mut self.cpio, &header, &[])
            }
            FileType::Unknown => Ok(()),
        }
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CString,
        header: &Header<'_>,
        size: u64,
    ) -> Result<(), Error> {
        let src = rfs::openat(
            dir,
            name.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(step("open initrd file"))?;
        self.cpio
            .begin(header, size)
            .map_err(|_| snapshot_failed())?;
        read_exactly(&src, size, |piece| {
            self.cpio.data(piece).map_err(|_| snapshot_failed())
        })?;
        self.cpio.end().map_err(|_| snapshot_failed())?;
        self.report.files += 1;
        self.report.bytes += size;
        Ok(())
    }
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

/// The names in `dir` but `.` and `..`, sorted (the snapshot's order).
fn sorted_names(dir: BorrowedFd<'_>, depth: u32) -> Result<Vec<CString>, Error> {
    if depth > 64 {
        return Err(Error::Step {
            step: "walk tree: directories nested too deep",
            errno: Errno::LOOP,
        });
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
                let target = rfs::readlinkat(from, name.as_c_str(), Vec::new())
                    .map_err(step("read source symlink"))?;
                rfs::symlinkat(target.as_c_str(), to, name.as_c_str())
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
    move |errno| Error::Step { step, errno }
}

fn uid(raw: u32) -> rustix::process::Uid {
    rustix::process::Uid::from_raw(raw)
}

fn gid(raw: u32) -> rustix::process::Gid {
    rustix::process::Gid::from_raw(raw)
}
