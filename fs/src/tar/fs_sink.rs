//! The filesystem [`Sink`]: creates entries under a root directory fd with
//! rustix. Every lookup of a parent goes through openat2 with
//! `RESOLVE_BENEATH` (or `RESOLVE_IN_ROOT`) and `RESOLVE_NO_MAGICLINKS`, and
//! the final component is created with `*at` calls that never follow it, so
//! nothing is written outside the root. Existing files are replaced by
//! writing a temporary name and renaming it over the old one; existing
//! directories are merged. Directory modes and mtimes are applied after
//! their contents, from a compact, size-capped list. With a [`Protection`]
//! ([`FsSink::protect`]) entries stay out of the system areas it names and
//! on the root's mount.

use alloc::vec::Vec;
use core::fmt::Write as _;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    self, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
    UTIME_OMIT,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use super::entry::{Entry, Kind, Time};
use super::error::ErrorKind;
use super::protect::{symlink_destination, Protection};
use super::sink::Sink;

/// How names are confined to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// `RESOLVE_BENEATH`: a path that would leave the root through a symlink
    /// (absolute, or `..` above the root) is refused with an error.
    Beneath,
    /// `RESOLVE_IN_ROOT`: the root acts as `/` (as after chroot), so absolute
    /// symlinks resolve inside it. Right when extracting into the real `/`.
    InRoot,
}

/// Bytes of deferred directory records kept before finished ones are
/// applied early (archives list directories depth-first, so the directories
/// still open are the ancestors of the current entry).
const DIR_BUDGET: usize = 256 * 1024;

#[derive(Clone, Copy)]
struct DirRecord {
    path_end: u32,
    mode: u32,
    mtime: Time,
}

/// Directory metadata to apply after the contents: paths in one arena.
#[derive(Default)]
struct Deferred {
    paths: Vec<u8>,
    records: Vec<DirRecord>,
}

impl Deferred {
    fn bytes(&self) -> usize {
        self.paths.len() + self.records.len() * core::mem::size_of::<DirRecord>()
    }

    fn path(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.records[i - 1].path_end as usize
        };
        &self.paths[start..self.records[i].path_end as usize]
    }
}

/// Creates one node (symlink, hard link, device, FIFO) at a name in a directory.
type MakeNode<'a> = dyn Fn(BorrowedFd<'_>, &[u8]) -> Result<(), Errno> + 'a;

/// Directory fds for each component of `path` ("a", "a/b", ...), each with
/// the end of its prefix in `path`. Depth is capped to bound open fds.
#[derive(Default)]
struct DirStack {
    path: Vec<u8>,
    /// `None` once dropped to respect [`MAX_OPEN`] (reopened on demand).
    fds: Vec<(usize, Option<OwnedFd>)>,
}

const MAX_OPEN: usize = 64;

impl DirStack {
    fn len(&self) -> usize {
        self.fds.last().map_or(0, |(end, _)| *end)
    }

    /// Drops the entries that are not ancestors of (or equal to) `dir`.
    fn keep_prefix_of(&mut self, dir: &[u8]) {
        let keep = self
            .fds
            .iter()
            .take_while(|(end, _)| {
                dir.len() >= *end
                    && dir[..*end] == self.path[..*end]
                    && (dir.len() == *end || dir[*end] == b'/')
            })
            .count();
        self.fds.truncate(keep);
        let len = self.len();
        self.path.truncate(len);
    }

    fn push(&mut self, comp: &[u8], fd: OwnedFd) {
        if self.fds.len() >= MAX_OPEN {
            // Deep paths: close the shallowest fd still open.
            if let Some(slot) = self.fds.iter_mut().find(|(_, f)| f.is_some()) {
                slot.1 = None;
            }
        }
        if !self.fds.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(comp);
        self.fds.push((self.path.len(), Some(fd)));
    }

    fn top(&self) -> Option<BorrowedFd<'_>> {
        self.fds
            .last()
            .and_then(|(_, f)| f.as_ref())
            .map(|f| f.as_fd())
    }
}

