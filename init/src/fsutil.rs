//! Small file helpers on rustix.

use alloc::string::String;
use alloc::vec::Vec;

use rustix::fs::{open, Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, ErrorKind};

/// Reads a whole (small) file: /proc, /sys and configuration files.
pub fn read_file(path: &str) -> Result<Vec<u8>, Error> {
    read_file_raw(path).map_err(|errno| {
        Error::new(ErrorKind::Read {
            path: path.into(),
            errno,
        })
    })
}

pub fn read_file_raw(path: &str) -> Result<Vec<u8>, Errno> {
    let fd = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    read_each(&fd, &mut buf, |piece| {
        out.extend_from_slice(piece);
        Ok::<(), Errno>(())
    })
    .map_err(|e| match e {
        Stop::Read(errno) | Stop::Each(errno) => errno,
    })?;
    Ok(out)
}

/// Why [`read_each`] stopped before the end of the file.
#[derive(Debug)]
pub enum Stop<E> {
    /// read(2) failed.
    Read(Errno),
    /// The consumer refused a piece.
    Each(E),
}

/// Reads `fd` to its end through `buf`, handing each piece to `each`: the
/// init's one read loop (a signal retries the read).
pub fn read_each<E>(
    fd: impl rustix::fd::AsFd,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), Stop<E>> {
    loop {
        match rustix::io::read(fd.as_fd(), &mut *buf) {
            Ok(0) => return Ok(()),
            Ok(n) => each(&buf[..n]).map_err(Stop::Each)?,
            Err(Errno::INTR) => {}
            Err(e) => return Err(Stop::Read(e)),
        }
    }
}

/// Reads a file as UTF-8 text (lossy: kernel files are ASCII).
pub fn read_text(path: &str) -> Result<String, Error> {
    let bytes = read_file(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes a whole file, replacing it.
pub fn write_file(path: &str, data: &[u8], mode: u32) -> Result<(), Error> {
    let err = |errno| {
        Error::new(ErrorKind::Write {
            path: path.into(),
            errno,
        })
    };
    let fd = open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(err)?;
    write_all(&fd, data).map_err(err)
}

/// Writes all of `bytes` to `fd`, retrying after signals. A write that
/// makes no progress is an I/O error rather than a spin.
pub fn write_all(fd: impl rustix::fd::AsFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(fd.as_fd(), bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `path` and its missing parents (like `mkdir -p`).
pub fn mkdir_all(path: &str, mode: u32) -> Result<(), Error> {
    // Every prefix that ends before a '/' (past the first byte), then the
    // whole path. A '/' is a char boundary, so `get` always succeeds; it is
    // used rather than `[..]`, whose panic path drags char formatting and
    // Unicode tables into /init.
    let slashes = path.bytes().enumerate().skip(1).filter(|&(_, b)| b == b'/');
    let ends = slashes.map(|(i, _)| i).chain(core::iter::once(path.len()));
    for dir in ends
        .filter_map(|end| path.get(..end))
        .filter(|d| !d.is_empty())
    {
        match rustix::fs::mkdir(dir, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(errno) => {
                return Err(Error::new(ErrorKind::Write {
                    path: dir.into(),
                    errno,
                }))
            }
        }
    }
    Ok(())
}

/// Inserts into a sorted vector. Directory listings are sorted this way
/// rather than with `sort()`, whose generic code costs kilobytes of /init
/// per element type.
pub fn insert_sorted<T: Ord>(sorted: &mut Vec<T>, item: T) {
    let at = sorted.binary_search(&item).unwrap_or_else(|at| at);
    sorted.insert(at, item);
}

pub fn exists(path: &str) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXISTS).is_ok()
}

/// Names in a directory, without `.` and `..`.
pub fn list_dir(path: &str) -> Result<Vec<String>, Error> {
    let err = |errno| {
        Error::new(ErrorKind::Read {
            path: path.into(),
            errno,
        })
    };
    let fd = open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let mut dir = rustix::fs::Dir::read_from(&fd).map_err(err)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            insert_sorted(&mut names, String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(names)
}
