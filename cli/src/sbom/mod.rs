//! SBOMs: an SPDX 2.3 JSON document written beside every initrd and UKI
//! `ember` builds (`ARTIFACT.spdx.json`), tracing each file to where it
//! came from.
//!
//! - `spdx.rs`: the SPDX 2.3 model as types (serde), dates and identifiers.
//! - `deb.rs`: Debian packages as origins (a .deb's fields, checksum,
//!   license and the digests of the files it installs).
//! - `cargo.rs`: the project at its commit and the Rust crates its /init
//!   links (cargo metadata + Cargo.lock).
//! - this file: which origin each file of an artifact has, and the
//!   document that says so. No I/O but reading and writing the document.
//!
//! The document is a function of the inputs only (no clock, no paths of the
//! build machine, everything sorted): the same inputs give the same bytes.

pub mod cargo;
pub mod deb;
pub mod spdx;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ring::digest;

use self::cargo::Project;
use self::deb::Deb;
use self::spdx::{
    Algorithm, Checksum, CreationInfo, Document, ExternalRef, File, Package, Purpose, Relationship,
    RelationshipType, VerificationCode, NOASSERTION,
};

/// Where the files of an artifact may have come from, as given on the
/// command line (`--sbom-deb`, `--sbom-workspace`).
#[derive(Clone, Debug, Default)]
pub struct Origins {
    pub debs: Vec<Deb>,
    pub project: Option<Project>,
}

impl Origins {
    /// No origin given: every file goes unattributed, which the build
    /// does not repeat file by file.
    pub fn is_empty(&self) -> bool {
        self.debs.is_empty() && self.project.is_none()
    }
}

/// The command-line options every artifact build shares.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OriginArgs {
    /// A Debian package the artifact's files were taken from (the .deb
    /// file); repeat. A file whose bytes are one of the package's files is
    /// recorded as coming from it, with its version and the .deb's SHA-256.
    #[arg(long = "sbom-deb", value_name = "DEB")]
    pub debs: Vec<PathBuf>,
    /// The Cargo workspace /init was built from: the SBOM names the
    /// project at its git commit (or EMBER_SOURCE_COMMIT) and the crates
    /// /init links, from `cargo metadata` and Cargo.lock.
    #[arg(long = "sbom-workspace", value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

impl OriginArgs {
    pub fn read(&self) -> Result<Origins> {
        let mut debs = Vec::new();
        for path in &self.debs {
            debs.push(Deb::read(path).with_context(|| format!("reading {}", path.display()))?);
        }
        // Sorted, so the order of --sbom-deb does not change the bytes.
        debs.sort_by(|a, b| (&a.package, &a.version).cmp(&(&b.package, &b.version)));
        debs.dedup_by(|a, b| a.package == b.package && a.version == b.version);
        let project = match &self.workspace {
            Some(dir) => Some(cargo::read_workspace(dir, "ember-init")?),
            None => None,
        };
        Ok(Origins { debs, project })
    }
}

/// The artifact a document describes.
pub struct Artifact<'a> {
    /// `initrd` or `uki`: the primary package's identifier and name.
    pub kind: &'a str,
    pub file_name: &'a str,
    pub sha256: &'a str,
    pub purpose: Purpose,
    /// SOURCE_DATE_EPOCH: the document's `created`.
    pub created: u64,
}

/// What a file in the artifact is, as its builder knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The init binary: the project's, linking its crates.
    Init,
    /// Written by `ember` itself (modules.dep, the module list, the UKI's
    /// command line and os-release): the project's.
    Generated,
    /// Copied in from an input: traced by its bytes to a .deb.
    Input,
}

/// One file of the artifact.
pub struct Entry<'a> {
    /// The path inside the artifact, no leading `/`.
    pub path: String,
    pub data: &'a [u8],
    pub role: Role,
}

/// The package identifiers of the origins, as the document writes them.
fn deb_id(d: &Deb) -> String {
    spdx::id("Package-deb", &format!("{}-{}", d.package, d.version))
}
fn crate_id(c: &cargo::Crate) -> String {
    spdx::id("Package-crate", &format!("{}-{}", c.name, c.version))
}
const PROJECT_ID: &str = "SPDXRef-Package-project";
fn artifact_id(kind: &str) -> String {
    spdx::id("Package", kind)
}

