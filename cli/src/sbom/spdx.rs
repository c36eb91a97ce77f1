//! SPDX 2.3 documents as types (the JSON serialisation of the spec's
//! model, fields in the spec's order): written with serde_json, never
//! assembled from strings, and read back the same way (`ember uki build`
//! folds its initrd's SBOM into the UKI's).

use serde::{Deserialize, Serialize};

pub const SPDX_VERSION: &str = "SPDX-2.3";
pub const DATA_LICENSE: &str = "CC0-1.0";
pub const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
/// The spec's word for "the creator of this document makes no claim".
pub const NOASSERTION: &str = "NOASSERTION";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub files: Vec<File>,
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// UTC, `YYYY-MM-DDThh:mm:ssZ`: SOURCE_DATE_EPOCH, so rebuilding with
    /// the same inputs gives the same bytes.
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub supplier: Option<String>,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub checksums: Vec<Checksum>,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub primary_package_purpose: Option<Purpose>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationCode {
    pub package_verification_code_value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Purpose {
    Application,
    Archive,
    Container,
    File,
    Library,
    OperatingSystem,
    Source,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub checksum_value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    /// SPDX 2.3 requires a SHA-1 for every file (a legacy identifier; the
    /// SHA-256 beside it is what Ember compares).
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

impl ExternalRef {
    /// A package URL (purl): `pkg:deb/debian/libc6@2.36-9?arch=amd64`,
    /// `pkg:cargo/sha2@0.10.9`, what scanners match advisories against.
    pub fn purl(locator: String) -> Self {
        ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: locator,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    /// `./` and the path inside the artifact.
    pub file_name: String,
    pub checksums: Vec<Checksum>,
    pub license_concluded: String,
    pub copyright_text: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
}

impl File {
    pub fn checksum(&self, algorithm: Algorithm) -> Option<&str> {
        self.checksums
            .iter()
            .find(|c| c.algorithm == algorithm)
            .map(|c| c.checksum_value.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: RelationshipType,
    pub related_spdx_element: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RelationshipType {
    /// The document describes the artifact.
    Describes,
    /// The artifact (or a package) holds the file.
    Contains,
    /// A file was taken from a package (`file GENERATED_FROM package`).
    GeneratedFrom,
    /// A binary statically links a crate.
    StaticLink,
}

/// An SPDX identifier from free text: `SPDXRef-` then letters, digits,
/// `.` and `-` only (the spec's idstring), other bytes as `-`.
pub fn id(kind: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

/// `created` from a Unix time: RFC 3339 UTC, no time zone database.
pub fn timestamp(unix: u64) -> String {
    ember_nodeapi::utc::UtcTime::from_unix(i64::try_from(unix).unwrap_or(i64::MAX)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        // `date -u -d @1700000000 +%FT%TZ`
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        // A leap day.
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ids_keep_only_the_spec_characters() {
        assert_eq!(
            id("File", "lib/x86_64-linux-gnu/libc.so.6"),
            "SPDXRef-File-lib-x86-64-linux-gnu-libc.so.6"
        );
    }

    #[test]
    fn enums_serialise_as_the_spec_spells_them() {
        let r = Relationship {
            spdx_element_id: "SPDXRef-A".into(),
            relationship_type: RelationshipType::GeneratedFrom,
            related_spdx_element: "SPDXRef-B".into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"spdxElementId":"SPDXRef-A","relationshipType":"GENERATED_FROM","relatedSpdxElement":"SPDXRef-B"}"#
        );
        assert_eq!(
            serde_json::to_string(&Purpose::OperatingSystem).unwrap(),
            "\"OPERATING-SYSTEM\""
        );
    }
}
