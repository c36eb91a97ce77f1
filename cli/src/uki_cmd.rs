//! `ember uki build`: a unified kernel image (kernel + initrd + command
//! line + os-release on systemd-stub), reproducibly; signed for Secure
//! Boot with --sign-key/--sign-cert.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sha2::{Digest, Sha256};

use ember_build::uki::{assemble, default_os_release, Parts};

use crate::provenance;
use crate::sbom::{self, spdx::Purpose, Artifact, Entry, Role};
use crate::uki;

#[derive(Subcommand)]
pub enum UkiCmd {
    /// Build a UKI. The same inputs give the same bytes; sections are
    /// page aligned after the stub's own, as UEFI loaders require.
    Build(BuildArgs),
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The kernel image (.linux).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The initrd (.initrd).
    #[arg(long)]
    pub initrd: PathBuf,
    /// The kernel command line (.cmdline), measured into PCR 11 with the
    /// rest. Without Secure Boot, systemd-stub 252 lets a boot loader's
    /// load options replace it (and measures those into PCR 12 instead).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// os-release file (.osrel); a fixed Ember os-release when absent.
    #[arg(long)]
    pub os_release: Option<PathBuf>,
    /// PEM public key the stub passes on as /.extra/tpm2-pcr-public-key.pem
    /// (.pcrpkey, measured).
    #[arg(long)]
    pub pcrpkey: Option<PathBuf>,
    /// The systemd-stub to build on.
    #[arg(long, default_value = uki::DEBIAN_STUB)]
    pub stub: PathBuf,
    /// Where to write the UKI (written atomically).
    #[arg(long, short)]
    pub output: PathBuf,
    /// PEM private key to sign the UKI with for Secure Boot (Authenticode,
    /// by Debian's sbsign); the key of a certificate enrolled in the
    /// firmware's db. Needs --sign-cert.
    #[arg(long, requires = "sign_cert", value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// PEM certificate of --sign-key, embedded in the signature: the db
    /// entry the firmware measures into PCR 7 as the boot's authority.
    #[arg(long, requires = "sign_key", value_name = "CERT")]
    pub sign_cert: Option<PathBuf>,
    /// Where the kernel and the stub came from (their .debs), for the SBOM
    /// written beside the UKI; the initrd's own SBOM (INITRD.spdx.json,
    /// as `ember initrd build` writes it) is folded in.
    #[command(flatten)]
    pub sbom: crate::sbom::OriginArgs,
    /// Sign an in-toto statement (SLSA provenance v1: builder, inputs with
    /// digests, command) with this ECDSA P-256 PKCS#8 PEM key, written as
    /// OUTPUT.intoto.json; `ember verify` checks it.
    #[arg(long, value_name = "KEY")]
    pub sign_provenance: Option<PathBuf>,
}