/// The document for `artifact` holding `entries`. Files no origin
/// accounts for are listed (the artifact contains them) without a
/// GENERATED_FROM and are returned by path, so the caller can say so.
pub fn describe(
    artifact: &Artifact,
    entries: &[Entry],
    origins: &Origins,
) -> (Document, Vec<String>) {
    let mut doc = empty_document(artifact);
    let mut used_debs = BTreeSet::new();
    let mut project_used = false;
    let mut unidentified = Vec::new();
    let mut files = Vec::new();
    let mut taken_ids = BTreeSet::new();
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for entry in sorted {
        let file = file_of(artifact.kind, entry, &mut taken_ids);
        let sha256 = file
            .checksum(Algorithm::Sha256)
            .unwrap_or_default()
            .to_string();
        let origin = match entry.role {
            Role::Init | Role::Generated if origins.project.is_some() => {
                project_used = true;
                Some(PROJECT_ID.to_string())
            }
            Role::Init | Role::Generated => None,
            Role::Input => find_deb(&origins.debs, &entry.path, &sha256).map(|i| {
                used_debs.insert(i);
                deb_id(&origins.debs[i])
            }),
        };
        doc.relationships.push(Relationship {
            spdx_element_id: artifact_id(artifact.kind),
            relationship_type: RelationshipType::Contains,
            related_spdx_element: file.spdx_id.clone(),
        });
        match origin {
            Some(origin) => doc.relationships.push(Relationship {
                spdx_element_id: file.spdx_id.clone(),
                relationship_type: RelationshipType::GeneratedFrom,
                related_spdx_element: origin,
            }),
            None => unidentified.push(entry.path.clone()),
        }
        if entry.role == Role::Init {
            if let Some(project) = &origins.project {
                for c in &project.init_crates {
                    doc.relationships.push(Relationship {
                        spdx_element_id: file.spdx_id.clone(),
                        relationship_type: RelationshipType::StaticLink,
                        related_spdx_element: crate_id(c),
                    });
                }
            }
        }
        files.push(file);
    }
    doc.packages[0].package_verification_code = Some(verification_code(&files));
    doc.files = files;
    for i in used_debs {
        doc.packages.push(deb_package(&origins.debs[i]));
    }
    if let Some(project) = origins.project.as_ref().filter(|_| project_used) {
        doc.packages.push(project_package(project));
        for c in &project.init_crates {
            doc.packages.push(crate_package(c));
        }
    }
    doc.relationships.sort();
    doc.relationships.dedup();
    (doc, unidentified)
}

fn empty_document(artifact: &Artifact) -> Document {
    let primary = Package {
        spdx_id: artifact_id(artifact.kind),
        name: artifact.file_name.to_string(),
        version_info: None,
        supplier: None,
        download_location: NOASSERTION.into(),
        files_analyzed: true,
        package_verification_code: None,
        checksums: vec![Checksum {
            algorithm: Algorithm::Sha256,
            checksum_value: artifact.sha256.to_string(),
        }],
        license_concluded: NOASSERTION.into(),
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        comment: Some(format!(
            "The Ember {} this document describes.",
            artifact.kind
        )),
        external_refs: Vec::new(),
        primary_package_purpose: Some(artifact.purpose),
    };
    Document {
        spdx_version: spdx::SPDX_VERSION.into(),
        data_license: spdx::DATA_LICENSE.into(),
        spdx_id: spdx::DOCUMENT_ID.into(),
        name: format!("{} {}", artifact.kind, artifact.file_name),
        // Unique per artifact, and a function of its bytes only.
        document_namespace: format!(
            "https://ember.invalid/spdx/{}/{}",
            artifact.kind, artifact.sha256
        ),
        creation_info: CreationInfo {
            created: spdx::timestamp(artifact.created),
            creators: vec![format!("Tool: ember-{}", env!("CARGO_PKG_VERSION"))],
        },
        packages: vec![primary],
        files: Vec::new(),
        relationships: vec![Relationship {
            spdx_element_id: spdx::DOCUMENT_ID.into(),
            relationship_type: RelationshipType::Describes,
            related_spdx_element: artifact_id(artifact.kind),
        }],
    }
}

