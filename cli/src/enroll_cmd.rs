//! `ember enroll`: admits a TPM by its EK.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use ember_server::store::{self, hex};

use crate::state_args::StateArgs;
use ember_server::verify;

#[derive(Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Name of the node (unique).
    #[arg(long)]
    pub name: String,
    /// Group of the node (created if missing).
    #[arg(long, default_value = "default")]
    pub group: String,
    /// EK certificate (PEM or DER; NV padding is fine).
    #[arg(long, conflicts_with_all = ["ek_pub", "ek_hash"])]
    pub ek_cert: Option<PathBuf>,
    /// EK public area: TPM2B_PUBLIC or TPMT_PUBLIC (`tpm2_createek -u`, `ember tpm ek`).
    #[arg(long, conflicts_with_all = ["ek_cert", "ek_hash"])]
    pub ek_pub: Option<PathBuf>,
    /// EK identity hash as printed by `ember nodes` or a refused Start.
    #[arg(long, conflicts_with_all = ["ek_cert", "ek_pub"])]
    pub ek_hash: Option<String>,
}

fn valid_name(kind: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("{kind} {s:?} must be 1-64 characters of A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

pub fn check_group(s: &str) -> Result<()> {
    valid_name("group", s)
}

/// Reads an EK public area given as TPM2B_PUBLIC or TPMT_PUBLIC.
fn ek_hash_from_public_file(bytes: &[u8]) -> Result<[u8; 32]> {
    let tpmt = ember_tpm::PublicArea::from_bytes(bytes);
    let public = match tpmt {
        Ok(p) => p,
        Err(_) => ember_tpm::PublicArea::from_tpm2b(bytes)
            .map_err(|e| anyhow::anyhow!("not a TPM2B_PUBLIC or TPMT_PUBLIC: {e}"))?,
    };
    verify::ek_hash_of_public(&public).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(args: EnrollArgs) -> Result<()> {
    valid_name("node name", &args.name)?;
    check_group(&args.group)?;
    let (ek_hash, cert, how) = if let Some(f) = &args.ek_cert {
        let bytes = std::fs::read(f).with_context(|| format!("read {}", f.display()))?;
        let certs = ember_tpm::host::certificates_from_pem_or_der(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let Some(der) = certs.into_iter().next() else {
            bail!("{}: no certificate", f.display())
        };
        let hash =
            verify::ek_hash_of_cert(&der).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        (hash, Some(der), "ek-certificate")
    } else if let Some(f) = &args.ek_pub {
        let bytes = std::fs::read(f).with_context(|| format!("read {}", f.display()))?;
        (
            ek_hash_from_public_file(&bytes).with_context(|| f.display().to_string())?,
            None,
            "ek-public",
        )
    } else if let Some(h) = &args.ek_hash {
        let Some(b) = store::unhex(h).and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
            bail!("--ek-hash must be 64 hex digits");
        };
        (b, None, "ek-hash")
    } else {
        bail!("give one of --ek-cert, --ek-pub or --ek-hash");
    };
    let mut db = args.state.open()?;
    let mut tx = db.transaction()?;
    let node = store::insert_node(
        &mut tx,
        &ek_hash,
        cert.as_deref(),
        &args.name,
        &args.group,
        how,
    )?;
    tx.commit()?;
    println!(
        "enrolled {} in group {} (EK {})",
        node.name,
        node.group,
        hex(&ek_hash)
    );
    Ok(())
}
