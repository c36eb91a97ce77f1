//! The tar extractor's error: what went wrong ([`ErrorKind`], one variant
//! per cause) and where (the entry's name and the tar-stream offset of its
//! header), so every refusal names the entry.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use crate::quoted::Quoted;

/// A numeric header field, named in [`ErrorKind::BadNumber`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Mode,
    Uid,
    Gid,
    Size,
    Mtime,
    Checksum,
    DevMajor,
    DevMinor,
}

/// Where in the stream the input ended too early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    /// Inside an entry's data (or a pax/GNU long-name payload).
    Data,
    /// After the last entry, before the end-of-archive zero blocks.
    EndMarker,
    /// Inside the gzip header, deflate stream or trailer.
    Gzip,
    /// Inside an LZ4 frame.
    Lz4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A header's checksum field disagrees with its bytes.
    BadChecksum { stored: u64, computed: u64 },
    /// A numeric field is neither octal nor valid base-256.
    BadNumber { field: Field },
    /// The input ended early.
    Truncated { part: Part },
    /// An entry has an empty name.
    EmptyName,
    /// A name (or link target) is longer than [`super::Limits::max_name`].
    NameTooLong { len: u64, limit: usize },
    /// A pax extended header is larger than [`super::Limits::max_pax`].
    PaxTooLarge { size: u64, limit: usize },
    /// A pax record's length, key or value is malformed.
    PaxMalformed { reason: &'static str },
    /// More tar bytes than [`super::Limits::max_tar_bytes`] (a zip bomb).
    TooLarge { limit: u64 },
    /// The gzip header is not one we can read.
    GzipHeader { reason: &'static str },
    /// The deflate stream is corrupt.
    Inflate { reason: &'static str },
    /// The gzip trailer's CRC-32 disagrees with the inflated bytes.
    GzipCrc { stored: u32, computed: u32 },
    /// The gzip trailer's ISIZE disagrees with the inflated length.
    GzipSize { stored: u32, computed: u32 },
    /// Bytes follow the gzip stream that are not another gzip member.
    TrailingGarbage,
    /// The LZ4 frame header is not one we can read.
    Lz4Header { reason: &'static str },
    /// An LZ4 block is corrupt or larger than its frame allows.
    Lz4Block { reason: &'static str },
    /// The name has a `..` component.
    PathEscapes,
    /// The name is absolute.
    AbsolutePath,
    /// A hard link's target is outside the root (`..`, absolute) or missing.
    LinkOutsideRoot,
    /// A non-directory would replace an existing directory.
    ReplacesDirectory,
    /// Resolving the name crossed a symlink that leaves the root.
    SymlinkEscapes,
    /// The entry is at or under a protected system path (its name, or the
    /// real location a symlink led it to).
    Protected { area: &'static str },
    /// A symlink or hard link entry points at or under a protected path.
    LinkIntoProtected { area: &'static str },
    /// Resolving the name reached a directory on another mount than the root.
    CrossesMount,
    /// A system call failed.
    Io { op: &'static str, errno: i32 },
    /// The SHA-256 of the stream is not the one the caller expected. Boxed:
    /// inline, the two digests made every `ErrorKind` 72 bytes, copied by
    /// each `?` of the extractor (and of the init, which wraps it).
    DigestMismatch {
        expected: Box<[u8; 32]>,
        actual: Box<[u8; 32]>,
    },
    /// `write` or `finish` was called after the extractor failed or finished.
    Finished,
}

/// An [`ErrorKind`] with the entry it happened at, when there is one.
/// Boxed: inline it was 56 bytes, moved by every `?` of the extractor and
/// returned through memory; one pointer fits in a register (the fields read
/// through `Deref`, `e.kind`, `e.entry`, `e.offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<Located>);

/// What [`Error`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub kind: ErrorKind,
    /// The entry's name (lossy UTF-8), if the failure belongs to an entry.
    pub entry: Option<String>,
    /// Offset of the entry's header (or of the failure) in the tar stream.
    pub offset: u64,
}

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(Located {
            kind,
            entry: None,
            offset: 0,
        }))
    }

    /// The failure at `offset` in the tar stream, outside any entry.
    pub(crate) fn at_byte(kind: ErrorKind, offset: u64) -> Self {
        let mut e = Error::new(kind);
        e.0.offset = offset;
        e
    }

    pub(crate) fn at(mut self, entry: &[u8], offset: u64) -> Self {
        if self.0.entry.is_none() {
            self.0.entry = Some(String::from_utf8_lossy(entry).into_owned());
            self.0.offset = offset;
        }
        self
    }
}

impl core::ops::Deref for Error {
    type Target = Located;
    fn deref(&self) -> &Located {
        &self.0
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(e) => {
                write!(
                    f,
                    "entry {} (header at byte {}): {}",
                    Quoted(e),
                    self.offset,
                    self.kind
                )
            }
            None if self.offset > 0 => write!(f, "at tar byte {}: {}", self.offset, self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            BadChecksum { stored, computed } => {
                write!(
                    f,
                    "header checksum mismatch (stored {stored}, computed {computed})"
                )
            }
            BadNumber { field } => write!(f, "malformed numeric field {field:?}"),
            Truncated { part } => write!(f, "archive truncated ({part:?})"),
            EmptyName => write!(f, "empty name"),
            NameTooLong { len, limit } => {
                write!(f, "name of {len} bytes exceeds the limit of {limit}")
            }
            PaxTooLarge { size, limit } => {
                write!(f, "pax header of {size} bytes exceeds the limit of {limit}")
            }
            PaxMalformed { reason } => write!(f, "malformed pax header: {reason}"),
            TooLarge { limit } => write!(f, "archive inflates beyond the limit of {limit} bytes"),
            GzipHeader { reason } => write!(f, "bad gzip header: {reason}"),
            Inflate { reason } => write!(f, "corrupt deflate stream: {reason}"),
            GzipCrc { stored, computed } => {
                write!(
                    f,
                    "gzip CRC-32 mismatch (trailer {stored:08x}, data {computed:08x})"
                )
            }
            GzipSize { stored, computed } => {
                write!(
                    f,
                    "gzip size mismatch (trailer {stored}, data {computed} mod 2^32)"
                )
            }
            TrailingGarbage => write!(f, "bytes after the gzip stream are not gzip"),
            Lz4Header { reason } => write!(f, "bad lz4 frame header: {reason}"),
            Lz4Block { reason } => write!(f, "bad lz4 block: {reason}"),
            PathEscapes => write!(f, "refused: name has a `..` component"),
            AbsolutePath => write!(f, "refused: absolute name"),
            LinkOutsideRoot => write!(f, "refused: hard link target outside the root"),
            ReplacesDirectory => write!(f, "refused: would replace an existing directory"),
            SymlinkEscapes => write!(f, "refused: path goes through a symlink leaving the root"),
            Protected { area } => write!(f, "refused: /{area} is a protected system path"),
            LinkIntoProtected { area } => {
                write!(f, "refused: link points into protected system path /{area}")
            }
            CrossesMount => write!(f, "refused: path crosses a mount point"),
            Io { op, errno } => write!(f, "{op} failed: errno {errno}"),
            DigestMismatch { expected, actual } => {
                f.write_str("SHA-256 mismatch: expected ")?;
                write!(f, "{}", crate::hex::Hex(&expected[..]))?;
                f.write_str(", got ")?;
                write!(f, "{}", crate::hex::Hex(&actual[..]))
            }
            Finished => write!(f, "extractor already finished or failed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
