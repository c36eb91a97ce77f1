//! The project and its Rust crates as origins: the workspace's version and
//! commit, and the crates a binary is built from, from `cargo metadata`
//! (normal dependencies only, for the x86_64 Linux target: what is linked
//! in, not dev or build tools) with each crate's declared license, and the
//! registry checksum Cargo.lock pins for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The project at its commit, and the crates of its /init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    pub version: String,
    /// The git commit the sources are at (`git rev-parse HEAD`), or what
    /// EMBER_SOURCE_COMMIT says when the build has no git (a sandbox).
    pub commit: String,
    /// What the init binary links, sorted by name and version.
    pub init_crates: Vec<Crate>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// The manifest's `license` (an SPDX expression; old `A/B` spellings
    /// read as `A OR B`); `None` when the crate declares none.
    pub license: Option<String>,
    /// Cargo.lock's SHA-256 of the registry's .crate file; `None` for the
    /// workspace's own crates (they are the project).
    pub checksum: Option<String>,
    pub from_registry: bool,
}

impl Crate {
    pub fn purl(&self) -> String {
        format!("pkg:cargo/{}@{}", self.name, self.version)
    }
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    resolve: Resolve,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct MetaPackage {
    name: String,
    version: String,
    id: String,
    license: Option<String>,
    source: Option<String>,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
}

impl MetaPackage {
    /// A proc-macro runs in the compiler; nothing of it is linked.
    fn is_proc_macro(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.kind.iter().any(|k| k == "proc-macro"))
    }
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    /// `null` for a normal dependency, "dev" or "build" otherwise.
    kind: Option<String>,
}

/// Reads the workspace at `dir`: `cargo metadata` (offline, locked), its
/// Cargo.lock and its commit. `binary_crate` is the package whose
/// dependency closure the init binary is (ember-init).
pub fn read_workspace(dir: &Path, binary_crate: &str) -> Result<Project> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed for {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let lock = std::fs::read_to_string(dir.join("Cargo.lock"))
        .with_context(|| format!("reading {}/Cargo.lock", dir.display()))?;
    let mut project = from_metadata(&out.stdout, &lock, binary_crate)?;
    project.commit = commit(dir)?;
    Ok(project)
}

