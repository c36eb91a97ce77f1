//! `ember tpm` subcommands: look at a node's TPM (or a swtpm) the way the
//! init and the boot server do, through ember-tpm; `unseal` and `counter`
//! are also what a workload on a node would try against last-known-good.

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use ember_proto::slot::{SealedKey, SlotRecord};
use ember_tpm::counter::{self, Found};
use ember_tpm::{
    consts, host, open_transport, AkKind, CreatedKey, EkTemplate, HashAlg, PcrSelection,
    PublicArea, PublicParams, Tpm, Transport, Unique,
};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Target {
    /// The TPM: `swtpm:HOST:PORT` (swtpm's raw data port), `unix:PATH`, or a
    /// device such as /dev/tpmrm0.
    #[arg(long, env = "EMBER_TPM", default_value = "/dev/tpmrm0")]
    tpm: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EkAlg {
    /// RSA 2048 (template L-1, certificate at 0x01c00002).
    Rsa,
    /// ECC NIST P-256 (template L-2, certificate at 0x01c0000a).
    Ecc256,
    /// ECC NIST P-384 (template H-3, certificate at 0x01c00016).
    Ecc384,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AkAlg {
    Rsa,
    Ecc,
}

#[derive(Subcommand)]
pub enum TpmCmd {
    /// Manufacturer, firmware, limits, PCR banks and algorithms.
    Info(Target),
    /// PCR values of a selection (tpm2-tools syntax, `sha256:0,1,2+sha1:7`).
    Pcrs {
        #[command(flatten)]
        target: Target,
        #[arg(
            long,
            default_value = "sha256:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23"
        )]
        pcrs: String,
    },
    /// The endorsement key's public key and Name and its certificate from NV;
    /// with --ca, the certificate chain is validated too.
    Ek {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "rsa")]
        alg: EkAlg,
        /// CA certificates (PEM or DER) the EK certificate must chain to.
        #[arg(long)]
        ca: Vec<PathBuf>,
        /// Write the EK certificate (DER) here.
        #[arg(long)]
        cert_out: Option<PathBuf>,
        /// Write the EK public area (TPM2B_PUBLIC, tpm2-tools format) here.
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
    /// Quote PCRs with a fresh attestation key (under a fresh SRK), verify the
    /// quote as the boot server would, and print it.
    Quote {
        #[command(flatten)]
        target: Target,
        /// Qualifying data (hex), normally a verifier's nonce.
        #[arg(long)]
        nonce: String,
        #[arg(long, default_value = "sha256:0,1,2,3,4,5,6,7")]
        pcrs: String,
        #[arg(long, value_enum, default_value = "ecc")]
        ak: AkAlg,
        /// Write ak.pub, quote.msg, quote.sig and pcrs.bin here (the files
        /// `tpm2_checkquote -u -m -s -f` takes).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Tries to unseal a last-known-good slot's overlay key (`slot.rec`
    /// from the ESP's ember/a or ember/b) as the init does on a cold start:
    /// PolicyPCR over the PCRs it was sealed to, as they are now, then
    /// PolicyNV on the rollback counter. Prints the TPM's answer for each
    /// sealed key and which of its PCRs differ now, never the key; fails
    /// when the TPM releases none (as it does for anything that runs after
    /// the init's leave-initrd extend).
    Unseal {
        #[command(flatten)]
        target: Target,
        /// The slot record (`ember/a/slot.rec` on the ESP).
        #[arg(long)]
        slot: PathBuf,
        /// Only this sealed key (counting from 0); by default each in turn.
        #[arg(long)]
        key: Option<usize>,
    },
    /// Ember's rollback counter (NV index 0x01800e70, see the book, "Last-known-good
    /// and cold starts").
    #[command(subcommand)]
    Counter(CounterCmd),
    /// The firmware's TCG event log, decoded as the boot server reads it
    /// (ember_tpm::eventlog): each event, then each PCR's replayed value.
    Eventlog {
        #[arg(
            long,
            default_value = "/sys/kernel/security/tpm0/binary_bios_measurements"
        )]
        log: PathBuf,
        /// Only these PCRs (repeat or comma-separate); by default all.
        #[arg(long, value_delimiter = ',')]
        pcr: Vec<u32>,
        #[arg(long, default_value = "sha256")]
        bank: String,
    },
}

#[derive(Subcommand)]
pub enum CounterCmd {
    /// Prints its value (anyone may read it).
    Read(Target),
    /// NV_Increment under the counter's own policy, as the init's lkg-floor
    /// phase does; the TPM allows it only while PCR 15 is zero, i.e. before
    /// leave-initrd.
    Increment(Target),
}

