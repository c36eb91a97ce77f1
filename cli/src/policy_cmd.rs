//! `ember policy set|show|predict`: which PCRs a node must quote and what
//! values they may have; `predict` computes them from a UKI.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use ember_server::store::{self, hex, unhex, Policy};
use ember_server::uki::measure::{
    check_log, predict_pcr11, predict_pcr12, predict_pcr12_paths, predict_pcr4,
    predict_pcr4_secure_boot, Prediction, PCR_BOOT_LOADER_CODE, PCR_KERNEL_IMAGE,
    PCR_KERNEL_PARAMETERS,
};
use ember_server::uki::secureboot::{
    certificate_der, predict_pcr7, KeyDatabases, PCR_SECURE_BOOT_POLICY,
};

use crate::state_args::StateArgs;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Sets the PCR policy of a node, a group, or the default.
    Set(SetArgs),
    /// Shows the policies.
    Show(ShowArgs),
    /// Prints the PCR 11 value systemd-stub (252) produces booting a UKI,
    /// the PCR 4 value UEFI firmware produces loading it, and with
    /// --load-options PCR 12.
    Predict(PredictArgs),
}

#[derive(Args)]
pub struct PredictArgs {
    /// The unified kernel image (`ember uki build`).
    #[arg(long)]
    pub uki: PathBuf,
    /// PCR banks to compute (sha256, sha384, sha512); repeat or comma-separate.
    #[arg(long, value_delimiter = ',', default_value = "sha256")]
    pub bank: Vec<String>,
    /// Boot-phase words extended after the stub's measurements, as
    /// systemd-pcrphase does (e.g. enter-initrd); repeat in order.
    #[arg(long)]
    pub phase: Vec<String>,
    /// Also print each event (label and digest) in extend order.
    #[arg(long)]
    pub events: bool,
    /// PE images the firmware loads before the UKI (a boot manager), in
    /// order, for PCR 4.
    #[arg(long)]
    pub loader: Vec<PathBuf>,
    /// The load options a loader passes to the UKI (iPXE's `chain --name
    /// uki.efi <sha256> ARGS` passes "uki.efi ARGS"): also predicts PCR 12,
    /// where systemd-stub measures them.
    #[arg(long)]
    pub load_options: Option<String>,
    /// A TCG event log (a node's binary_bios_measurements) to hold the
    /// predictions against: fails naming the first event that differs.
    #[arg(long, value_name = "LOG")]
    pub check_log: Option<PathBuf>,
    #[command(flatten)]
    pub secure_boot: SecureBootArgs,
}

/// PCR 7 of a machine enforcing Secure Boot.
#[derive(Args)]
pub struct SecureBootArgs {
    /// Also predict PCR 7 for a firmware enforcing Secure Boot with the
    /// key databases in DIR: PK.esl, KEK.esl, db.esl and (if any) dbx.esl,
    /// each the variable's EFI_SIGNATURE_LISTs (`efi-readvar -v db -o
    /// db.esl`, or qemu/secure-boot-vars --esl-dir). Needs --signed-by.
    #[arg(long, value_name = "DIR", requires = "signed_by")]
    pub secure_boot: Option<PathBuf>,
    /// The db certificate (PEM or DER) the boot's images are signed with
    /// (`ember uki build --sign-cert`): measured into PCR 7 as the
    /// authority that verified them. Repeat when the loader and the UKI
    /// are signed by different db entries, loader first.
    #[arg(long, value_name = "CERT", requires = "secure_boot")]
    pub signed_by: Vec<PathBuf>,
}

impl SecureBootArgs {
    /// PCR 4 booting `uki` after `loaders`: with Secure Boot on, the
    /// firmware does not measure the kernel systemd-stub loads.
    fn pcr4(&self, loaders: &[&[u8]], uki: &[u8], bank: ember_tpm::HashAlg) -> Result<Prediction> {
        match self.secure_boot {
            Some(_) => predict_pcr4_secure_boot(loaders, uki, bank),
            None => predict_pcr4(loaders, uki, bank),
        }
    }

    /// The PCR 7 prediction, when --secure-boot is given.
    fn predict(&self, bank: ember_tpm::HashAlg) -> Result<Option<Prediction>> {
        let Some(dir) = &self.secure_boot else {
            return Ok(None);
        };
        let dbs = KeyDatabases::read_dir(dir)?;
        let mut certs = Vec::new();
        for c in &self.signed_by {
            let bytes = crate::uki::read_input("signing certificate", c)?;
            certs.push(certificate_der(&bytes).with_context(|| c.display().to_string())?);
        }
        let p = predict_pcr7(&dbs, &certs, bank)
            .with_context(|| format!("predicting PCR 7 from {}", dir.display()))?;
        Ok(Some(p))
    }
}