fn commit(dir: &Path) -> Result<String> {
    if let Ok(c) = std::env::var("EMBER_SOURCE_COMMIT") {
        if !c.trim().is_empty() {
            return Ok(c.trim().to_string());
        }
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .context("running git rev-parse (or set EMBER_SOURCE_COMMIT)")?;
    if !out.status.success() {
        bail!(
            "{} is not a git checkout: set EMBER_SOURCE_COMMIT to the sources' commit",
            dir.display()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The closure of `binary_crate`'s normal dependencies, from `cargo
/// metadata` JSON and Cargo.lock's text.
pub fn from_metadata(metadata: &[u8], lock: &str, binary_crate: &str) -> Result<Project> {
    let meta: Metadata = serde_json::from_slice(metadata).context("parsing cargo metadata")?;
    let by_id: BTreeMap<&str, &MetaPackage> =
        meta.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    let nodes: BTreeMap<&str, &Node> = meta
        .resolve
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let root = meta
        .packages
        .iter()
        .find(|p| p.name == binary_crate && meta.workspace_members.contains(&p.id))
        .with_context(|| format!("the workspace has no package {binary_crate}"))?;
    let checksums = lock_checksums(lock);
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.id.as_str()];
    while let Some(id) = todo.pop() {
        if by_id.get(id).is_some_and(|p| p.is_proc_macro()) || !seen.insert(id) {
            continue;
        }
        let node = nodes
            .get(id)
            .with_context(|| format!("cargo metadata resolves no node {id}"))?;
        for dep in &node.deps {
            if dep.dep_kinds.iter().any(|k| k.kind.is_none()) {
                todo.push(dep.pkg.as_str());
            }
        }
    }
    let mut crates = Vec::new();
    for id in seen {
        let p = by_id
            .get(id)
            .with_context(|| format!("cargo metadata lists no package {id}"))?;
        let from_registry = p
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"));
        crates.push(Crate {
            name: p.name.clone(),
            version: p.version.clone(),
            license: p.license.as_deref().map(normalise_license),
            checksum: checksums
                .get(&(p.name.clone(), p.version.clone()))
                .cloned()
                .filter(|_| from_registry),
            from_registry,
        });
    }
    crates.sort();
    Ok(Project {
        name: "ember".into(),
        version: root.version.clone(),
        commit: String::new(),
        init_crates: crates,
    })
}

/// Old manifests write `MIT/Apache-2.0`; SPDX says `MIT OR Apache-2.0`.
fn normalise_license(l: &str) -> String {
    l.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
}

/// (name, version) → checksum from Cargo.lock's `[[package]]` blocks.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let (mut name, mut version) = (None, None);
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    for line in lock.lines() {
        if line == "[[package]]" {
            (name, version) = (None, None);
        } else if let Some(v) = value(line, "name = ") {
            name = Some(v);
        } else if let Some(v) = value(line, "version = ") {
            version = Some(v);
        } else if let Some(v) = value(line, "checksum = ") {
            if let (Some(n), Some(ver)) = (&name, &version) {
                out.insert((n.clone(), ver.clone()), v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{
      "packages": [
        {"name":"app","version":"0.1.0","id":"path+file:///w/app#0.1.0","license":"MIT","source":null},
        {"name":"sha2","version":"0.10.9","id":"registry+https://github.com/rust-lang/crates.io-index#sha2@0.10.9","license":"MIT/Apache-2.0","source":"registry+https://github.com/rust-lang/crates.io-index"},
        {"name":"proptest","version":"1.0.0","id":"registry+https://github.com/rust-lang/crates.io-index#proptest@1.0.0","license":"MIT","source":"registry+https://github.com/rust-lang/crates.io-index"},
        {"name":"serde_derive","version":"1.0.0","id":"registry+https://github.com/rust-lang/crates.io-index#serde_derive@1.0.0","license":"MIT","source":"registry+https://github.com/rust-lang/crates.io-index","targets":[{"kind":["proc-macro"]}]},
        {"name":"cc","version":"1.0.0","id":"registry+https://github.com/rust-lang/crates.io-index#cc@1.0.0","license":null,"source":"registry+https://github.com/rust-lang/crates.io-index"}
      ],
      "workspace_members": ["path+file:///w/app#0.1.0"],
      "resolve": {"nodes": [
        {"id":"path+file:///w/app#0.1.0","deps":[
          {"pkg":"registry+https://github.com/rust-lang/crates.io-index#sha2@0.10.9","dep_kinds":[{"kind":null,"target":null}]},
          {"pkg":"registry+https://github.com/rust-lang/crates.io-index#proptest@1.0.0","dep_kinds":[{"kind":"dev","target":null}]},
          {"pkg":"registry+https://github.com/rust-lang/crates.io-index#serde_derive@1.0.0","dep_kinds":[{"kind":null,"target":null}]},
          {"pkg":"registry+https://github.com/rust-lang/crates.io-index#cc@1.0.0","dep_kinds":[{"kind":"build","target":null}]}
        ]},
        {"id":"registry+https://github.com/rust-lang/crates.io-index#sha2@0.10.9","deps":[]},
        {"id":"registry+https://github.com/rust-lang/crates.io-index#proptest@1.0.0","deps":[]},
        {"id":"registry+https://github.com/rust-lang/crates.io-index#cc@1.0.0","deps":[]},
        {"id":"registry+https://github.com/rust-lang/crates.io-index#serde_derive@1.0.0","deps":[]}
      ]}
    }"#;
    const LOCK: &str = "[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n\
        [[package]]\nname = \"sha2\"\nversion = \"0.10.9\"\nsource = \"registry+x\"\n\
        checksum = \"abcd\"\n";

    #[test]
    fn only_linked_crates_are_listed_with_lock_checksums() {
        let p = from_metadata(METADATA.as_bytes(), LOCK, "app").unwrap();
        let names: Vec<_> = p.init_crates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["app", "sha2"],
            "dev, build and proc-macro dependencies are not linked"
        );
        let sha2 = &p.init_crates[1];
        assert_eq!(sha2.checksum.as_deref(), Some("abcd"));
        assert_eq!(sha2.license.as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(p.init_crates[0].checksum, None);
        assert_eq!(p.version, "0.1.0");
    }

    #[test]
    fn a_missing_binary_crate_is_an_error() {
        assert!(from_metadata(METADATA.as_bytes(), LOCK, "nope").is_err());
    }
}