fn open(target: &Target) -> anyhow::Result<Tpm<Box<dyn Transport>>> {
    let transport =
        open_transport(&target.tpm).with_context(|| format!("opening TPM {}", target.tpm))?;
    let mut tpm = Tpm::new(transport);
    tpm.startup(true).context("TPM2_Startup")?;
    Ok(tpm)
}

use ember_fs::hex::hex;

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    ember_fs::hex::unhex(s).ok_or_else(|| anyhow::anyhow!("{s:?} is not a hex string"))
}

fn fourcc(v: u32) -> String {
    v.to_be_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|b| *b as char)
        .collect()
}

fn tpm2b(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

pub fn run(cmd: TpmCmd) -> anyhow::Result<()> {
    match cmd {
        TpmCmd::Info(target) => info(&target),
        TpmCmd::Pcrs { target, pcrs } => pcrs_cmd(&target, &pcrs),
        TpmCmd::Ek {
            target,
            alg,
            ca,
            cert_out,
            public_out,
        } => ek(&target, alg, &ca, cert_out, public_out),
        TpmCmd::Quote {
            target,
            nonce,
            pcrs,
            ak,
            out_dir,
        } => quote(&target, &nonce, &pcrs, ak, out_dir),
        TpmCmd::Unseal { target, slot, key } => unseal(&target, &slot, key),
        TpmCmd::Eventlog { log, pcr, bank } => eventlog(&log, &pcr, &bank),
        TpmCmd::Counter(CounterCmd::Read(target)) => print_counter(&mut open(&target)?),
        TpmCmd::Counter(CounterCmd::Increment(target)) => {
            let mut tpm = open(&target)?;
            tpm.increment_rollback_counter()
                .context("NV_Increment of the rollback counter under its boot-phase policy")?;
            print_counter(&mut tpm)
        }
    }
}

fn eventlog(path: &Path, only: &[u32], bank: &str) -> anyhow::Result<()> {
    use ember_tpm::eventlog::{replay, type_name, EventLog};
    let bank = HashAlg::from_name(bank).ok_or_else(|| anyhow::anyhow!("unknown bank {bank:?}"))?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let log = EventLog::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let shown = |pcr: u32| only.is_empty() || only.contains(&pcr);
    for event in log.events() {
        let e = event.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if shown(e.pcr) {
            println!(
                "event {}: PCR {} {} {} {} {}",
                e.number,
                e.pcr,
                type_name(e.event_type),
                bank.name(),
                e.digest(bank).map(hex).unwrap_or_else(|| "-".into()),
                e.describe()
            );
        }
    }
    let pcrs = replay(&log, bank).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (pcr, value) in pcrs.iter().enumerate() {
        if let Some(v) = value.as_deref().filter(|_| shown(pcr as u32)) {
            println!("PCR {pcr} {} {}", bank.name(), hex(v));
        }
    }
    Ok(())
}

fn print_counter(tpm: &mut Tpm<Box<dyn Transport>>) -> anyhow::Result<()> {
    let index = counter::INDEX;
    match tpm.rollback_counter()? {
        Found::Counter(v) => println!("rollback counter 0x{index:08x}: {v}"),
        Found::Unwritten => println!("rollback counter 0x{index:08x}: defined, never incremented"),
        Found::Absent => println!("rollback counter 0x{index:08x}: not defined"),
    }
    Ok(())
}

fn unseal(target: &Target, slot: &Path, only: Option<usize>) -> anyhow::Result<()> {
    let bytes = std::fs::read(slot).with_context(|| format!("reading {}", slot.display()))?;
    let record =
        SlotRecord::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", slot.display()))?;
    let keys: Vec<(usize, &SealedKey)> = record
        .keys
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|k| k == *i))
        .collect();
    if keys.is_empty() {
        bail!(
            "{} holds {} sealed keys: no key {}",
            slot.display(),
            record.keys.len(),
            only.unwrap_or(0)
        );
    }
    println!(
        "slot generation {}: {} sealed keys",
        record.generation,
        record.keys.len()
    );
    let mut tpm = open(target)?;
    let srk = tpm.create_srk().context("creating the SRK")?;
    let mut released = 0;
    for (i, key) in keys {
        match try_key(&mut tpm, srk.handle, key) {
            Ok((pcrs, Ok(data))) => {
                released += 1;
                println!(
                    "key {i} ({pcrs}; counter <= {}): the TPM released {} bytes",
                    key.sealed_for,
                    data.len()
                );
            }
            Ok((pcrs, Err(e))) => println!(
                "key {i} ({pcrs}; counter <= {}): refused by the TPM: {e}",
                key.sealed_for
            ),
            Err(e) => println!("key {i}: {e:#}"),
        }
    }
    let _ = tpm.flush_context(srk.handle);
    if released == 0 {
        bail!("the TPM released no key of {}", slot.display());
    }
    Ok(())
}

