//! Moves the initrd's contents from the kernel's initial rootfs into a fresh
//! tmpfs and makes that the root, once, as switch_root does.
//!
//! Why: pivot_root(2) refuses to move the initial rootfs, and runc (under
//! rke2's containerd) pivot_roots into every container. A tmpfs root is
//! still RAM holding only the initrd's contents; nothing comes from a disk.
//! Files are deleted from the old root as they are copied, so RAM use does
//! not double.
//!
//! On the way the init writes `/boot/initrd.cpio`: an uncompressed newc
//! image of exactly what the initrd held, which is what last-known-good
//! copies to the ESP (the kernel does not keep the initrd it booted on x86).

use alloc::borrow::ToOwned;
use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec::Vec;

use ember_fs::cpio::{self, Header, Output};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{mount, mount_move, unmount, MountFlags, UnmountFlags};

use crate::fsutil::{self, Stop};
use crate::Error;

/// Where the new root is assembled before it is moved onto `/`.
const STAGING: &str = "/.ember-root";
/// The snapshot of the initrd, inside the new root.
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
                "rootfs: moved {} files ({} bytes) from the initial rootfs to a tmpfs root; initrd snapshot {} bytes",
                self.files,
                self.bytes,
                self.snapshot_bytes
            ),
            false => log::info!("rootfs: / is already a tmpfs root"),
        }
    }
}

/// Makes `/` a tmpfs holding the initrd's contents. A no-op (moved=false)
/// when `/` is already something other than the initial rootfs.
pub fn ensure_tmpfs_root() -> Result<Report, Error> {
    if !on_initial_rootfs()? {
        return Ok(Report::default());
    }
    rfs::mkdir(STAGING, Mode::from_raw_mode(0o755))
        .or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) })
        .map_err(step("mkdir staging root"))?;
    mount(
        "tmpfs",
        STAGING,
        "tmpfs",
        MountFlags::empty(),
        Some(c"mode=0755"),
    )
    .map_err(step("mount tmpfs root"))?;

    let old = rfs::open(
        "/",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("open /"))?;
    let new = rfs::open(
        STAGING,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("open staging root"))?;
    rfs::mkdirat(&new, "boot", Mode::from_raw_mode(0o755))
        .or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) })
        .map_err(step("mkdir /boot"))?;
    let snap_fd = rfs::openat(
        &new,
        &INITRD_SNAPSHOT[1..],
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o400),
    )
    .map_err(step("create initrd snapshot"))?;

    let mut mover = Mover {
        snapshot: Some(cpio::Writer::new(FdOutput {
            fd: snap_fd,
            bytes: 0,
            sha256: sha2::Digest::new(),
        })),
        next_ino: 1,
        report: Report::default(),
        path: String::new(),
    };
    mover.copy_dir(old.as_fd(), new.as_fd(), 0)?;
    let snapshot = mover.snapshot.take().ok_or(Error::Step {
        step: "write initrd snapshot",
        errno: Errno::IO,
    })?;
    let out = snapshot.finish().map_err(|_| Error::Step {
        step: "write initrd snapshot",
        errno: Errno::IO,
    })?;
    let mut report = mover.report;
    report.snapshot_bytes = out.bytes;
    report.snapshot_sha256 = sha2::Digest::finalize(out.sha256).into();
    let _ = rfs::fsync(&out.fd);

    // The switch itself: /proc was only needed to look at the mount table.
    let _ = unmount("/proc", UnmountFlags::DETACH);
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

/// Moves the contents of directory `from` into directory `to` (files,
/// directories, symlinks, device nodes, with modes and owners), deleting
/// each source entry once copied so that RAM use does not double. Returns
/// the number of regular files and their bytes.
pub fn move_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<(u32, u64), Error> {
    let mut mover = Mover {
        snapshot: None,
        next_ino: 1,
        report: Report::default(),
        path: String::new(),
    };
    mover.copy_dir(from, to, 0)?;
    Ok((mover.report.files, mover.report.bytes))
}

struct Mover {
    /// Set while moving the initrd itself: the snapshot being written.
    snapshot: Option<cpio::Writer<FdOutput>>,
    next_ino: u32,
    report: Report,
    /// Path of the directory being copied, relative, for the snapshot.
    path: String,
}

