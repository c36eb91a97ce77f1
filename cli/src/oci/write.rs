//! Writing a layout: one gzip tar layer holding a tree, optionally on top
//! of a base image's layers, with config, manifest and index. Everything
//! is derived from the inputs and `mtime`, so equal inputs give equal bytes
//! (and equal digests).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ember_fs::cpio::Output;
use ember_fs::gzip_writer::GzipWriter;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::layout::Layout;
use super::spec::{
    self, media, Descriptor, ExecConfig, HistoryEntry, ImageConfig, Index, LayoutMarker, Manifest,
    Platform, RootFs,
};
use super::{tar_writer, Error};
use crate::initrd::Tree;

/// What goes into a layout besides the tree.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `org.opencontainers.image.ref.name` of the manifest in index.json.
    pub tag: String,
    /// A layout whose image (its only one, or `base_ref`) goes below ours.
    pub base: Option<PathBuf>,
    pub base_ref: Option<String>,
    /// Entry times of the layer (SOURCE_DATE_EPOCH).
    pub mtime: u32,
    /// The image config's Entrypoint.
    pub entrypoint: Vec<String>,
}

#[derive(Debug)]
pub struct WriteReport {
    pub manifest: Digest,
    pub layers: usize,
    /// The new layer: compressed size and digests.
    pub layer_bytes: u64,
    pub layer_digest: Digest,
    pub diff_id: Digest,
}

/// Hashes, counts and writes the compressed layer.
struct BlobSink {
    file: std::io::BufWriter<std::fs::File>,
    sha: Sha256,
    bytes: u64,
}

impl Output for BlobSink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ember_fs::Error> {
        self.sha.update(bytes);
        self.bytes += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .map_err(|e| ember_fs::Error::Output(e.raw_os_error().unwrap_or(0)))
    }
}

/// Hashes the uncompressed tar (the layer's diff_id) on its way to gzip.
struct DiffId<O: Output> {
    inner: O,
    sha: Sha256,
}

impl<O: Output> Output for DiffId<O> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ember_fs::Error> {
        self.sha.update(bytes);
        self.inner.put(bytes)
    }
}

/// Writes the layout directory `out` (replacing an earlier layout there,
/// never anything else) through a temporary sibling renamed into place.
/// The image's SBOM, made once its manifest digest is known.
pub type DescribeImage<'a> = &'a dyn Fn(&Digest) -> Vec<u8>;

pub fn write_layout(
    tree: &Tree,
    image: &ImageSpec,
    out: &Path,
    sbom: Option<DescribeImage<'_>>,
) -> Result<WriteReport, Error> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("layout");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = write_into(tree, image, &tmp, sbom).and_then(|report| {
        replace_dir(&tmp, out)?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn replace_dir(tmp: &Path, out: &Path) -> Result<(), Error> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_none();
        if !empty && !out.join("oci-layout").is_file() {
            return Err(Error::OutputInTheWay {
                path: out.to_path_buf(),
            });
        }
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(tmp, out).map_err(|e| Error::io(out, e))
}

fn write_into(
    tree: &Tree,
    image: &ImageSpec,
    dir: &Path,
    sbom: Option<DescribeImage<'_>>,
) -> Result<WriteReport, Error> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;

    let (mut layers, mut diff_ids, mut history) = match &image.base {
        Some(base) => copy_base(base, image.base_ref.as_deref(), dir)?,
        None => (Vec::new(), Vec::new(), Vec::new()),
    };

    let (layer, diff_id) = write_layer(tree, image.mtime, &blobs)?;
    let layer_digest = Digest::parse(&layer.digest)?;
    let layer_bytes = layer.size;
    layers.push(layer);
    diff_ids.push(diff_id.to_string());
    history.push(HistoryEntry {
        created: None,
        created_by: Some("ember image build".to_string()),
        empty_layer: None,
    });

    let config = ImageConfig {
        created: None,
        architecture: "amd64".to_string(),
        os: "linux".to_string(),
        config: ExecConfig {
            entrypoint: image.entrypoint.clone(),
            env: Vec::new(),
        },
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids,
        },
        history,
    };
    let config = put_json(&blobs, media::CONFIG, &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::MANIFEST.to_string()),
        artifact_type: None,
        config,
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let n_layers = manifest.layers.len();
    let mut manifest = put_json(&blobs, media::MANIFEST, &manifest)?;
    manifest
        .annotations
        .insert(spec::REF_NAME.to_string(), image.tag.clone());
    manifest.platform = Some(Platform {
        architecture: "amd64".to_string(),
        os: "linux".to_string(),
    });
    let manifest_digest = Digest::parse(&manifest.digest)?;
    let mut manifests = vec![manifest.clone()];
    if let Some(describe) = sbom {
        manifests.push(attach_sbom(&blobs, &manifest, &describe(&manifest_digest))?);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::INDEX.to_string()),
        manifests,
    };
    write_file(&dir.join("index.json"), &to_json(&index)?)?;
    let marker = LayoutMarker {
        image_layout_version: spec::LAYOUT_VERSION.to_string(),
    };
    write_file(&dir.join("oci-layout"), &to_json(&marker)?)?;
    Ok(WriteReport {
        manifest: manifest_digest,
        layers: n_layers,
        layer_bytes,
        layer_digest,
        diff_id,
    })
}