struct OpenFile {
    fd: OwnedFd,
    /// The temporary name when an existing file is being replaced.
    tmp: Option<TmpName>,
    /// Logical end of data written (all-zero chunks become holes).
    len: u64,
    written_end: u64,
}

/// `.ember-tar-N`: short, so any final name's directory can hold it.
#[derive(Clone, Copy)]
struct TmpName {
    buf: [u8; 32],
    len: usize,
}

impl TmpName {
    fn new(n: u32) -> Self {
        let mut t = TmpName {
            buf: [0; 32],
            len: 0,
        };
        let _ = write!(t, ".ember-tar-{n}");
        t
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for TmpName {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let end = self.len + b.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

pub struct FsSink {
    root: OwnedFd,
    resolve: ResolveFlags,
    /// Open directories along the last parent path used: most entries
    /// share it or a prefix of it.
    stack: DirStack,
    file: Option<OpenFile>,
    deferred: Deferred,
    is_root: bool,
    umask: u32,
    tmp_counter: u32,
    scratch: Vec<u8>,
    /// Path of the open file, to remove it if extraction fails.
    file_path: Vec<u8>,
    /// Members not created (unsupported types); the caller may report them.
    pub warnings: u64,
    guard: Option<Guard>,
}

/// A [`Protection`] in force, with what the real-location check compares
/// every directory against.
struct Guard {
    policy: Protection,
    /// The root's mount (statx mount id, or device when the kernel has none).
    root_mount: MountKey,
    /// The root's path as /proc/self/fd shows it ("/" in the init).
    root_path: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MountKey {
    Id(u64),
    Dev(u32, u32),
}

fn mount_key(fd: BorrowedFd<'_>) -> Result<MountKey, ErrorKind> {
    let st = fs::statx(fd, "", AtFlags::EMPTY_PATH, fs::StatxFlags::MNT_ID)
        .map_err(io("statx directory"))?;
    Ok(if st.stx_mask & fs::StatxFlags::MNT_ID.bits() != 0 {
        MountKey::Id(st.stx_mnt_id)
    } else {
        MountKey::Dev(st.stx_dev_major, st.stx_dev_minor)
    })
}

/// The path of an open fd, from /proc/self/fd (needs /proc mounted).
fn fd_path(fd: BorrowedFd<'_>, out: &mut Vec<u8>) -> Result<(), ErrorKind> {
    let mut link = TmpName {
        buf: [0; 32],
        len: 0,
    };
    let _ = write!(
        link,
        "/proc/self/fd/{}",
        rustix::fd::AsRawFd::as_raw_fd(&fd)
    );
    *out = crate::link::read_link(fs::CWD, link.as_bytes())
        .map_err(io("readlink /proc/self/fd (is /proc mounted?)"))?;
    Ok(())
}

fn io(op: &'static str) -> impl Fn(Errno) -> ErrorKind {
    move |e| ErrorKind::Io {
        op,
        errno: e.raw_os_error(),
    }
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn timespec(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.into(),
    }
}

fn times(t: Time) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: timespec(t),
    }
}

fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        // Branch once per 64 bytes: the compiler vectorizes the fold.
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

impl FsSink {
    /// Extracts under `root` (a directory fd; `O_PATH` is enough).
    pub fn new(root: OwnedFd, confinement: Confinement) -> Self {
        let resolve = ResolveFlags::NO_MAGICLINKS
            | match confinement {
                Confinement::Beneath => ResolveFlags::BENEATH,
                Confinement::InRoot => ResolveFlags::IN_ROOT,
            };
        // umask is only readable by setting it; restore it at once.
        let umask = rustix::process::umask(Mode::empty());
        rustix::process::umask(umask);
        FsSink {
            root,
            resolve,
            stack: DirStack::default(),
            file: None,
            deferred: Deferred::default(),
            is_root: rustix::process::geteuid().is_root(),
            umask: umask.bits(),
            tmp_counter: 0,
            scratch: Vec::new(),
            file_path: Vec::new(),
            warnings: 0,
            guard: None,
        }
    }

    /// Enforces `policy` from now on: no entry at or under its paths, no
    /// symlink or hard link into them, and (with `same_mount`) no directory
    /// on another mount than the root. Refusals name the entry. Reads the
    /// root's location from /proc/self/fd, so /proc must be mounted.
    ///
    /// The init extracts the overlay with
    /// `FsSink::open("/", Confinement::InRoot)?.protect(Protection::SYSTEM)?`.
    pub fn protect(mut self, policy: Protection) -> Result<Self, ErrorKind> {
        let root_mount = mount_key(self.root.as_fd())?;
        let mut root_path = Vec::new();
        fd_path(self.root.as_fd(), &mut root_path)?;
        if policy.same_mount {
            self.resolve |= ResolveFlags::NO_XDEV;
        }
        self.guard = Some(Guard {
            policy,
            root_mount,
            root_path,
        });
        Ok(self)
    }

    /// The lexical check: the entry's own name and where its link points.
    fn check_entry(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        if let Some(area) = guard.policy.covering(entry.path) {
            return Err(ErrorKind::Protected { area });
        }
        if entry.meta.kind != Kind::Directory {
            if let Some(area) = guard.policy.shadowing(entry.path) {
                return Err(ErrorKind::Protected { area });
            }
        }
        let link_dest = match entry.meta.kind {
            Kind::Hardlink => entry.link,
            Kind::Symlink => {
                symlink_destination(entry.path, entry.link, &mut self.scratch);
                &self.scratch
            }
            _ => return Ok(()),
        };
        match guard.policy.covering(link_dest) {
            Some(area) => Err(ErrorKind::LinkIntoProtected { area }),
            None => Ok(()),
        }
    }

    /// The real-location check on a directory the sink is about to use:
    /// on the root's mount, and not at or under a protected path whatever
    /// name led to it.
    fn check_dir(&mut self, fd: BorrowedFd<'_>) -> Result<(), ErrorKind> {
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        if guard.policy.same_mount && mount_key(fd)? != guard.root_mount {
            return Err(ErrorKind::CrossesMount);
        }
        let mut path = core::mem::take(&mut self.scratch);
        let r = fd_path(fd, &mut path).map(|()| {
            let rel = if guard.root_path == b"/" {
                path.strip_prefix(b"/")
            } else {
                path.strip_prefix(guard.root_path.as_slice()).and_then(|r| {
                    if r.is_empty() {
                        Some(r)
                    } else {
                        r.strip_prefix(b"/")
                    }
                })
            };
            // Outside the root entirely (cannot happen under openat2's
            // confinement): treat as protected rather than guess.
            match rel {
                Some(rel) => guard.policy.covering(rel),
                None => Some(guard.policy.paths.first().copied().unwrap_or("")),
            }
        });
        self.scratch = path;
        match r? {
            Some(area) => Err(ErrorKind::Protected { area }),
            None => Ok(()),
        }
    }

    /// Opens `dir` (which must exist) as the root.
    pub fn open<P: rustix::path::Arg>(dir: P, confinement: Confinement) -> Result<Self, ErrorKind> {
        let fd = fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("open root"))?;
        Ok(Self::new(fd, confinement))
    }

    /// Maps a failed confined lookup to its cause. With a same-mount
    /// [`Protection`] under `InRoot`, EXDEV can only mean a mount crossing
    /// (`RESOLVE_NO_XDEV`); otherwise it means leaving the root.
    fn resolve_err(&self, op: &'static str) -> impl Fn(Errno) -> ErrorKind {
        let xdev_is_mount = self.resolve.contains(ResolveFlags::NO_XDEV)
            && self.resolve.contains(ResolveFlags::IN_ROOT);
        move |e| match e {
            Errno::XDEV if xdev_is_mount => ErrorKind::CrossesMount,
            Errno::XDEV | Errno::LOOP => ErrorKind::SymlinkEscapes,
            e => ErrorKind::Io {
                op,
                errno: e.raw_os_error(),
            },
        }
    }

    /// Opens a directory by its path under the root, confined.
    fn open_dir(&self, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        let path: &[u8] = if path.is_empty() { b"." } else { path };
        fs::openat2(
            &self.root,
            path,
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            self.resolve,
        )
    }

    /// The directory that holds `path`, created (mode 0755) if missing.
    /// Components are opened one at a time from the cached prefix with
    /// `O_NOFOLLOW`; a component that is a symlink is resolved instead by
    /// openat2 from the root, confined like every other lookup.
    fn parent_fd(&mut self, path: &[u8]) -> Result<BorrowedFd<'_>, ErrorKind> {
        let (dir, _) = split_parent(path);
        if dir.is_empty() {
            return Ok(self.root.as_fd());
        }
        self.stack.keep_prefix_of(dir);
        loop {
            // An ancestor whose fd was closed for the cap: reopen it, confined.
            if let Some((end, None)) = self.stack.fds.last() {
                let end = *end;
                let fd = self
                    .open_dir(&self.stack.path[..end], OFlags::PATH)
                    .map_err(self.resolve_err("open parent directory"))?;
                if let Some(last) = self.stack.fds.last_mut() {
                    last.1 = Some(fd);
                }
            }
            if self.stack.len() >= dir.len() {
                break;
            }
            let start = if self.stack.fds.is_empty() {
                0
            } else {
                self.stack.len() + 1
            };
            let end = dir[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(dir.len(), |i| start + i);
            let comp = &dir[start..end];
            let at = self.stack.top().unwrap_or(self.root.as_fd());
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match fs::openat(at, comp, flags, Mode::empty()) {
                Ok(fd) => Ok(fd),
                Err(Errno::NOENT) => match fs::mkdirat(at, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => fs::openat(at, comp, flags, Mode::empty()),
                    Err(e) => return Err(io("mkdir")(e)),
                },
                Err(e) => Err(e),
            };
            let fd = match fd {
                Ok(fd) => fd,
                // A symlink (or something odd): resolve the prefix, confined.
                Err(_) => self
                    .open_dir(&dir[..end], OFlags::PATH)
                    .map_err(self.resolve_err("open parent directory"))?,
            };
            self.check_dir(fd.as_fd())?;
            self.stack.push(&dir[start..end], fd);
        }
        Ok(self.stack.top().unwrap_or(self.root.as_fd()))
    }

    fn next_tmp(&mut self) -> TmpName {
        self.tmp_counter = self.tmp_counter.wrapping_add(1);
        TmpName::new(self.tmp_counter)
    }

    /// An existing `name` in `dir`: refuse if it is a directory.
    fn check_replaceable(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), ErrorKind> {
        match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                Err(ErrorKind::ReplacesDirectory)
            }
            Ok(_) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io("stat existing entry")(e)),
        }
    }

    /// Creates a non-regular node with `make`, at `name` if free, else at a
    /// temporary name renamed over the existing one.
    fn create_node(
        &mut self,
        path: &[u8],
        make: &MakeNode<'_>,
        op: &'static str,
    ) -> Result<(), ErrorKind> {
        let tmp = self.next_tmp();
        let (_, name) = split_parent(path);
        let dir = self.parent_fd(path)?;
        match make(dir, name) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => Self::check_replaceable(dir, name)?,
            Err(e) => return Err(io(op)(e)),
        }
        make(dir, tmp.as_bytes()).map_err(io(op))?;
        let r = fs::renameat(dir, tmp.as_bytes(), dir, name);
        // Renaming a hard link onto the same inode succeeds without removing
        // the temporary name; drop it in every case.
        let _ = fs::unlinkat(dir, tmp.as_bytes(), AtFlags::empty());
        r.map_err(|e| {
            if e == Errno::ISDIR {
                ErrorKind::ReplacesDirectory
            } else {
                io("rename")(e)
            }
        })
    }

    fn begin_file(&mut self, path: &[u8], mode: u32) -> Result<(), ErrorKind> {
        let tmp = self.next_tmp();
        let (_, name) = split_parent(path);
        let create =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let perm = Mode::from_raw_mode(mode & 0o777);
        let dir = self.parent_fd(path)?;
        let (fd, tmp) = match fs::openat(dir, name, create, perm) {
            Ok(fd) => (fd, None),
            Err(Errno::EXIST) => {
                Self::check_replaceable(dir, name)?;
                (
                    fs::openat(dir, tmp.as_bytes(), create, perm)
                        .map_err(io("create temporary file"))?,
                    Some(tmp),
                )
            }
            Err(e) => return Err(self.resolve_err("create file")(e)),
        };
        self.file = Some(OpenFile {
            fd,
            tmp,
            len: 0,
            written_end: 0,
        });
        self.file_path.clear();
        self.file_path.extend_from_slice(path);
        Ok(())
    }

    fn end_file(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let Some(f) = self.file.take() else {
            return Err(ErrorKind::Io {
                op: "finish file",
                errno: 0,
            });
        };
        let r = self.finish_file(&f, entry);
        let (_, name) = split_parent(entry.path);
        let dir = self.parent_fd(entry.path)?;
        let target: &[u8] = match &f.tmp {
            Some(t) => t.as_bytes(),
            None => name,
        };
        if let Err(e) = r {
            let _ = fs::unlinkat(dir, target, AtFlags::empty());
            return Err(e);
        }
        drop(f.fd);
        if let Some(t) = f.tmp {
            if let Err(e) = fs::renameat(dir, t.as_bytes(), dir, name) {
                let _ = fs::unlinkat(dir, t.as_bytes(), AtFlags::empty());
                return Err(if e == Errno::ISDIR {
                    ErrorKind::ReplacesDirectory
                } else {
                    io("rename")(e)
                });
            }
        }
        Ok(())
    }

    /// Size, owner, mode, xattrs, then mtime: chown clears setuid bits and
    /// writes drop security.capability, so this order keeps them all.
    fn finish_file(&mut self, f: &OpenFile, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        if f.len > f.written_end {
            fs::ftruncate(&f.fd, f.len).map_err(io("ftruncate"))?;
        }
        let m = &entry.meta;
        if self.is_root {
            fs::fchown(
                &f.fd,
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
            )
            .map_err(io("fchown"))?;
        }
        // Created with `mode & 0o777`: only the umask or chown can have changed it.
        if m.mode & 0o7000 != 0 || m.mode & self.umask != 0 {
            fs::fchmod(&f.fd, Mode::from_raw_mode(m.mode)).map_err(io("fchmod"))?;
        }
        for (name, value) in entry.xattrs() {
            fs::fsetxattr(&f.fd, name, value, XattrFlags::empty()).map_err(io("fsetxattr"))?;
        }
        fs::futimens(&f.fd, &times(m.mtime)).map_err(io("futimens"))
    }

    /// Owner, mode, xattrs and mtime of a non-regular node, by name.
    fn finish_node(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let m = entry.meta;
        let (_, name) = split_parent(entry.path);
        let is_root = self.is_root;
        let dir = self.parent_fd(entry.path)?;
        if is_root {
            fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io("chown"))?;
        }
        if m.kind != Kind::Symlink {
            // The node was just created by us under this name, not a symlink.
            fs::chmodat(dir, name, Mode::from_raw_mode(m.mode), AtFlags::empty())
                .map_err(io("chmod"))?;
        }
        let has_xattrs = entry.xattrs().next().is_some();
        if has_xattrs {
            self.set_xattrs_by_name(entry)?;
        }
        let dir = self.parent_fd(entry.path)?;
        fs::utimensat(dir, name, &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io("utimensat"))
    }

    /// Devices, FIFOs and symlinks cannot be opened for fsetxattr without side
    /// effects; name them through the parent's /proc/self/fd link instead.
    fn set_xattrs_by_name(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let (_, name) = split_parent(entry.path);
        let mut p = core::mem::take(&mut self.scratch);
        p.clear();
        let dir = self.parent_fd(entry.path)?;
        let mut t = TmpName {
            buf: [0; 32],
            len: 0,
        };
        let _ = write!(t, "/proc/self/fd/{}/", rustix::fd::AsRawFd::as_raw_fd(&dir));
        p.extend_from_slice(t.as_bytes());
        p.extend_from_slice(name);
        let mut r = Ok(());
        for (k, v) in entry.xattrs() {
            if let Err(e) = fs::lsetxattr(p.as_slice(), k, v, XattrFlags::empty()) {
                r = Err(io("lsetxattr")(e));
                break;
            }
        }
        self.scratch = p;
        r
    }

    fn directory(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let path = entry.path;
        if !path.is_empty() {
            let (_, name) = split_parent(path);
            let dir = self.parent_fd(path)?;
            match fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    // An existing symlink stands in for the directory (as
                    // /lib -> usr/lib does): keep it, leave its target alone.
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        return Ok(())
                    }
                    Ok(_) => {
                        fs::unlinkat(dir, name, AtFlags::empty()).map_err(io("unlink"))?;
                        fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(io("mkdir"))?;
                    }
                    Err(e) => return Err(io("stat existing entry")(e)),
                },
                Err(e) => return Err(io("mkdir")(e)),
            }
        }
        let m = entry.meta;
        let fd = if path.is_empty() {
            self.open_dir(path, OFlags::RDONLY)
                .map_err(self.resolve_err("open directory"))?
        } else {
            let (_, name) = split_parent(path);
            let dir = self.parent_fd(path)?;
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            fs::openat(dir, name, flags, Mode::empty()).map_err(io("open directory"))?
        };
        if !path.is_empty() {
            self.check_dir(fd.as_fd())?;
        }
        if self.is_root {
            fs::fchown(&fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
                .map_err(io("fchown"))?;
        }
        for (name, value) in entry.xattrs() {
            fs::fsetxattr(&fd, name, value, XattrFlags::empty()).map_err(io("fsetxattr"))?;
        }
        // Its children usually follow: this fd is their parent.
        if !path.is_empty() {
            let (_, name) = split_parent(path);
            self.stack.push(name, fd);
        }
        self.defer(path, m.mode, m.mtime)
    }

    fn defer(&mut self, path: &[u8], mode: u32, mtime: Time) -> Result<(), ErrorKind> {
        if self.deferred.bytes() + path.len() > DIR_BUDGET {
            self.apply_finished_dirs(path)?;
        }
        self.deferred.paths.extend_from_slice(path);
        let path_end =
            u32::try_from(self.deferred.paths.len()).map_err(|_| ErrorKind::NameTooLong {
                len: path.len() as u64,
                limit: DIR_BUDGET,
            })?;
        self.deferred.records.push(DirRecord {
            path_end,
            mode,
            mtime,
        });
        Ok(())
    }

    /// Applies and forgets the directories that are not ancestors of `current`.
    fn apply_finished_dirs(&mut self, current: &[u8]) -> Result<(), ErrorKind> {
        let old = core::mem::take(&mut self.deferred);
        let mut kept = Deferred::default();
        for i in 0..old.records.len() {
            let p = old.path(i);
            let ancestor =
                p.is_empty() || (current.starts_with(p) && current.get(p.len()) == Some(&b'/'));
            if ancestor {
                kept.paths.extend_from_slice(p);
                kept.records.push(DirRecord {
                    path_end: kept.paths.len() as u32,
                    ..old.records[i]
                });
            } else {
                self.apply_dir(p, old.records[i])?;
            }
        }
        self.deferred = kept;
        Ok(())
    }

    fn apply_dir(&self, path: &[u8], r: DirRecord) -> Result<(), ErrorKind> {
        let fd = match self.open_dir(path, OFlags::RDONLY | OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            // Replaced by a symlink we kept, or removed: nothing to apply.
            Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.resolve_err("open directory")(e)),
        };
        fs::fchmod(&fd, Mode::from_raw_mode(r.mode)).map_err(io("fchmod"))?;
        fs::futimens(&fd, &times(r.mtime)).map_err(io("futimens"))
    }

    fn hardlink(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        let (tdir, tname) = split_parent(entry.link);
        let target_dir = self.open_dir(tdir, OFlags::PATH).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => ErrorKind::LinkOutsideRoot,
            e => self.resolve_err("open link target directory")(e),
        })?;
        self.check_dir(target_dir.as_fd())?;
        let make = |dir: BorrowedFd<'_>, name: &[u8]| {
            fs::linkat(&target_dir, tname, dir, name, AtFlags::empty())
        };
        self.create_node(entry.path, &make, "link")
            .map_err(|e| match e {
                ErrorKind::Io { errno, .. } if errno == Errno::NOENT.raw_os_error() => {
                    ErrorKind::LinkOutsideRoot
                }
                e => e,
            })
    }
}