#[derive(Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// PCR indices to quote, e.g. 0,2,4,7.
    #[arg(long, value_delimiter = ',', required_unless_present = "uki")]
    pub pcrs: Vec<u8>,
    /// PCR bank.
    #[arg(long, default_value = "sha256")]
    pub bank: String,
    /// LAB MODE: record the values a node quotes on its first boot as its
    /// policy (trusts whatever boots first; never in production).
    #[arg(long = "lab-record-first-boot", conflicts_with = "value")]
    pub record: bool,
    /// Allowed value PCR=HEX (repeatable; several values per PCR allowed).
    #[arg(long)]
    pub value: Vec<String>,
    /// Allow the PCR 11 value booting this UKI gives (`ember policy
    /// predict`); adds PCR 11 to --pcrs. Repeat to allow several UKIs.
    #[arg(long, conflicts_with = "record")]
    pub uki: Vec<PathBuf>,
    /// With --uki: judge a node that sends no firmware event log by its PCR
    /// values alone (by default it is refused; the log names what differs).
    #[arg(long, requires = "uki")]
    pub allow_without_event_log: bool,
    /// Boot-phase words the prediction for --uki includes (see predict).
    #[arg(long, requires = "uki")]
    pub phase: Vec<String>,
    /// Boot loaders before the UKI, for the PCR 4 prediction (see predict).
    #[arg(long, requires = "uki")]
    pub loader: Vec<PathBuf>,
    /// Load options a loader may start the UKI with (iPXE: "uki.efi
    /// ARGS"; repeat for several). With --uki, PCR 12 (the command line
    /// systemd-stub boots with) is always pinned: to the UKI's own
    /// `.cmdline`, to each slot's loader entry on the ESP, and to these
    /// (see predict). Any other command line is refused.
    #[arg(long, requires = "uki")]
    pub load_options: Vec<String>,
    /// With --uki: PCR 7 as a firmware enforcing Secure Boot with these
    /// keys leaves it (see predict); adds PCR 7 to --pcrs, so a node
    /// booted with Secure Boot off, other keys, or images signed by another
    /// db entry is refused naming the PCR 7 event that differs.
    #[command(flatten)]
    pub secure_boot: SecureBootArgs,
    /// Policy for this node.
    #[arg(long, conflicts_with = "group")]
    pub node: Option<String>,
    /// Policy for this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

pub fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Set(a) => set(a),
        PolicyCmd::Show(a) => show(a),
        PolicyCmd::Predict(a) => predict(a),
    }
}

fn bank_by_name(name: &str) -> Result<ember_tpm::HashAlg> {
    match ember_tpm::HashAlg::from_name(name) {
        // SHA-1 is a PCR bank Ember reads but never computes.
        Some(ember_tpm::HashAlg::Sha1) => bail!("the sha1 bank cannot be predicted"),
        Some(b) => Ok(b),
        None => bail!("unknown PCR bank {name:?}"),
    }
}

fn read_loaders(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| crate::uki::read_input("boot loader", p))
        .collect()
}

fn predict(a: PredictArgs) -> Result<()> {
    let file = crate::uki::read_input("UKI", &a.uki)?;
    let loaders = read_loaders(&a.loader)?;
    let loaders: Vec<&[u8]> = loaders.iter().map(Vec::as_slice).collect();
    let log_bytes = match &a.check_log {
        Some(p) => Some(crate::uki::read_input("event log", p)?),
        None => None,
    };
    let log = log_bytes
        .as_deref()
        .map(ember_tpm::eventlog::EventLog::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("event log: {e:?}"))?;
    let mut mismatches = Vec::new();
    for name in &a.bank {
        let bank = bank_by_name(name)?;
        let p11 = predict_pcr11(&file, bank, &a.phase)
            .with_context(|| format!("predicting PCR 11 for {}", a.uki.display()))?;
        let p4 = a
            .secure_boot
            .pcr4(&loaders, &file, bank)
            .with_context(|| format!("predicting PCR 4 for {}", a.uki.display()))?;
        let p12 = match &a.load_options {
            Some(o) => Some(predict_pcr12(o, bank)?),
            None => None,
        };
        let p7 = a.secure_boot.predict(bank)?;
        for p in [Some(p11), Some(p4), p12, p7].into_iter().flatten() {
            println!("PCR {} {} {}", p.pcr, bank.name(), hex(&p.value));
            if a.events {
                for (i, e) in p.events.iter().enumerate() {
                    println!("  event {i:>2} {} {}", hex(&e.digest), e.label);
                }
            }
            if let Some(log) = &log {
                match check_log(&p, log)? {
                    Ok(()) => println!("  matches the event log ({} events)", p.events.len()),
                    Err(m) => mismatches.push(m),
                }
            }
        }
    }
    if !mismatches.is_empty() {
        let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        bail!(
            "the event log differs from the prediction: {}",
            text.join("; ")
        );
    }
    Ok(())
}

