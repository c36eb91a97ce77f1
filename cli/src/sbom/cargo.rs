//! The project and its Rust crates as origins: the workspace's version and
//! commit, and the crates a binary is built from, from `cargo tree -p
//! BINARY -e normal,no-proc-macro` for the x86_64 Linux target (features
//! resolved for that package alone, as `cargo build -p` does: what is
//! linked in, not dev or build tools, not what other workspace members
//! switch on) with each crate's declared license, and the registry
//! checksum Cargo.lock pins for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

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

/// Reads the workspace at `dir`: `cargo tree` (offline, locked), its
/// Cargo.lock, its version and its commit. `binary_crate` is the package
/// whose linked closure the init binary is (ember-init).
pub fn read_workspace(dir: &Path, binary_crate: &str) -> Result<Project> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["tree", "--offline", "--locked", "-p", binary_crate])
        .args(["-e", "normal,no-proc-macro"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["--prefix", "none", "--format", "{p}|{l}"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed for {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let lock = std::fs::read_to_string(dir.join("Cargo.lock"))
        .with_context(|| format!("reading {}/Cargo.lock", dir.display()))?;
    let mut project = from_tree(&String::from_utf8_lossy(&out.stdout), &lock, binary_crate)?;
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

/// The crates of `cargo tree --prefix none --format '{p}|{l}'` output:
/// `NAME vVERSION[ (PATH)]|LICENSE[ (*)]` a line, repeats marked `(*)`.
/// A crate with a path is the workspace's own; the others come from the
/// registry, with Cargo.lock's checksum.
pub fn from_tree(tree: &str, lock: &str, binary_crate: &str) -> Result<Project> {
    let checksums = lock_checksums(lock);
    let mut crates = BTreeSet::new();
    let mut version = None;
    for line in tree.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.trim_end().trim_end_matches(" (*)");
        let (package, license) = line
            .split_once('|')
            .with_context(|| format!("unexpected cargo tree line {line:?}"))?;
        let mut words = package.split_whitespace();
        let (Some(name), Some(v)) = (words.next(), words.next()) else {
            bail!("unexpected cargo tree line {line:?}");
        };
        let v = v
            .strip_prefix('v')
            .with_context(|| format!("no version in cargo tree line {line:?}"))?;
        let from_registry = words.next().is_none();
        if name == binary_crate {
            version = Some(v.to_string());
        }
        let license = license.trim();
        crates.insert(Crate {
            name: name.to_string(),
            version: v.to_string(),
            license: Some(license)
                .filter(|l| !l.is_empty())
                .map(normalise_license),
            checksum: checksums
                .get(&(name.to_string(), v.to_string()))
                .cloned()
                .filter(|_| from_registry),
            from_registry,
        });
    }
    let version = version.with_context(|| format!("cargo tree lists no package {binary_crate}"))?;
    Ok(Project {
        name: "ember".into(),
        version,
        commit: String::new(),
        init_crates: crates.into_iter().collect(),
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

    // `cargo tree -p app -e normal,no-proc-macro --prefix none
    // --format '{p}|{l}'`: dev, build and proc-macro crates are already
    // left out by cargo.
    const TREE: &str = "app v0.1.0 (/w/app)|MIT\n\
        sha2 v0.10.9|MIT/Apache-2.0\n\
        cfg-if v1.0.0|\n\
        sha2 v0.10.9|MIT/Apache-2.0 (*)\n";
    const LOCK: &str = "[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n\
        [[package]]\nname = \"sha2\"\nversion = \"0.10.9\"\nsource = \"registry+x\"\n\
        checksum = \"abcd\"\n";

    #[test]
    fn crates_come_with_versions_licenses_and_lock_checksums() {
        let p = from_tree(TREE, LOCK, "app").unwrap();
        let names: Vec<_> = p.init_crates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "cfg-if", "sha2"], "sorted, repeats once");
        let sha2 = &p.init_crates[2];
        assert_eq!(sha2.checksum.as_deref(), Some("abcd"));
        assert_eq!(sha2.license.as_deref(), Some("MIT OR Apache-2.0"));
        assert!(sha2.from_registry);
        assert_eq!(p.init_crates[1].license, None, "no license declared");
        assert_eq!(p.init_crates[0].checksum, None);
        assert!(!p.init_crates[0].from_registry);
        assert_eq!(p.version, "0.1.0");
    }

    #[test]
    fn a_missing_binary_crate_or_odd_line_is_an_error() {
        assert!(from_tree(TREE, LOCK, "nope").is_err());
        assert!(from_tree("garbage", LOCK, "app").is_err());
    }
}