impl Sink for FsSink {
    fn begin(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        self.check_entry(entry)?;
        let m = entry.meta;
        match m.kind {
            Kind::File => self.begin_file(entry.path, m.mode),
            Kind::Directory => self.directory(entry),
            Kind::Symlink => {
                let target = entry.link;
                self.create_node(
                    entry.path,
                    &|dir, name| fs::symlinkat(target, dir, name),
                    "symlink",
                )
            }
            Kind::Hardlink => self.hardlink(entry),
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                let ft = match m.kind {
                    Kind::CharDevice => FileType::CharacterDevice,
                    Kind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = fs::makedev(m.dev_major, m.dev_minor);
                let perm = Mode::from_raw_mode(m.mode & 0o777);
                self.create_node(
                    entry.path,
                    &|dir, name| fs::mknodat(dir, name, ft, perm, dev),
                    "mknod",
                )
            }
        }
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        let Some(f) = self.file.as_mut() else {
            return Err(ErrorKind::Io {
                op: "write",
                errno: 0,
            });
        };
        // All-zero runs become holes: same content, no page writes.
        if bytes.len() >= 4096 && is_zero(bytes) {
            f.len += bytes.len() as u64;
            return Ok(());
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match rustix::io::pwrite(&f.fd, rest, f.len) {
                Ok(0) => {
                    return Err(ErrorKind::Io {
                        op: "write",
                        errno: Errno::NOSPC.raw_os_error(),
                    })
                }
                Ok(n) => {
                    rest = &rest[n..];
                    f.len += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(io("write")(e)),
            }
        }
        f.written_end = f.len;
        Ok(())
    }

    fn end(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        match entry.meta.kind {
            Kind::File => self.end_file(entry),
            // Modes and mtimes are deferred (see `directory`).
            Kind::Directory | Kind::Hardlink => Ok(()),
            Kind::Symlink | Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                self.finish_node(entry)
            }
        }
    }

    fn skipped(&mut self, _name: &[u8], _typeflag: u8) {
        self.warnings += 1;
    }

    fn finish(&mut self) -> Result<(), ErrorKind> {
        self.stack = DirStack::default();
        let d = core::mem::take(&mut self.deferred);
        for i in (0..d.records.len()).rev() {
            self.apply_dir(d.path(i), d.records[i])?;
        }
        Ok(())
    }

    fn abort(&mut self) {
        // The half-written file (temporary or freshly created) goes.
        if let Some(f) = self.file.take() {
            drop(f.fd);
            let path = core::mem::take(&mut self.file_path);
            let (_, name) = split_parent(&path);
            let target: &[u8] = match &f.tmp {
                Some(t) => t.as_bytes(),
                None => name,
            };
            if let Ok(dir) = self.parent_fd(&path) {
                let _ = fs::unlinkat(dir, target, AtFlags::empty());
            }
            self.file_path = path;
        }
    }
}
