//! `ember policy set|show`: which PCRs a node must quote and what values
//! they may have.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use ember_server::store::{self, hex, unhex, Policy, StateDir};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Sets the PCR policy of a node, a group, or the default.
    Set(SetArgs),
    /// Shows the policies.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct SetArgs {
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
    /// PCR indices to quote, e.g. 0,2,4,7.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pcrs: Vec<u8>,
    /// PCR bank.
    #[arg(long, default_value = "sha256")]
    pub bank: String,
    /// Record the values a node quotes on its first boot as its policy (lab enrolment).
    #[arg(long, conflicts_with = "value")]
    pub record: bool,
    /// Allowed value PCR=HEX (repeatable; several values per PCR allowed).
    #[arg(long)]
    pub value: Vec<String>,
    /// Policy for this node.
    #[arg(long, conflicts_with = "group")]
    pub node: Option<String>,
    /// Policy for this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args)]
pub struct ShowArgs {
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
}

pub fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Set(a) => set(a),
        PolicyCmd::Show(a) => show(a),
    }
}

fn set(a: SetArgs) -> Result<()> {
    let bank = ember_tpm::HashAlg::from_name(&a.bank)
        .ok_or_else(|| anyhow::anyhow!("unknown PCR bank {:?}", a.bank))?;
    let mut mask = 0u32;
    for &p in &a.pcrs {
        if p > 23 {
            bail!("PCR {p} out of range (0-23)");
        }
        mask |= 1 << p;
    }
    let mut allowed = Vec::new();
    for v in &a.value {
        let Some((pcr, value)) = v.split_once('=') else {
            bail!("--value {v:?}: expected PCR=HEX")
        };
        let pcr: u8 = pcr
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--value {v:?}: bad PCR index"))?;
        if mask & (1 << pcr) == 0 {
            bail!("--value for PCR {pcr}, which --pcrs does not select");
        }
        let Some(value) = unhex(value.trim()) else {
            bail!("--value {v:?}: bad hex")
        };
        if value.len() != bank.digest_len() {
            bail!(
                "--value {v:?}: {} bytes, a {} PCR has {}",
                value.len(),
                a.bank,
                bank.digest_len()
            );
        }
        allowed.push((pcr, value));
    }
    if !a.record {
        for p in &a.pcrs {
            if !allowed.iter().any(|(q, _)| q == p) {
                bail!("PCR {p} has no allowed --value (or use --record)");
            }
        }
    }
    let mut conn = store::open(&StateDir::new(&a.state))?;
    let scope = match (&a.node, &a.group) {
        (Some(n), None) => {
            if store::node_by_name(&conn, n)?.is_none() {
                bail!("no node named {n:?}");
            }
            format!("node:{n}")
        }
        (None, Some(g)) => {
            crate::enroll_cmd::check_group(g)?;
            format!("group:{g}")
        }
        (None, None) => "default".to_string(),
        _ => bail!("give --node or --group, not both"),
    };
    let tx = conn.transaction()?;
    if let Some(g) = &a.group {
        store::ensure_group(&tx, g)?;
    }
    store::put_policy(
        &tx,
        &Policy {
            scope: scope.clone(),
            hash_alg: bank.alg_id(),
            mask,
            record: a.record,
            allowed,
        },
    )?;
    tx.commit()?;
    println!(
        "policy {scope}: {} PCRs {:?} {}",
        a.bank,
        a.pcrs,
        if a.record {
            "recorded on first boot"
        } else {
            "with allowed values"
        }
    );
    Ok(())
}

fn show(a: ShowArgs) -> Result<()> {
    let conn = store::open(&StateDir::new(&a.state))?;
    let mut stmt = conn.prepare("SELECT scope FROM pcr_policies ORDER BY scope")?;
    let scopes: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if scopes.is_empty() {
        let d = store::builtin_default_policy();
        println!(
            "default (built in): sha256 mask {:#x}, record on first boot",
            d.mask
        );
    }
    for s in scopes {
        if let Some(p) = store::get_policy(&conn, &s)? {
            println!(
                "{}: alg {:#06x} mask {:#x} {}",
                p.scope,
                p.hash_alg,
                p.mask,
                if p.record { "record" } else { "values" }
            );
            for (pcr, v) in p.allowed {
                println!("  PCR {pcr:>2} = {}", hex(&v));
            }
        }
    }
    Ok(())
}