fn file_of(kind: &str, entry: &Entry, taken: &mut BTreeSet<String>) -> File {
    let sha1 =
        ember_fs::hex::hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, entry.data).as_ref());
    let sha256 = ember_fs::hex::hex(digest::digest(&digest::SHA256, entry.data).as_ref());
    // Two paths can clean to one identifier (`a_b`, `a-b`): number the
    // later one. Entries come sorted, so the numbering is stable.
    let base = spdx::id(&format!("File-{kind}"), &entry.path);
    let mut id = base.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    File {
        spdx_id: id,
        file_name: format!("./{}", entry.path),
        checksums: vec![
            Checksum {
                algorithm: Algorithm::Sha1,
                checksum_value: sha1,
            },
            Checksum {
                algorithm: Algorithm::Sha256,
                checksum_value: sha256,
            },
        ],
        license_concluded: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        comment: None,
    }
}

/// The package whose files include these bytes: one that installs them at
/// the same path first (libraries live in several packages' trees only
/// by accident), else the first by name.
fn find_deb(debs: &[Deb], path: &str, sha256: &str) -> Option<usize> {
    let holders: Vec<usize> = (0..debs.len())
        .filter(|&i| debs[i].files.contains_key(sha256))
        .collect();
    holders
        .iter()
        .copied()
        .find(|&i| debs[i].files[sha256].iter().any(|p| p == path))
        .or_else(|| holders.first().copied())
}

/// SPDX 2.3 §7.9: SHA-1 over the sorted, concatenated SHA-1s of the files.
fn verification_code(files: &[File]) -> VerificationCode {
    let mut sha1s: Vec<&str> = files
        .iter()
        .filter_map(|f| f.checksum(Algorithm::Sha1))
        .collect();
    sha1s.sort_unstable();
    let joined = sha1s.concat();
    VerificationCode {
        package_verification_code_value: ember_fs::hex::hex(
            digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, joined.as_bytes()).as_ref(),
        ),
    }
}

fn deb_package(d: &Deb) -> Package {
    Package {
        spdx_id: deb_id(d),
        name: d.package.clone(),
        version_info: Some(d.version.clone()),
        supplier: Some("Organization: Debian".into()),
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        package_verification_code: None,
        checksums: vec![Checksum {
            algorithm: Algorithm::Sha256,
            checksum_value: d.sha256.clone(),
        }],
        license_concluded: NOASSERTION.into(),
        license_declared: d.license.clone().unwrap_or_else(|| NOASSERTION.into()),
        copyright_text: NOASSERTION.into(),
        comment: Some(format!(
            "Debian package {}_{}_{}.deb",
            d.package, d.version, d.architecture
        )),
        external_refs: vec![ExternalRef::purl(d.purl())],
        primary_package_purpose: Some(Purpose::Archive),
    }
}

fn project_package(p: &Project) -> Package {
    Package {
        spdx_id: PROJECT_ID.into(),
        name: p.name.clone(),
        version_info: Some(format!("{}+{}", p.version, p.commit)),
        supplier: None,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        package_verification_code: None,
        checksums: Vec::new(),
        license_concluded: NOASSERTION.into(),
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        comment: Some(format!("Ember's sources at commit {}", p.commit)),
        external_refs: Vec::new(),
        primary_package_purpose: Some(Purpose::Source),
    }
}

fn crate_package(c: &cargo::Crate) -> Package {
    Package {
        spdx_id: crate_id(c),
        name: c.name.clone(),
        version_info: Some(c.version.clone()),
        supplier: None,
        download_location: if c.from_registry {
            format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                c.name, c.version
            )
        } else {
            NOASSERTION.into()
        },
        files_analyzed: false,
        package_verification_code: None,
        checksums: c
            .checksum
            .iter()
            .map(|v| Checksum {
                algorithm: Algorithm::Sha256,
                checksum_value: v.clone(),
            })
            .collect(),
        license_concluded: NOASSERTION.into(),
        license_declared: c.license.clone().unwrap_or_else(|| NOASSERTION.into()),
        copyright_text: NOASSERTION.into(),
        comment: None,
        external_refs: vec![ExternalRef::purl(c.purl())],
        primary_package_purpose: Some(Purpose::Library),
    }
}

