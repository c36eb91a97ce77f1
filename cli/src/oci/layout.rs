//! Reading a layout: the marker, index.json, and blobs checked against
//! their descriptors before anything trusts them.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::digest::Digest;
use super::spec::{self, Descriptor, ImageConfig, Index, LayoutMarker, Manifest};
use super::Error;

/// JSON documents larger than this are refused (real ones are kilobytes).
const MAX_JSON: u64 = 4 << 20;
/// Image indexes inside indexes deeper than this are a loop.
const MAX_INDEX_DEPTH: usize = 4;

pub struct Layout {
    root: PathBuf,
}

/// A manifest picked from a layout, with its parsed config.
#[derive(Debug)]
pub struct ResolvedImage {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Layout {
    /// Opens a layout directory after checking its `oci-layout` marker.
    pub fn open(root: &Path) -> Result<Self, Error> {
        let marker_path = root.join("oci-layout");
        let text = std::fs::read(&marker_path).map_err(|_| Error::NotALayout {
            path: root.to_path_buf(),
        })?;
        let marker: LayoutMarker = serde_json::from_slice(&text).map_err(|source| Error::Json {
            what: marker_path.display().to_string(),
            source,
        })?;
        if marker.image_layout_version != spec::LAYOUT_VERSION {
            return Err(Error::LayoutVersion {
                found: marker.image_layout_version,
            });
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    pub fn index(&self) -> Result<Index, Error> {
        let path = self.root.join("index.json");
        let bytes = read_capped(&path, MAX_JSON)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        })
    }

    /// The path of a blob named by a descriptor (digest validated first).
    pub fn blob_path(&self, desc: &Descriptor) -> Result<(Digest, PathBuf), Error> {
        let digest = Digest::parse(&desc.digest)?;
        let path = digest.blob_path(&self.root);
        Ok((digest, path))
    }

    /// Reads a small blob whole and checks its size and digest.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        let (digest, path) = self.blob_path(desc)?;
        if desc.size > MAX_JSON {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: MAX_JSON,
            });
        }
        let bytes = read_capped(&path, desc.size + 1)?;
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                digest: desc.digest.clone(),
                actual: actual.hex().to_string(),
            });
        }
        Ok(bytes)
    }

    pub(crate) fn read_json<T: DeserializeOwned>(&self, desc: &Descriptor) -> Result<T, Error> {
        let bytes = self.read_blob(desc)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: desc.digest.clone(),
            source,
        })
    }

    /// Picks the image: by `org.opencontainers.image.ref.name` when a
    /// reference is given, else the only manifest; image indexes are
    /// followed to their linux/amd64 entry.
    pub fn resolve(&self, reference: Option<&str>) -> Result<ResolvedImage, Error> {
        let index = self.index()?;
        let refs: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_string))
            .collect();
        let chosen = match reference {
            Some(r) => index
                .manifests
                .iter()
                .find(|d| d.ref_name() == Some(r))
                .ok_or_else(|| Error::RefNotFound {
                    reference: r.to_string(),
                    refs: refs.clone(),
                })?,
            // Artifacts (an image's SBOM) are not images to pick from.
            None => match index
                .manifests
                .iter()
                .filter(|d| d.artifact_type.is_none())
                .collect::<Vec<_>>()
                .as_slice()
            {
                [] => return Err(Error::NoManifest),
                [only] => *only,
                _ => return Err(Error::Ambiguous { refs }),
            },
        };
        let mut desc = chosen.clone();
        for _ in 0..MAX_INDEX_DEPTH {
            if spec::is_manifest(&desc.media_type) {
                let manifest: Manifest = self.read_json(&desc)?;
                let config: ImageConfig = self.read_json(&manifest.config)?;
                return Ok(ResolvedImage {
                    manifest_digest: Digest::parse(&desc.digest)?,
                    manifest,
                    config,
                });
            }
            if !spec::is_index(&desc.media_type) {
                return Err(Error::UnsupportedMediaType {
                    media_type: desc.media_type,
                });
            }
            let inner: Index = self.read_json(&desc)?;
            desc = pick_platform(&inner)
                .cloned()
                .ok_or_else(|| Error::NoPlatform {
                    digest: desc.digest.clone(),
                })?;
        }
        Err(Error::IndexTooDeep)
    }
}

/// The linux/amd64 entry of an index, or its only entry when untagged.
fn pick_platform(index: &Index) -> Option<&Descriptor> {
    let want = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    };
    index
        .manifests
        .iter()
        .find(want)
        .or(match index.manifests.as_slice() {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}
