//! The JSON documents of image-spec v1 that a layout holds, with only the
//! fields Ember reads or writes. Unknown fields are ignored on read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const LAYOUT_VERSION: &str = "1.0.0";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub mod media {
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// The empty config of an artifact manifest (`{}`, OCI 1.1).
    pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// An SPDX JSON document (IANA), an SBOM artifact's type and layer.
    pub const SPDX: &str = "application/spdx+json";
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const LAYER_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const LAYER_ND_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LayoutMarker {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// An artifact's type (OCI 1.1), e.g. an SBOM's `application/spdx+json`;
    /// `None` for an image.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// An artifact manifest's type (OCI 1.1); `None` for an image.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The manifest an artifact refers to (OCI 1.1 referrers): an SBOM's
    /// image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ExecConfig {
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub config: ExecConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// How a layer's bytes are encoded, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerEncoding {
    Tar,
    Gzip,
}

pub fn layer_encoding(media_type: &str) -> Option<LayerEncoding> {
    match media_type {
        media::LAYER_TAR | media::LAYER_ND_TAR => Some(LayerEncoding::Tar),
        media::LAYER_GZIP | media::LAYER_ND_GZIP | media::DOCKER_LAYER_GZIP => {
            Some(LayerEncoding::Gzip)
        }
        _ => None,
    }
}

pub fn is_index(media_type: &str) -> bool {
    media_type == media::INDEX || media_type == media::DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == media::MANIFEST || media_type == media::DOCKER_MANIFEST
}