/// `ARTIFACT.spdx.json`: where an artifact's SBOM is written and read.
pub fn path_beside(artifact: &Path) -> PathBuf {
    let mut p = artifact.as_os_str().to_owned();
    p.push(".spdx.json");
    PathBuf::from(p)
}

/// The document's bytes: pretty JSON and a final newline.
pub fn to_bytes(doc: &Document) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("an SPDX document serialises");
    bytes.push(b'\n');
    bytes
}

/// Writes the document beside `artifact` (atomically, like the artifact).
pub fn write_beside(artifact: &Path, doc: &Document) -> Result<PathBuf> {
    let path = path_beside(artifact);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, to_bytes(doc)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub fn read(path: &Path) -> Result<Document> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not an SPDX 2.3 JSON document", path.display()))
}

/// The SBOM beside `artifact`, checked to describe exactly its bytes
/// (`sha256`, hex): its first package is the artifact, with that SHA-256.
/// `None` when there is none; an SBOM of other bytes (edited, or left from
/// another build) is an error naming `rebuild`, what refreshes it.
pub fn read_describing(artifact: &Path, sha256: &str, rebuild: &str) -> Result<Option<Document>> {
    let path = path_beside(artifact);
    if !path.exists() {
        return Ok(None);
    }
    let doc = read(&path)?;
    let described = doc.packages.first().and_then(|p| {
        p.checksums
            .iter()
            .find(|c| c.algorithm == spdx::Algorithm::Sha256)
    });
    if described.map(|c| c.checksum_value.as_str()) != Some(sha256) {
        anyhow::bail!(
            "{} does not describe {} (sha256 {sha256}): {rebuild} to refresh its SBOM",
            path.display(),
            artifact.display()
        );
    }
    Ok(Some(doc))
}

/// The packages `doc` names besides the artifact it describes (its first
/// package): name, version (empty when not given) and purl (empty when
/// none), sorted, each once.
pub fn packages(doc: &Document) -> Vec<(String, String, String)> {
    let mut out: BTreeSet<(String, String, String)> = BTreeSet::new();
    for p in doc.packages.iter().skip(1) {
        let purl = p
            .external_refs
            .iter()
            .find(|r| r.reference_type == "purl")
            .map(|r| r.reference_locator.clone())
            .unwrap_or_default();
        out.insert((
            p.name.clone(),
            p.version_info.clone().unwrap_or_default(),
            purl,
        ));
    }
    out.into_iter().collect()
}