fn set(a: SetArgs) -> Result<()> {
    let bank = ember_tpm::HashAlg::from_name(&a.bank)
        .ok_or_else(|| anyhow::anyhow!("unknown PCR bank {:?}", a.bank))?;
    let mut pcrs = a.pcrs.clone();
    if !a.uki.is_empty() && !pcrs.contains(&PCR_KERNEL_IMAGE) {
        pcrs.push(PCR_KERNEL_IMAGE);
    }
    // PCR 12 is pinned with every UKI: left open, whoever answers the
    // network boot can chain the genuine UKI with arguments of its own.
    if !a.uki.is_empty() && !pcrs.contains(&PCR_KERNEL_PARAMETERS) {
        pcrs.push(PCR_KERNEL_PARAMETERS);
    }
    if a.secure_boot.secure_boot.is_some() {
        if a.uki.is_empty() {
            bail!("--secure-boot predicts PCR 7 for the boot of a --uki: give one");
        }
        if !pcrs.contains(&PCR_SECURE_BOOT_POLICY) {
            pcrs.push(PCR_SECURE_BOOT_POLICY);
        }
    }
    let mut mask = 0u32;
    for &p in &pcrs {
        if p > 23 {
            bail!("PCR {p} out of range (0-23)");
        }
        mask |= 1 << p;
    }
    let mut allowed = Vec::new();
    let mut events = Vec::new();
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
    // PCR 4 comes from the UKIs too when --pcrs selects it without values.
    let predict_4 = mask & (1 << PCR_BOOT_LOADER_CODE) != 0
        && !allowed.iter().any(|(p, _)| *p == PCR_BOOT_LOADER_CODE);
    let loaders = read_loaders(&a.loader)?;
    let loaders: Vec<&[u8]> = loaders.iter().map(Vec::as_slice).collect();
    // PCR 7 depends on the firmware's keys and the signer, not on the UKI:
    // one value for all of them.
    if bank == ember_tpm::HashAlg::Sha1 && a.secure_boot.secure_boot.is_some() {
        bail!("--secure-boot: the sha1 bank cannot be predicted");
    }
    if let Some(p) = a.secure_boot.predict(bank)? {
        events.push(store::AllowedEvents {
            pcr: p.pcr,
            value: p.value.clone(),
            events: p.expected(),
        });
        allowed.push((p.pcr, p.value));
    }
    // Each UKI's SBOM (`ember uki build` writes it beside the UKI), checked
    // to describe its bytes before anything is written: `ember nodes
    // --package` answers from it.
    let mut sboms = Vec::new();
    for uki in &a.uki {
        if bank == ember_tpm::HashAlg::Sha1 {
            bail!("--uki: the sha1 bank cannot be predicted");
        }
        let file = crate::uki::read_input("UKI", uki)?;
        sboms.push(uki_sbom(uki, &file)?);
        let mut predictions = vec![predict_pcr11(&file, bank, &a.phase)
            .with_context(|| format!("predicting PCR 11 for {}", uki.display()))?];
        if predict_4 {
            predictions.push(
                a.secure_boot
                    .pcr4(&loaders, &file, bank)
                    .with_context(|| format!("predicting PCR 4 for {}", uki.display()))?,
            );
        }
        let secure_boot = a.secure_boot.secure_boot.as_ref().map(|_| true);
        predictions.extend(
            predict_pcr12_paths(&file, &a.load_options, secure_boot, bank)
                .with_context(|| format!("predicting PCR 12 for {}", uki.display()))?,
        );
        for p in predictions {
            events.push(store::AllowedEvents {
                pcr: p.pcr,
                value: p.value.clone(),
                events: p.expected(),
            });
            allowed.push((p.pcr, p.value));
        }
    }
    if !a.record {
        for p in &pcrs {
            if !allowed.iter().any(|(q, _)| q == p) {
                bail!(
                    "PCR {p} has no allowed --value (or --uki; --lab-record-first-boot in a lab)"
                );
            }
        }
    }
    let mut db = a.state.open()?;
    // Stored among the boot artifacts: the server finds there which UKI a
    // node booted, and serves it to the node's last-known-good.
    let mut stored = Vec::new();
    for uki in &a.uki {
        stored.push(ember_server::overlay::store_boot_artifact(
            &a.state.dir(),
            uki,
        )?);
    }
    let scope = match (&a.node, &a.group) {
        (Some(n), None) => {
            if store::node_by_name(&mut db, n)?.is_none() {
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
    let mut tx = db.transaction()?;
    if let Some(g) = &a.group {
        store::ensure_group(&mut tx, g)?;
    }
    // Each UKI's place in the rollback order: new ones after every image
    // allowed before, in the order given; one named again keeps its place.
    let mut ordered = Vec::new();
    for ((uki, blob), sbom) in a.uki.iter().zip(&stored).zip(&sboms) {
        let source = uki.display().to_string();
        ordered.push((
            source.clone(),
            store::images::register(&mut tx, &blob.sha256, blob.size, &source)?,
        ));
        if let Some((document, packages)) = sbom {
            store::packages::put(&mut tx, &blob.sha256, document, packages)?;
        }
    }
    store::put_policy(
        &mut tx,
        &Policy {
            scope: scope.clone(),
            hash_alg: bank.alg_id(),
            mask,
            record: a.record,
            allowed,
            events,
            require_log: !a.uki.is_empty() && !a.allow_without_event_log,
        },
    )?;
    tx.commit()?;
    for ((source, (image, new)), sbom) in ordered.into_iter().zip(&sboms) {
        println!(
            "UKI {source}: image epoch {} ({}){}; {}",
            image.epoch,
            ember_server::rollback::short(&image.sha256),
            if new {
                ", newest in the rollback order"
            } else {
                ", ordered before"
            },
            match sbom {
                Some((_, p)) => format!("SBOM stored ({} packages)", p.len()),
                None => "no SBOM beside it: `ember nodes --package` cannot see inside it".into(),
            }
        );
    }
    println!(
        "policy {scope}: {} PCRs {:?} {}",
        a.bank,
        pcrs,
        if a.record {
            "recorded on first boot (LAB MODE)"
        } else if a.uki.is_empty() || a.allow_without_event_log {
            "with allowed values"
        } else {
            "with allowed values and their events; nodes must send their event log"
        }
    );
    Ok(())
}

fn show(a: ShowArgs) -> Result<()> {
    let mut db = a.state.open()?;
    let images = store::images::list(&mut db)?;
    if !images.is_empty() {
        println!("UKIs in rollback order (a node is refused below the newest it blessed):");
        for i in images {
            println!(
                "  image epoch {:>3} {} {} bytes, from {}",
                i.epoch,
                hex(&i.sha256),
                i.size,
                i.source
            );
        }
    }
    let scopes = store::policy_scopes(&mut db)?;
    if scopes.is_empty() {
        println!("no policy set: nodes are refused (unless `ember serve --lab-record-first-boot`)");
    }
    for s in scopes {
        if let Some(p) = store::get_policy(&mut db, &s)? {
            println!(
                "{}: alg {:#06x} mask {:#x} {}{}",
                p.scope,
                p.hash_alg,
                p.mask,
                if p.record { "record (lab)" } else { "values" },
                if p.require_log {
                    ", event log required"
                } else {
                    ""
                }
            );
            for (pcr, v) in p.allowed {
                let extends = p
                    .events
                    .iter()
                    .find(|e| e.pcr == pcr && e.value == v)
                    .map_or(0, |e| e.events.len());
                println!("  PCR {pcr:>2} = {} ({extends} events)", hex(&v));
            }
        }
    }
    Ok(())
}

/// The SBOM beside `uki` (its bytes, as stored, and the packages it
/// names), when there is one; one of other bytes is refused.
fn uki_sbom(
    uki: &std::path::Path,
    file: &[u8],
) -> Result<Option<(Vec<u8>, Vec<store::packages::Package>)>> {
    use sha2::{Digest, Sha256};
    let sha = hex(&Sha256::digest(file));
    let Some(doc) =
        crate::sbom::read_describing(uki, &sha, "rebuild the UKI with `ember uki build`")?
    else {
        return Ok(None);
    };
    let path = crate::sbom::path_beside(uki);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let packages = crate::sbom::packages(&doc)
        .into_iter()
        .map(|(name, version, purl)| store::packages::Package {
            name,
            version,
            purl,
        })
        .collect();
    Ok(Some((bytes, packages)))
}
