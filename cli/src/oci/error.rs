//! One error type for reading and writing layouts, a variant per cause.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// A file of the layout could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON document (index, manifest, config) is malformed.
    Json {
        what: String,
        source: serde_json::Error,
    },
    /// The directory has no readable `oci-layout` marker.
    NotALayout { path: PathBuf },
    /// The `oci-layout` marker names a version this reader does not know.
    LayoutVersion { found: String },
    /// The index lists no image manifest at all.
    NoManifest,
    /// Several manifests and no reference to choose one.
    Ambiguous { refs: Vec<String> },
    /// No manifest carries the requested `org.opencontainers.image.ref.name`.
    RefNotFound {
        reference: String,
        refs: Vec<String>,
    },
    /// An image index has no linux/amd64 manifest.
    NoPlatform { digest: String },
    /// Indexes nest deeper than a real layout ever does (a loop).
    IndexTooDeep,
    /// A digest string is not `algorithm:encoded` with valid characters.
    BadDigest { digest: String },
    /// A digest algorithm other than sha256.
    UnsupportedAlgorithm { algorithm: String },
    /// A blob's content does not hash to its digest.
    DigestMismatch { digest: String, actual: String },
    /// A blob's length is not the descriptor's size.
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// A media type this reader cannot unpack (zstd layers, foreign types).
    UnsupportedMediaType { media_type: String },
    /// A layer says gzip but is not (or the reverse).
    CompressionMismatch { digest: String, media_type: String },
    /// The tar (or gzip) stream of a layer is malformed.
    LayerTar {
        digest: String,
        source: std::io::Error,
    },
    /// A layer inflates to more than the reader holds in memory.
    LayerTooLarge { digest: String, limit: u64 },
    /// A member name climbs out of the root with `..`.
    PathEscapes { path: String },
    /// A member name is not UTF-8 (initrd paths are).
    NonUtf8Path { path: String },
    /// A hard link names a file that is not (yet) in the image.
    HardlinkTarget { path: String, target: String },
    /// The member cannot be placed in the tree (e.g. its parent is a file).
    Tree { path: String, reason: String },
    /// The output path exists and is not an OCI layout we may replace.
    OutputInTheWay { path: PathBuf },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            Io { path, source } => write!(f, "{}: {source}", path.display()),
            Json { what, source } => write!(f, "{what}: invalid JSON: {source}"),
            NotALayout { path } => write!(
                f,
                "{}: not an OCI image layout (no readable oci-layout file)",
                path.display()
            ),
            LayoutVersion { found } => {
                write!(f, "unsupported imageLayoutVersion {found:?} (want 1.0.0)")
            }
            NoManifest => write!(f, "index.json lists no image manifest"),
            Ambiguous { refs } => write!(
                f,
                "index.json lists several manifests; choose one with a reference ({})",
                refs.join(", ")
            ),
            RefNotFound { reference, refs } => write!(
                f,
                "no manifest named {reference:?} in index.json (have: {})",
                refs.join(", ")
            ),
            NoPlatform { digest } => write!(f, "image index {digest} has no linux/amd64 manifest"),
            IndexTooDeep => write!(f, "image indexes nest too deeply"),
            BadDigest { digest } => write!(f, "malformed digest {digest:?}"),
            UnsupportedAlgorithm { algorithm } => {
                write!(
                    f,
                    "unsupported digest algorithm {algorithm:?} (only sha256)"
                )
            }
            DigestMismatch { digest, actual } => {
                write!(f, "blob {digest} hashes to sha256:{actual}")
            }
            SizeMismatch {
                digest,
                expected,
                actual,
            } => write!(
                f,
                "blob {digest} is {actual} bytes, descriptor says {expected}"
            ),
            UnsupportedMediaType { media_type } => {
                write!(f, "unsupported media type {media_type:?}")
            }
            CompressionMismatch { digest, media_type } => write!(
                f,
                "layer {digest}: compression does not match media type {media_type}"
            ),
            LayerTar { digest, source } => write!(f, "layer {digest}: {source}"),
            LayerTooLarge { digest, limit } => {
                write!(f, "layer {digest} holds more than {limit} bytes")
            }
            PathEscapes { path } => write!(f, "member name {path:?} leaves the root"),
            NonUtf8Path { path } => write!(f, "member name {path:?} is not UTF-8"),
            HardlinkTarget { path, target } => write!(
                f,
                "hard link {path} -> {target}: target is not a regular file in the image"
            ),
            Tree { path, reason } => write!(f, "{path}: {reason}"),
            OutputInTheWay { path } => write!(
                f,
                "{}: exists and is not an OCI layout; refusing to replace it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            Error::LayerTar { source, .. } => Some(source),
            _ => None,
        }
    }
}
