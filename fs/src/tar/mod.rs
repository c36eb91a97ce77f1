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

mod crc32;
mod entry;
mod error;
mod extract;
pub mod fs_sink;
mod gzip;
pub mod header;
mod machine;
pub mod pax;
mod sink;
#[cfg(test)]
mod tests;

pub use entry::{Entry, Kind, Meta, Time};
pub use error::{Error, ErrorKind, Field, Part};
pub use extract::{Extractor, Summary};
pub use fs_sink::{Confinement, FsSink};
pub use sink::Sink;

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