/// One sealed key: how its PCRs compare with now, and the TPM's answer to
/// unsealing it under the slot policy.
fn try_key(
    tpm: &mut Tpm<Box<dyn Transport>>,
    srk: u32,
    key: &SealedKey,
) -> anyhow::Result<(String, ember_tpm::Result<Vec<u8>>)> {
    let selection = PcrSelection::new(HashAlg::Sha256, &key.pcrs)?;
    let now = tpm.pcr_read(&selection)?;
    let pcrs: Vec<String> = key
        .pcrs
        .iter()
        .zip(&key.values)
        .map(|(pcr, sealed)| match now.get(HashAlg::Sha256, *pcr) {
            Some(v) if v == sealed.as_slice() => format!("PCR {pcr} as sealed"),
            Some(v) => format!("PCR {pcr} differs: now {}, sealed {}", hex(v), hex(sealed)),
            None => format!("PCR {pcr} unreadable"),
        })
        .collect();
    let object = CreatedKey {
        private: key.private.clone(),
        public: PublicArea::from_bytes(&key.public)?,
    };
    let answer = tpm.unseal_not_past(srk, &object, &selection, key.sealed_for);
    Ok((pcrs.join(", "), answer))
}

fn info(target: &Target) -> anyhow::Result<()> {
    let mut tpm = open(target)?;
    let c = tpm.capabilities()?;
    println!("family:            {}", fourcc(c.family));
    println!(
        "revision:          {}.{:02}",
        c.revision / 100,
        c.revision % 100
    );
    println!("manufacturer:      {}", fourcc(c.manufacturer));
    println!("vendor:            {}", c.vendor.trim());
    println!(
        "firmware:          {:08x}.{:08x}",
        c.firmware_version.0, c.firmware_version.1
    );
    println!("max command size:  {}", c.max_command_size);
    println!("max response size: {}", c.max_response_size);
    println!("nv buffer max:     {}", c.nv_buffer_max);
    for (bank, mask) in &c.pcr_banks.banks {
        let state = if *mask == 0 {
            "inactive".to_string()
        } else {
            format!("{} PCRs", mask.count_ones())
        };
        println!("pcr bank:          {} ({state})", bank.name());
    }
    let names: Vec<String> = c
        .algorithms
        .iter()
        .map(|a| {
            consts::alg_name(a.alg)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("0x{:04x}", a.alg))
        })
        .collect();
    println!("algorithms:        {}", names.join(" "));
    let nv = tpm.get_handles(consts::HR_NV_INDEX)?;
    let nv: Vec<String> = nv.iter().map(|h| format!("0x{h:08x}")).collect();
    println!("nv indices:        {}", nv.join(" "));
    Ok(())
}

fn pcrs_cmd(target: &Target, spec: &str) -> anyhow::Result<()> {
    let sel = PcrSelection::parse(spec)?;
    let mut tpm = open(target)?;
    let values = tpm.pcr_read(&sel)?;
    for (bank, index) in sel.iter() {
        match values.get(bank, index) {
            Some(v) => println!("{}:{index:<2} {}", bank.name(), hex(v)),
            None => println!("{}:{index:<2} (bank not allocated)", bank.name()),
        }
    }
    Ok(())
}