/// Folds `inner` (an initrd's document) into `outer` (its UKI's): its
/// packages, files and relationships, and `outer`'s primary package
/// CONTAINS `inner`'s.
pub fn embed(outer: &mut Document, inner: &Document) {
    let mut have: BTreeSet<String> = outer.packages.iter().map(|p| p.spdx_id.clone()).collect();
    for p in &inner.packages {
        if have.insert(p.spdx_id.clone()) {
            outer.packages.push(p.clone());
        }
    }
    let files: BTreeMap<&str, &File> = outer
        .files
        .iter()
        .map(|f| (f.spdx_id.as_str(), f))
        .collect();
    let new_files: Vec<File> = inner
        .files
        .iter()
        .filter(|f| !files.contains_key(f.spdx_id.as_str()))
        .cloned()
        .collect();
    outer.files.extend(new_files);
    let described: Vec<String> = inner
        .relationships
        .iter()
        .filter(|r| {
            r.spdx_element_id == spdx::DOCUMENT_ID
                && r.relationship_type == RelationshipType::Describes
        })
        .map(|r| r.related_spdx_element.clone())
        .collect();
    let outer_primary = outer.packages[0].spdx_id.clone();
    for r in &inner.relationships {
        if r.spdx_element_id != spdx::DOCUMENT_ID {
            outer.relationships.push(r.clone());
        }
    }
    for d in described {
        outer.relationships.push(Relationship {
            spdx_element_id: outer_primary.clone(),
            relationship_type: RelationshipType::Contains,
            related_spdx_element: d,
        });
    }
    outer.relationships.sort();
    outer.relationships.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb(name: &str, files: &[(&str, &[u8])]) -> Deb {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, data) in files {
            map.entry(ember_fs::hex::hex(
                digest::digest(&digest::SHA256, data).as_ref(),
            ))
            .or_default()
            .push(path.to_string());
        }
        Deb {
            package: name.into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            sha256: "00".repeat(32),
            license: Some("MIT".into()),
            files: map,
        }
    }

    fn artifact() -> Artifact<'static> {
        Artifact {
            kind: "initrd",
            file_name: "initrd.cpio",
            sha256: "ab",
            purpose: Purpose::Archive,
            created: 0,
        }
    }

    #[test]
    fn files_are_traced_by_their_bytes_and_unknown_ones_reported() {
        let origins = Origins {
            debs: vec![
                deb("libc6", &[("lib/x86_64-linux-gnu/libc.so.6", b"libc")]),
                deb("other", &[("usr/lib/libc.so.6", b"libc")]),
            ],
            project: None,
        };
        let entries = [
            Entry {
                path: "lib/x86_64-linux-gnu/libc.so.6".into(),
                data: b"libc",
                role: Role::Input,
            },
            Entry {
                path: "etc/mystery".into(),
                data: b"?",
                role: Role::Input,
            },
        ];
        let (doc, unidentified) = describe(&artifact(), &entries, &origins);
        assert_eq!(unidentified, ["etc/mystery"]);
        let libc = doc
            .files
            .iter()
            .find(|f| f.file_name == "./lib/x86_64-linux-gnu/libc.so.6")
            .unwrap();
        assert!(doc.relationships.contains(&Relationship {
            spdx_element_id: libc.spdx_id.clone(),
            relationship_type: RelationshipType::GeneratedFrom,
            related_spdx_element: "SPDXRef-Package-deb-libc6-1.0-1".into(),
        }));
        // The package not used is not listed.
        let names: Vec<_> = doc.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["initrd.cpio", "libc6"]);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_in_any_order() {
        let origins = Origins::default();
        let a = Entry {
            path: "a".into(),
            data: b"1",
            role: Role::Input,
        };
        let b = Entry {
            path: "b".into(),
            data: b"2",
            role: Role::Input,
        };
        let (d1, _) = describe(&artifact(), &[a, b], &origins);
        let a = Entry {
            path: "a".into(),
            data: b"1",
            role: Role::Input,
        };
        let b = Entry {
            path: "b".into(),
            data: b"2",
            role: Role::Input,
        };
        let (d2, _) = describe(&artifact(), &[b, a], &origins);
        assert_eq!(to_bytes(&d1), to_bytes(&d2));
        let back: Document = serde_json::from_slice(&to_bytes(&d1)).unwrap();
        assert_eq!(back, d1);
    }

    #[test]
    fn verification_code_is_sha1_of_sorted_file_sha1s() {
        // SHA-1("") and SHA-1("a") sorted, concatenated, hashed:
        // printf '%s%s' 86f7e437faa5a7fce15d1ddcb9eaeaea377667b8 \
        //   da39a3ee5e6b4b0d3255bfef95601890afd80709 | sha1sum
        let origins = Origins::default();
        let entries = [
            Entry {
                path: "x".into(),
                data: b"",
                role: Role::Input,
            },
            Entry {
                path: "y".into(),
                data: b"a",
                role: Role::Input,
            },
        ];
        let (doc, _) = describe(&artifact(), &entries, &origins);
        let code = doc.packages[0]
            .package_verification_code
            .as_ref()
            .unwrap()
            .package_verification_code_value
            .clone();
        let expected = "2a6f520ef2c17a239311f8ede54e4039d5500711";
        assert_eq!(code, expected);
    }
}
