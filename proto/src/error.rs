//! The crate's one error type: a distinct variant per cause.

use alloc::boxed::Box;
use core::fmt;

use crate::msg::ErrorCode;

/// Every `?` moves the error, so it is one pointer: `Result<(), Error>`
/// comes back in a register (the kind inline is 40 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(kind))
    }

    /// What failed.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

/// What an [`Error`] is: one variant per cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A message did not decode as the expected postcard type.
    Decode { what: &'static str },
    /// The peer speaks a protocol version we do not.
    UnsupportedVersion { got: u16 },
    /// A boot's phase table is in a format version we do not read.
    TimelineVersion { got: u16 },
    /// A boot's phase table has more phases than the format allows.
    TimelineTooLong { phases: usize },
    /// A phase name is empty, too long, or not `[a-z0-9-]`.
    TimelinePhaseName,
    /// A sealed stream does not start with Ember's header.
    SealedBadHeader,
    /// A sealed stream's chunk size is outside the allowed range.
    SealedBadChunkSize { size: u32 },
    /// A sealed chunk failed authentication (tampered, reordered or swapped).
    SealedChunkAuth { index: u64 },
    /// The sealed stream ended before its final chunk.
    SealedTruncated { index: u64 },
    /// The sealed stream was used after it failed or finished.
    SealedUnusable,
    /// The blob is sealed under another key than the manifest's (another
    /// overlay's ciphertext, swapped in).
    BlobOtherOverlay,
    /// `manifest.pub` is not a P-256 public key.
    ManifestKey,
    /// The manifest's signature does not verify with the initrd's key
    /// (forged, edited, or signed by another server).
    ManifestSignature,
    /// The manifest is signed but in a format this init does not read.
    ManifestFormat { got: u16 },
    /// The data key is not the one the signed manifest commits to.
    KeyCommitmentMismatch,
    /// The boot image record's signature does not verify with the initrd's
    /// key (forged or edited).
    BootImageSignature,
    /// The boot image record is signed but in a format this init does not read.
    BootImageFormat { got: u16 },
    /// The boot image record was signed with another overlay manifest.
    BootImageOtherManifest,
    /// A last-known-good slot record in a format this init does not read.
    SlotRecordVersion { got: u32 },
    /// The wrapped data key does not open with this session's secret.
    KeyUnwrap,
    /// The manifest's epoch is older than one this node already blessed.
    ManifestRollback { epoch: u64, blessed: u64 },
    /// The decrypted overlay's length differs from the announced size.
    OverlaySizeMismatch { expected: u64, got: u64 },
    /// The server answered with a protocol error.
    Server {
        step: &'static str,
        status: u16,
        code: ErrorCode,
        detail: Box<str>,
        /// The response's `Retry-After` (seconds), for a transient code.
        retry_after_s: Option<u32>,
    },
    /// The server answered with a status and body that are not a protocol error.
    UnexpectedResponse { step: &'static str, status: u16 },
    /// The HTTPS transport failed. `unreachable`: no exchange with the
    /// server happened at all (no route, refused, timed out), as opposed to
    /// a TLS or certificate failure, which a man in the middle could cause
    /// and which must not send a node to its cached overlay.
    Transport {
        step: &'static str,
        detail: Box<str>,
        unreachable: bool,
    },
    /// A TPM operation failed.
    Tpm { op: &'static str, detail: Box<str> },
    /// The extractor refused the overlay.
    Sink { detail: Box<str> },
    /// The node's activated secret does not have the expected length.
    BadSecretLength { len: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            ErrorKind::Decode { what } => write!(f, "malformed {what} message"),
            ErrorKind::UnsupportedVersion { got } => {
                write!(f, "unsupported protocol version {got}")
            }
            ErrorKind::TimelineVersion { got } => {
                write!(f, "boot timeline: unsupported format version {got}")
            }
            ErrorKind::TimelineTooLong { phases } => write!(
                f,
                "boot timeline: {phases} phases (at most {})",
                crate::timeline::MAX_PHASES
            ),
            ErrorKind::TimelinePhaseName => write!(
                f,
                "boot timeline: a phase name is empty, longer than {} or not [a-z0-9-]",
                crate::timeline::MAX_PHASE_NAME
            ),
            ErrorKind::SealedBadHeader => write!(f, "sealed overlay: bad header"),
            ErrorKind::SealedBadChunkSize { size } => {
                write!(f, "sealed overlay: chunk size {size} out of range")
            }
            ErrorKind::SealedChunkAuth { index } => {
                write!(f, "sealed overlay: chunk {index} failed authentication (tampered, swapped or reordered)")
            }
            ErrorKind::SealedTruncated { index } => {
                write!(f, "sealed overlay: stream truncated at chunk {index}")
            }
            ErrorKind::SealedUnusable => {
                write!(f, "sealed overlay: stream already failed or finished")
            }
            ErrorKind::BlobOtherOverlay => {
                write!(f, "sealed overlay: another overlay's blob (key differs)")
            }
            ErrorKind::ManifestKey => write!(f, "manifest.pub is not a P-256 public key"),
            ErrorKind::ManifestSignature => {
                write!(f, "manifest signature does not verify (forged)")
            }
            ErrorKind::ManifestFormat { got } => write!(f, "manifest format {got} unsupported"),
            ErrorKind::KeyCommitmentMismatch => {
                write!(f, "data key differs from the manifest's commitment")
            }
            ErrorKind::BootImageSignature => {
                write!(f, "boot image record signature does not verify (forged)")
            }
            ErrorKind::BootImageFormat { got } => write!(f, "boot image format {got} unsupported"),
            ErrorKind::BootImageOtherManifest => {
                write!(f, "boot image record belongs to another manifest")
            }
            ErrorKind::SlotRecordVersion { got } => {
                write!(f, "slot record version {got} unsupported")
            }
            ErrorKind::KeyUnwrap => write!(f, "data key does not unwrap for this session"),
            ErrorKind::ManifestRollback { epoch, blessed } => write!(
                f,
                "manifest epoch {epoch} is older than the blessed epoch {blessed} (rollback)"
            ),
            ErrorKind::OverlaySizeMismatch { expected, got } => {
                write!(
                    f,
                    "overlay size {got} differs from the announced {expected}"
                )
            }
            ErrorKind::Server {
                step,
                status,
                code,
                detail,
                ..
            } => {
                write!(
                    f,
                    "{step}: server refused with {status} {}: {detail}",
                    code.name()
                )
            }
            ErrorKind::UnexpectedResponse { step, status } => {
                write!(f, "{step}: unexpected HTTP status {status}")
            }
            ErrorKind::Transport { step, detail, .. } => write!(f, "{step}: transport: {detail}"),
            ErrorKind::Tpm { op, detail } => write!(f, "TPM {op}: {detail}"),
            ErrorKind::Sink { detail } => write!(f, "extractor: {detail}"),
            ErrorKind::BadSecretLength { len } => {
                write!(f, "activated secret has {len} bytes, expected 32")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