pub fn run(cmd: UkiCmd) -> Result<()> {
    match cmd {
        UkiCmd::Build(a) => build(a),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let origins = a.sbom.read()?;
    if let Some(key) = &a.sign_provenance {
        provenance::check_key(key)?;
    }
    let stub = uki::read_input("stub", &a.stub)?;
    let linux = uki::read_input("kernel", &a.kernel)?;
    let initrd = uki::read_input("initrd", &a.initrd)?;
    let osrel = match &a.os_release {
        Some(p) => uki::read_input("os-release", p)?,
        None => default_os_release().into_bytes(),
    };
    let pcrpkey = match &a.pcrpkey {
        Some(p) => uki::read_input("PCR public key", p)?,
        None => Vec::new(),
    };
    let image = assemble(
        &stub,
        &Parts {
            linux: &linux,
            initrd: &initrd,
            cmdline: a.cmdline.as_bytes(),
            osrel: &osrel,
            pcrpkey: &pcrpkey,
        },
    )
    .with_context(|| format!("building a UKI on {}", a.stub.display()))?;
    let image = match (&a.sign_key, &a.sign_cert) {
        (Some(key), Some(cert)) => sign(&image, key, cert, &a.output)?,
        _ => image,
    };
    let sha256 = ember_fs::hex::hex(&Sha256::digest(&image));
    let parts = [
        ("stub", &stub[..], Role::Input),
        (".linux", &linux[..], Role::Input),
        (".cmdline", a.cmdline.as_bytes(), Role::Generated),
        (
            ".osrel",
            &osrel[..],
            if a.os_release.is_some() {
                Role::Input
            } else {
                Role::Generated
            },
        ),
        (".pcrpkey", &pcrpkey[..], Role::Input),
    ];
    // The SBOM is made (and the initrd's checked) before anything is
    // written: a refused build leaves neither file.
    let doc = sbom_for(&a, &sha256, &parts, &initrd, &origins)?;
    write_atomically(&a.output, &image)?;
    sbom::write_beside(&a.output, &doc)?;
    if let Some(key) = &a.sign_provenance {
        let mut inputs = vec![
            provenance::Input {
                name: "stub",
                path: &a.stub,
                data: &stub,
            },
            provenance::Input {
                name: "kernel",
                path: &a.kernel,
                data: &linux,
            },
            provenance::Input {
                name: "initrd",
                path: &a.initrd,
                data: &initrd,
            },
        ];
        if let Some(p) = &a.os_release {
            inputs.push(provenance::Input {
                name: "os-release",
                path: p,
                data: &osrel,
            });
        }
        if let Some(p) = &a.pcrpkey {
            inputs.push(provenance::Input {
                name: "pcrpkey",
                path: p,
                data: &pcrpkey,
            });
        }
        let name = a
            .output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let statement = provenance::statement("uki", &name, &sha256, &inputs);
        provenance::write_signed(&a.output, &statement, key)?;
    }
    println!(
        "{}: {} bytes, sha256 {}",
        a.output.display(),
        image.len(),
        sha256
    );
    Ok(())
}

/// The document for `OUTPUT.spdx.json`: the stub and sections the UKI is made of,
/// traced to their packages, and the initrd's own SBOM folded in (checked
/// to describe these initrd bytes).
fn sbom_for(
    a: &BuildArgs,
    sha256: &str,
    parts: &[(&str, &[u8], Role)],
    initrd: &[u8],
    origins: &sbom::Origins,
) -> Result<sbom::spdx::Document> {
    let mut entries: Vec<Entry> = parts
        .iter()
        .filter(|(name, data, _)| !data.is_empty() || *name == ".cmdline")
        .map(|(name, data, role)| Entry {
            path: name.to_string(),
            data,
            role: *role,
        })
        .collect();
    let initrd_sha = ember_fs::hex::hex(&Sha256::digest(initrd));
    let inner = sbom::read_describing(
        &a.initrd,
        &initrd_sha,
        "rebuild the initrd with `ember initrd build`",
    )?;
    if inner.is_none() {
        entries.push(Entry {
            path: ".initrd".into(),
            data: initrd,
            role: Role::Input,
        });
    }
    let file_name = a
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "uki".into());
    let artifact = Artifact {
        kind: "uki",
        file_name: &file_name,
        sha256,
        purpose: Purpose::OperatingSystem,
        created: u64::from(crate::initrd::source_date_epoch()?),
    };
    let (mut doc, unidentified) = sbom::describe(&artifact, &entries, origins);
    if let Some(inner) = &inner {
        sbom::embed(&mut doc, inner);
    }
    if !unidentified.is_empty() && !origins.is_empty() {
        eprintln!(
            "{}: {} parts with no origin (pass the .deb they came from with --sbom-deb): {}",
            sbom::path_beside(&a.output).display(),
            unidentified.len(),
            unidentified.join(" ")
        );
    }
    Ok(doc)
}

/// Signs `image` for Secure Boot with sbsign (Debian's sbsigntool): an
/// Authenticode signature (PKCS#7 SignedData over the PE image's
/// Authenticode digest) in the image's certificate table. sbsign is what
/// Debian and Ubuntu sign their boot loaders and kernels with, and it reads
/// keys through OpenSSL (files, or engines for HSMs), so the signing key
/// never passes through Ember; a signer in Rust would add a CMS/ASN.1 stack
/// to the CLI and a second implementation of a format only the firmware
/// checks. The signed bytes are read back and returned; `near` names the
/// temporary files.
fn sign(image: &[u8], key: &Path, cert: &Path, near: &Path) -> Result<Vec<u8>> {
    let unsigned = with_suffix(near, ".unsigned");
    let signed = with_suffix(near, ".signed");
    std::fs::write(&unsigned, image).with_context(|| format!("writing {}", unsigned.display()))?;
    let out = Command::new("sbsign")
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .arg("--output")
        .arg(&signed)
        .arg(&unsigned)
        .output();
    let _ = std::fs::remove_file(&unsigned);
    let out = out.context("running sbsign (Debian package sbsigntool)")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&signed);
        bail!(
            "sbsign refused to sign with {} and {}: {}",
            key.display(),
            cert.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let bytes = std::fs::read(&signed).with_context(|| format!("reading {}", signed.display()));
    let _ = std::fs::remove_file(&signed);
    bytes
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Writes `bytes` to a temporary name beside `path` and renames it over
/// `path`: a reader never sees half a UKI.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