/// Writes `document` (the image's SPDX SBOM) as an OCI 1.1 artifact
/// whose subject is the image manifest `image`: an empty config, one
/// `application/spdx+json` layer. Its index entry is named
/// `sha256-<image digest>.sbom` (the tag registries without the referrers
/// API use, cosign's form), so `skopeo copy oci:LAYOUT:sha256-….sbom`
/// and `oras` find it, and it carries `artifactType`, so readers that
/// want the image (and `ember initrd build --from-oci`) skip it.
fn attach_sbom(blobs: &Path, image: &Descriptor, document: &[u8]) -> Result<Descriptor, Error> {
    let layer = put_bytes(blobs, media::SPDX, document)?;
    let config = put_bytes(blobs, media::EMPTY, b"{}")?;
    let subject = Descriptor {
        media_type: image.media_type.clone(),
        digest: image.digest.clone(),
        size: image.size,
        annotations: BTreeMap::new(),
        platform: None,
        artifact_type: None,
    };
    let artifact = Manifest {
        schema_version: 2,
        media_type: Some(media::MANIFEST.to_string()),
        artifact_type: Some(media::SPDX.to_string()),
        config,
        layers: vec![layer],
        subject: Some(subject),
        annotations: BTreeMap::new(),
    };
    let mut desc = put_json(blobs, media::MANIFEST, &artifact)?;
    desc.artifact_type = Some(media::SPDX.to_string());
    let tag = format!("{}.sbom", image.digest.replace(':', "-"));
    desc.annotations.insert(spec::REF_NAME.to_string(), tag);
    Ok(desc)
}

/// Copies the base image's layer blobs (as they are: their digests stay
/// valid) and returns its layer descriptors, diff_ids and history.
#[allow(clippy::type_complexity)]
fn copy_base(
    base: &Path,
    reference: Option<&str>,
    dir: &Path,
) -> Result<(Vec<Descriptor>, Vec<String>, Vec<HistoryEntry>), Error> {
    let layout = Layout::open(base)?;
    let image = layout.resolve(reference)?;
    for layer in &image.manifest.layers {
        if spec::layer_encoding(&layer.media_type).is_none() {
            return Err(Error::UnsupportedMediaType {
                media_type: layer.media_type.clone(),
            });
        }
        let (digest, src) = layout.blob_path(layer)?;
        let dst = digest.blob_path(dir);
        verify_file(&src, layer, &digest)?;
        std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
    }
    Ok((
        image.manifest.layers,
        image.config.rootfs.diff_ids,
        image.config.history,
    ))
}