fn ek(
    target: &Target,
    alg: EkAlg,
    ca: &[PathBuf],
    cert_out: Option<PathBuf>,
    public_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let template = match alg {
        EkAlg::Rsa => EkTemplate::Rsa2048,
        EkAlg::Ecc256 => EkTemplate::EccP256,
        EkAlg::Ecc384 => EkTemplate::EccP384,
    };
    let mut tpm = open(target)?;
    let ek = tpm.create_ek(template).context("creating the EK")?;
    tpm.flush_context(ek.handle)?;
    println!("template:    {template:?}");
    println!("name:        {}", hex(&ek.name));
    match (&ek.public.params, &ek.public.unique) {
        (PublicParams::Rsa { key_bits, .. }, Unique::Rsa(n)) => {
            println!(
                "key:         RSA {key_bits}, exponent {}",
                ek.public.rsa_exponent().unwrap_or(65537)
            );
            println!("modulus:     {}", hex(n));
        }
        (PublicParams::Ecc { curve, .. }, Unique::Ecc(p)) => {
            let curve = match *curve {
                consts::ECC_NIST_P256 => "NIST P-256",
                consts::ECC_NIST_P384 => "NIST P-384",
                _ => "other curve",
            };
            println!("key:         ECC {curve}");
            println!("x:           {}", hex(&p.x));
            println!("y:           {}", hex(&p.y));
        }
        _ => {}
    }
    if let Some(p) = public_out {
        std::fs::write(&p, tpm2b(&ek.public.to_bytes()?))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let der = match tpm.nv_read_ek_certificate(template) {
        Ok(der) => der,
        Err(e) => {
            println!(
                "certificate: none at 0x{:08x} ({e})",
                template.certificate_nv_index()
            );
            if !ca.is_empty() {
                bail!("no EK certificate to validate");
            }
            return Ok(());
        }
    };
    let cert = host::parse_ek_certificate(&der)?;
    println!(
        "certificate: 0x{:08x}, {} bytes",
        template.certificate_nv_index(),
        cert.der.len()
    );
    println!("  subject:   {}", cert.subject);
    println!("  issuer:    {}", cert.issuer);
    match host::ek_certificate_matches(&cert, &ek.public) {
        Ok(()) => println!("  key:       matches the EK"),
        Err(e) => bail!("EK certificate key check: {e}"),
    }
    if let Some(p) = cert_out {
        std::fs::write(&p, &cert.der).with_context(|| format!("writing {}", p.display()))?;
    }
    if !ca.is_empty() {
        let mut cas = Vec::new();
        for p in ca {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            cas.extend(
                host::certificates_from_pem_or_der(&bytes)
                    .with_context(|| format!("parsing {}", p.display()))?,
            );
        }
        host::verify_ek_certificate(&der, &cas).context("EK certificate chain")?;
        println!("  chain:     valid up to the given CA");
    }
    Ok(())
}

fn quote(
    target: &Target,
    nonce: &str,
    spec: &str,
    ak: AkAlg,
    out_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let nonce = unhex(nonce)?;
    let sel = PcrSelection::parse(spec)?;
    let kind = match ak {
        AkAlg::Rsa => AkKind::Rsa2048,
        AkAlg::Ecc => AkKind::EccP256,
    };
    let mut tpm = open(target)?;
    let srk = tpm.create_srk().context("creating the SRK")?;
    let made = tpm.create_ak(srk.handle, kind).context("creating the AK");
    let (_, akey) = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = tpm.flush_context(srk.handle);
            return Err(e);
        }
    };
    let q = tpm.quote(akey.handle, &nonce, &sel);
    let pcrs = tpm.pcr_read(&sel);
    let _ = tpm.flush_context(akey.handle);
    let _ = tpm.flush_context(srk.handle);
    let (q, pcrs) = (q.context("TPM2_Quote")?, pcrs?);
    let ak_pub = akey.public.to_bytes()?;
    let info = host::verify_quote(&ak_pub, &q.attest, &q.signature, &nonce, &pcrs)
        .context("verifying the quote")?;
    println!("ak name:     {}", hex(&akey.name));
    println!("ak public:   {}", hex(&ak_pub));
    println!("nonce:       {}", hex(&info.extra_data));
    println!(
        "clock:       {} ms, resets {}, restarts {}",
        info.clock_info.clock, info.clock_info.reset_count, info.clock_info.restart_count
    );
    println!("pcr digest:  {}", hex(&info.quote.pcr_digest));
    for (bank, index) in sel.iter() {
        if let Some(v) = pcrs.get(bank, index) {
            println!("  {}:{index:<2} {}", bank.name(), hex(v));
        }
    }
    println!("attest:      {}", hex(&q.attest));
    println!("signature:   {}", hex(&q.signature));
    println!("verified:    signature, nonce and PCR digest");
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ak.pub"), tpm2b(&ak_pub))?;
        std::fs::write(dir.join("quote.msg"), &q.attest)?;
        std::fs::write(dir.join("quote.sig"), &q.signature)?;
        let flat: Vec<u8> = sel
            .iter()
            .filter_map(|(b, i)| pcrs.get(b, i))
            .flatten()
            .copied()
            .collect();
        std::fs::write(dir.join("pcrs.bin"), flat)?;
    }
    Ok(())
}
