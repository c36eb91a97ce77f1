//! Overlay extraction: a push-style, streaming, confined tar extractor.
//!
//! ```text
//! bytes (any chunking) ─┬─ SHA-256 ──────────────────────────────► Summary::sha256
//!                       └─ gzip? ─ inflate ─ CRC/ISIZE ─ tar Machine ─► Sink
//! ```
//!
//! The parser, the state machine and the gzip layer are `no_std` + alloc and
//! independent of any filesystem ([`Sink`] is the seam); [`fs_sink::FsSink`]
//! writes to disk through rustix with openat2 confinement.
//!
//! How the init extracts the overlay into `/` as chunks arrive:
//!
//! ```no_run
//! use ember_fs::tar::{Confinement, Extractor, FsSink, Limits, Protection};
//! # fn next_chunk() -> Option<&'static [u8]> { None }
//! # fn run(expected: [u8; 32]) -> Result<(), ember_fs::tar::Error> {
//! // In `/`, absolute symlinks already there (/var/run -> /run) must resolve
//! // inside the root: InRoot. For a scratch directory, Beneath refuses them.
//! // Protection::SYSTEM keeps the overlay out of /proc, /sys, /dev, /boot,
//! // /run/ember and off every other mount.
//! let sink = FsSink::open("/", Confinement::InRoot)?.protect(Protection::SYSTEM)?;
//! let mut x = Extractor::new(sink, Limits { max_tar_bytes: 2 << 30, ..Limits::default() });
//! while let Some(chunk) = next_chunk() {
//!     x.write(chunk)?; // any chunk boundaries
//! }
//! let summary = x.finish()?; // end marker, gzip trailer, deferred dir metadata
//! summary.check_sha256(&expected)?;
//! # Ok(()) }
//! ```

mod entry;
mod error;
mod extract;
pub mod fs_sink;
mod gzip;
pub mod header;
mod lz4;
mod machine;
pub mod pax;
pub mod protect;
mod sink;
#[cfg(test)]
mod tests;

pub use entry::{Entry, Kind, Meta, Time};
pub use error::{Error, ErrorKind, Field, Located, Part};
pub use extract::{Extractor, Summary};
pub use fs_sink::{Confinement, FsSink};
pub use lz4::MAGIC as LZ4_MAGIC;
pub use protect::Protection;
pub use sink::Sink;

/// How the tar stream is compressed: what [`Extractor::authenticated`] is
/// told (from the signed manifest); [`Extractor::new`] detects gzip by magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip members (RFC 1952).
    Gzip,
    /// LZ4 frames (lz4 frame format 1.6).
    Lz4,
}

/// Caps that keep hostile archives from exhausting memory or the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of the (inflated) tar stream (zip-bomb guard).
    pub max_tar_bytes: u64,
    /// Size of one pax extended header payload (local or global).
    pub max_pax: usize,
    /// Length of a name or link target.
    pub max_name: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tar_bytes: 16 << 30,
            max_pax: 1 << 20,
            max_name: 4096,
        }
    }
}