fn verify_file(path: &Path, desc: &Descriptor, digest: &Digest) -> Result<(), Error> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut sha = Sha256::new();
    let n = std::io::copy(&mut file, &mut sha).map_err(|e| Error::io(path, e))?;
    if n != desc.size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: n,
        });
    }
    let actual = Digest::from_raw(&sha.finalize().into());
    if &actual != digest {
        return Err(Error::DigestMismatch {
            digest: desc.digest.clone(),
            actual: actual.hex().to_string(),
        });
    }
    Ok(())
}

fn write_layer(tree: &Tree, mtime: u32, blobs: &Path) -> Result<(Descriptor, Digest), Error> {
    let tmp = blobs.join(".layer.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let sink = BlobSink {
        file: std::io::BufWriter::new(file),
        sha: Sha256::new(),
        bytes: 0,
    };
    let mut tar = DiffId {
        inner: GzipWriter::new(sink, 9),
        sha: Sha256::new(),
    };
    let encode_err = |e: ember_fs::Error| Error::Io {
        path: tmp.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    tar_writer::write_tree(tree, mtime, &mut tar).map_err(encode_err)?;
    let diff_id = Digest::from_raw(&tar.sha.finalize().into());
    let sink = tar.inner.finish().map_err(encode_err)?;
    let BlobSink { file, sha, bytes } = sink;
    file.into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io(&tmp, e))?;
    let digest = Digest::from_raw(&sha.finalize().into());
    let dst = digest.blob_path(blobs.parent().and_then(Path::parent).unwrap_or(blobs));
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    Ok((
        Descriptor {
            media_type: media::LAYER_GZIP.to_string(),
            digest: digest.to_string(),
            size: bytes,
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        },
        diff_id,
    ))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|source| Error::Json {
        what: "serializing".to_string(),
        source,
    })
}

/// Stores a JSON document as a blob and returns its descriptor.
fn put_json<T: Serialize>(blobs: &Path, media_type: &str, v: &T) -> Result<Descriptor, Error> {
    put_bytes(blobs, media_type, &to_json(v)?)
}

