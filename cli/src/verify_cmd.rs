//! `ember verify`: checks an artifact's signed provenance (the in-toto
//! statement `--sign-provenance` wrote beside it) with the operator's
//! public key, and that the statement is about these very bytes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::provenance;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The artifact (initrd or UKI) whose provenance to check.
    pub artifact: PathBuf,
    /// The signer's ECDSA P-256 public key (PEM SubjectPublicKeyInfo:
    /// `openssl pkey -in KEY -pubout`).
    #[arg(long, value_name = "PUBKEY")]
    pub key: PathBuf,
    /// The signed statement; ARTIFACT.intoto.json when absent.
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<PathBuf>,
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let artifact =
        std::fs::read(&a.artifact).with_context(|| format!("reading {}", a.artifact.display()))?;
    let sha256 = ember_fs::hex::hex(&Sha256::digest(&artifact));
    let path = a
        .provenance
        .clone()
        .unwrap_or_else(|| provenance::path_beside(&a.artifact));
    let envelope = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let statement = provenance::verify(&envelope, &a.key, &sha256)
        .with_context(|| format!("{} refused", path.display()))?;
    let def = &statement.predicate.build_definition;
    println!(
        "{}: sha256 {sha256}: provenance verified ({}, builder {}, {} inputs)",
        a.artifact.display(),
        def.build_type,
        statement.predicate.run_details.builder.id,
        def.resolved_dependencies.len()
    );
    for d in &def.resolved_dependencies {
        println!("  {:<10} sha256 {}  {}", d.name, d.digest.sha256, d.uri);
    }
    Ok(())
}
