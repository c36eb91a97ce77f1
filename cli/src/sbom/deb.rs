//! Debian packages as origins: a .deb's control fields (through
//! `dpkg-deb -f`), its own SHA-256, and the SHA-256 of every regular file
//! it installs (its data archive, through `dpkg-deb --fsys-tarfile`, read
//! with the tar crate). A file in an image is traced to a package when its
//! bytes are one of the package's files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// One .deb, read once.
#[derive(Clone, Debug)]
pub struct Deb {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// The .deb file's own SHA-256 (what the archive's Packages index lists).
    pub sha256: String,
    /// Licenses the package's machine-readable copyright file declares,
    /// as SPDX identifiers; `None` when it declares none this maps.
    pub license: Option<String>,
    /// SHA-256 of each regular file → its paths inside the package.
    pub files: BTreeMap<String, Vec<String>>,
}

impl Deb {
    pub fn read(path: &Path) -> Result<Deb> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let sha256 = ember_fs::hex::hex(&Sha256::digest(&bytes));
        let field = |name: &str| -> Result<String> {
            let out = Command::new("dpkg-deb")
                .arg("-f")
                .arg(path)
                .arg(name)
                .output()
                .context("running dpkg-deb (Debian package dpkg)")?;
            if !out.status.success() {
                bail!(
                    "{} is not a Debian package: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let package = field("Package")?;
        let version = field("Version")?;
        let architecture = field("Architecture")?;
        if package.is_empty() || version.is_empty() {
            bail!("{} has no Package or Version field", path.display());
        }
        let out = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(path)
            .output()
            .context("running dpkg-deb --fsys-tarfile")?;
        if !out.status.success() {
            bail!(
                "dpkg-deb could not read the data of {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut copyright = None;
        let copyright_path = format!("usr/share/doc/{package}/copyright");
        let mut archive = tar::Archive::new(out.stdout.as_slice());
        for entry in archive
            .entries()
            .with_context(|| format!("reading the data archive of {}", path.display()))?
        {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            let name = name.trim_start_matches("./").to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            if name == copyright_path {
                copyright = Some(String::from_utf8_lossy(&data).into_owned());
            }
            let digest = ember_fs::hex::hex(&Sha256::digest(&data));
            files.entry(digest).or_default().push(name);
        }
        Ok(Deb {
            license: copyright.as_deref().and_then(declared_license),
            package,
            version,
            architecture,
            sha256,
            files,
        })
    }

    /// `pkg:deb/debian/NAME@VERSION?arch=ARCH` (the purl spec's form).
    pub fn purl(&self) -> String {
        format!(
            "pkg:deb/debian/{}@{}?arch={}",
            self.package,
            purl_escape(&self.version),
            self.architecture
        )
    }
}

/// Percent-encodes what a purl version may not hold (`:` of an epoch, `+`).
pub fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The licenses a DEP-5 (machine-readable) copyright file names in its
/// `Files:` paragraphs, as one SPDX expression (`A AND B`). Debian's short
/// names differ from SPDX's; those this table knows are mapped, and a
/// file naming any other gives `None` (NOASSERTION) rather than a guess.
pub fn declared_license(copyright: &str) -> Option<String> {
    if !copyright.starts_with("Format:") {
        return None;
    }
    let mut names = std::collections::BTreeSet::new();
    let mut in_files = false;
    for line in copyright.lines() {
        if line.trim().is_empty() {
            in_files = false;
            continue;
        }
        if line.starts_with("Files:") {
            in_files = true;
        }
        if let Some(rest) = line.strip_prefix("License:") {
            if in_files {
                names.insert(paragraph_expression(rest.trim())?);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    Some(names.into_iter().collect::<Vec<_>>().join(" AND "))
}

/// One `License:` value (`LGPL-2 or BSD-3-clause`) as an SPDX expression;
/// grouped (parenthesised) values are not guessed at.
fn paragraph_expression(value: &str) -> Option<String> {
    if value.contains('(') || value.is_empty() {
        return None;
    }
    let mut terms = Vec::new();
    for (i, word) in value.split_whitespace().enumerate() {
        terms.push(match (i % 2, word) {
            (1, "or") => "OR".to_string(),
            (1, "and") => "AND".to_string(),
            (0, name) => spdx_name(name.trim_end_matches(','))?,
            _ => return None,
        });
    }
    if terms.len() % 2 == 0 {
        return None;
    }
    Some(if terms.len() > 1 {
        format!("({})", terms.join(" "))
    } else {
        terms.remove(0)
    })
}

/// Debian short license names → SPDX identifiers.
fn spdx_name(debian: &str) -> Option<String> {
    let spdx = match debian {
        "GPL-2" => "GPL-2.0-only",
        "GPL-2+" => "GPL-2.0-or-later",
        "GPL-3" => "GPL-3.0-only",
        "GPL-3+" => "GPL-3.0-or-later",
        "LGPL-2" => "LGPL-2.0-only",
        "LGPL-2+" => "LGPL-2.0-or-later",
        "LGPL-2.1" => "LGPL-2.1-only",
        "LGPL-2.1+" => "LGPL-2.1-or-later",
        "LGPL-3" => "LGPL-3.0-only",
        "LGPL-3+" => "LGPL-3.0-or-later",
        "BSD-2-clause" | "BSD-2-Clause" => "BSD-2-Clause",
        "BSD-3-clause" | "BSD-3-Clause" => "BSD-3-Clause",
        "BSD-4-clause" | "BSD-4-Clause" => "BSD-4-Clause",
        "MIT" | "Expat" => "MIT",
        "ISC" => "ISC",
        "Apache-2.0" => "Apache-2.0",
        "public-domain" => return None,
        "Zlib" | "zlib" => "Zlib",
        _ => return None,
    };
    Some(spdx.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep5_licenses_map_to_one_spdx_expression() {
        let c = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                 Upstream-Name: x\n\nFiles: *\nCopyright: a\nLicense: GPL-2+\n\n\
                 Files: lib/*\nLicense: LGPL-2 or BSD-3-clause\n\n\
                 License: GPL-2+\n text of the license\n";
        assert_eq!(
            declared_license(c).as_deref(),
            Some("(LGPL-2.0-only OR BSD-3-Clause) AND GPL-2.0-or-later")
        );
    }

    #[test]
    fn unknown_or_free_form_copyright_files_assert_nothing() {
        assert_eq!(declared_license("This is free software."), None);
        let c = "Format: x\n\nFiles: *\nLicense: Custom-thing\n";
        assert_eq!(declared_license(c), None);
    }

    #[test]
    fn purl_versions_escape_epochs() {
        assert_eq!(purl_escape("1:1.46.2-2"), "1%3A1.46.2-2");
    }
}