fn put_bytes(blobs: &Path, media_type: &str, bytes: &[u8]) -> Result<Descriptor, Error> {
    let digest = Digest::of(bytes);
    write_file(&blobs.join(digest.hex()), bytes)?;
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
        artifact_type: None,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::Node;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.insert(
            "init",
            Node::File {
                data: b"\x7fELF".to_vec(),
                mode: 0o755,
            },
        )
        .unwrap();
        t.insert(
            "etc/ssl/certs/ca.crt",
            Node::File {
                data: b"pem".to_vec(),
                mode: 0o644,
            },
        )
        .unwrap();
        t.insert(
            "dev/console",
            Node::CharDevice {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        )
        .unwrap();
        t.insert(
            "bin",
            Node::Symlink {
                target: "usr/bin".into(),
            },
        )
        .unwrap();
        t
    }

    fn spec() -> ImageSpec {
        ImageSpec {
            tag: "latest".into(),
            base: None,
            base_ref: None,
            mtime: 0,
            entrypoint: vec!["/init".into()],
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ember-oci-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn written_layout_reads_back_to_the_same_tree() {
        let dir = scratch("roundtrip");
        let out = dir.join("img");
        let report = write_layout(&sample(), &spec(), &out, None).unwrap();
        let layout = Layout::open(&out).unwrap();
        let image = layout.resolve(Some("latest")).unwrap();
        assert_eq!(image.manifest_digest, report.manifest);
        assert_eq!(image.config.rootfs.diff_ids, [report.diff_id.to_string()]);
        let (tree, flat) = super::super::flatten::flatten(&layout, &image).unwrap();
        assert_eq!(flat.layers, 1);
        let a: Vec<_> = tree.iter().collect();
        let b = sample();
        let b: Vec<_> = b.iter().collect();
        assert_eq!(a, b);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sbom_is_an_artifact_referring_to_the_image() {
        let dir = scratch("sbom");
        let out = dir.join("img");
        let describe = |d: &Digest| format!("{{\"describes\":\"{d}\"}}").into_bytes();
        let report = write_layout(&sample(), &spec(), &out, Some(&describe)).unwrap();
        let layout = Layout::open(&out).unwrap();
        // Readers that want the image still find exactly one.
        let image = layout.resolve(None).unwrap();
        assert_eq!(image.manifest_digest, report.manifest);
        let index = layout.index().unwrap();
        assert_eq!(index.manifests.len(), 2);
        let sbom = &index.manifests[1];
        assert_eq!(sbom.artifact_type.as_deref(), Some(media::SPDX));
        let tag = format!("sha256-{}.sbom", report.manifest.hex());
        assert_eq!(sbom.ref_name(), Some(tag.as_str()));
        let artifact: Manifest = layout.read_json(sbom).unwrap();
        assert_eq!(artifact.artifact_type.as_deref(), Some(media::SPDX));
        assert_eq!(artifact.config.media_type, media::EMPTY);
        let subject = artifact.subject.unwrap();
        assert_eq!(subject.digest, report.manifest.to_string());
        assert_eq!(artifact.layers[0].media_type, media::SPDX);
        let (_, path) = layout.blob_path(&artifact.layers[0]).unwrap();
        assert_eq!(
            std::fs::read(path).unwrap(),
            describe(&report.manifest),
            "the SBOM names the image's manifest digest"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn equal_inputs_give_equal_manifest_digests_and_base_layers_stack() {
        let dir = scratch("stack");
        let a = write_layout(&sample(), &spec(), &dir.join("a"), None).unwrap();
        let b = write_layout(&sample(), &spec(), &dir.join("a"), None).unwrap();
        assert_eq!(a.manifest, b.manifest);

        let mut top = Tree::new();
        top.insert(
            "etc/ssl/certs/.wh.ca.crt",
            Node::File {
                data: vec![],
                mode: 0o644,
            },
        )
        .unwrap();
        top.insert(
            "etc/motd",
            Node::File {
                data: b"hi".to_vec(),
                mode: 0o644,
            },
        )
        .unwrap();
        let stacked = ImageSpec {
            base: Some(dir.join("a")),
            ..spec()
        };
        let r = write_layout(&top, &stacked, &dir.join("b"), None).unwrap();
        assert_eq!(r.layers, 2);
        let layout = Layout::open(&dir.join("b")).unwrap();
        let image = layout.resolve(None).unwrap();
        let (tree, flat) = super::super::flatten::flatten(&layout, &image).unwrap();
        assert_eq!(flat.whiteouts, 1);
        assert!(tree.get("etc/ssl/certs/ca.crt").is_none());
        assert!(tree.get("etc/motd").is_some());
        assert!(tree.get("init").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_non_layout_directory_is_never_replaced() {
        let dir = scratch("inway");
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::write(dir.join("out/precious"), b"x").unwrap();
        let err = write_layout(&sample(), &spec(), &dir.join("out"), None).unwrap_err();
        assert!(matches!(err, Error::OutputInTheWay { .. }));
        assert!(dir.join("out/precious").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tampered_layer_blob_is_refused() {
        let dir = scratch("tamper");
        let out = dir.join("img");
        let r = write_layout(&sample(), &spec(), &out, None).unwrap();
        let blob = r.layer_digest.blob_path(&out);
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 12;
        bytes[last] ^= 1;
        std::fs::write(&blob, bytes).unwrap();
        let layout = Layout::open(&out).unwrap();
        let image = layout.resolve(None).unwrap();
        assert!(super::super::flatten::flatten(&layout, &image).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