impl Mover {
    fn copy_dir(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        depth: u32,
    ) -> Result<(), Error> {
        if depth > 64 {
            return Err(Error::Step {
                step: "copy tree: directories nested too deep",
                errno: Errno::LOOP,
            });
        }
        let mut names: Vec<CString> = Vec::new();
        let mut dir = rfs::Dir::read_from(from).map_err(step("read source directory"))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(step("read source directory"))?;
            let name = entry.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                fsutil::insert_sorted(&mut names, name.to_owned());
            }
        }
        for name in names {
            let bytes = name.to_bytes();
            // The staging root and the API mount points are not initrd content.
            let initrd_root = depth == 0 && self.snapshot.is_some();
            if initrd_root && (bytes == &STAGING.as_bytes()[1..] || bytes == b"proc") {
                if bytes == b"proc" {
                    let _ = rfs::mkdirat(to, "proc", Mode::from_raw_mode(0o555));
                }
                continue;
            }
            let parent_len = self.path.len();
            if !self.path.is_empty() {
                self.path.push('/');
            }
            self.path.push_str(&String::from_utf8_lossy(bytes));
            let result = self.copy_entry(from, to, &name, depth);
            self.path.truncate(parent_len);
            result?;
        }
        Ok(())
    }

    /// Copies one entry of `from` into `to` (recursing into directories),
    /// adds it to the snapshot, and removes the source, so the initial
    /// rootfs shrinks as the tmpfs root fills.
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
        let ino = self.next_ino;
        self.next_ino += 1;
        let path = self.path.clone();
        // mtime 0: whether the kernel's unpacker kept the cpio's times
        // depends on its configuration, and the snapshot must be the same
        // bytes on every boot of the same initrd (it is what PCR 11 measures).
        let mut header = Header::new(&path, ino, st.st_mode, 0);
        header.uid = st.st_uid;
        header.gid = st.st_gid;
        let at = At {
            from,
            to,
            name: name.as_c_str(),
            st: &st,
        };
        let remove = match kind {
            FileType::Directory => {
                self.copy_subdir(&at, &header, depth)?;
                AtFlags::REMOVEDIR
            }
            FileType::RegularFile => {
                self.copy_file(&at, &header)?;
                AtFlags::empty()
            }
            FileType::Symlink => {
                self.copy_symlink(&at, &header)?;
                AtFlags::empty()
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                self.copy_node(&at, &mut header, kind)?;
                AtFlags::empty()
            }
            FileType::Unknown => return Ok(()),
        };
        let _ = rfs::unlinkat(from, name.as_c_str(), remove);
        Ok(())
    }

    fn copy_subdir(&mut self, at: &At<'_>, header: &Header<'_>, depth: u32) -> Result<(), Error> {
        let perm = at.st.st_mode & 0o7777;
        self.snapshot_entry(header, &[])?;
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

    /// Streamed in chunks: the kernel image in the initrd is 8 MB, and
    /// PID 1's peak memory should not grow with file size.
    fn copy_file(&mut self, at: &At<'_>, header: &Header<'_>) -> Result<(), Error> {
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
        let snapshot_failed = |_| step("write initrd snapshot")(Errno::IO);
        if let Some(snapshot) = self.snapshot.as_mut() {
            snapshot.begin(header, size).map_err(snapshot_failed)?;
        }
        let mut buf = alloc::vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        fsutil::read_each(&src, &mut buf, |piece| {
            if copied + piece.len() as u64 > size {
                return Err(step("source file grew while copied")(Errno::IO));
            }
            fsutil::write_all(&dst, piece).map_err(step("write file in target"))?;
            if let Some(snapshot) = self.snapshot.as_mut() {
                snapshot.data(piece).map_err(snapshot_failed)?;
            }
            copied += piece.len() as u64;
            Ok(())
        })
        .map_err(|e| match e {
            Stop::Read(errno) => step("read source file")(errno),
            Stop::Each(e) => e,
        })?;
        if copied != size {
            return Err(step("source file shrank while copied")(Errno::IO));
        }
        if let Some(snapshot) = self.snapshot.as_mut() {
            snapshot.end().map_err(snapshot_failed)?;
        }
        let _ = rfs::fchown(&dst, Some(uid(at.st.st_uid)), Some(gid(at.st.st_gid)));
        let _ = rfs::fchmod(&dst, Mode::from_raw_mode(perm));
        self.report.files += 1;
        self.report.bytes += size;
        Ok(())
    }

    fn copy_symlink(&mut self, at: &At<'_>, header: &Header<'_>) -> Result<(), Error> {
        let target =
            rfs::readlinkat(at.from, at.name, Vec::new()).map_err(step("read source symlink"))?;
        rfs::symlinkat(target.as_c_str(), at.to, at.name)
            .map_err(step("create symlink in target"))?;
        self.snapshot_entry(header, target.to_bytes())
    }

    fn copy_node(
        &mut self,
        at: &At<'_>,
        header: &mut Header<'_>,
        kind: FileType,
    ) -> Result<(), Error> {
        let dev = at.st.st_rdev;
        header.rdev_major = rustix::fs::major(dev);
        header.rdev_minor = rustix::fs::minor(dev);
        let perm = Mode::from_raw_mode(at.st.st_mode & 0o7777);
        rfs::mknodat(at.to, at.name, kind, perm, dev)
            .map_err(step("create device node in target"))?;
        self.snapshot_entry(header, &[])
    }

    fn snapshot_entry(&mut self, header: &Header<'_>, data: &[u8]) -> Result<(), Error> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(());
        };
        snapshot.entry(header, data).map_err(|_| Error::Step {
            step: "write initrd snapshot",
            errno: Errno::IO,
        })
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
