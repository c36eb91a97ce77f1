//! The PCR 11 value systemd-stub (systemd 252) leaves when it boots a UKI.
//!
//! The stub walks its section table for the "unified" sections in a fixed
//! order and, for each one present with a non-zero VirtualSize, extends
//! PCR 11 twice: with the digest of the section name including its NUL
//! ("`.linux\0`"), then with the digest of the section's VirtualSize bytes
//! as mapped in memory. `.pcrsig` is never measured (it holds signatures
//! of this very PCR). systemd-measure(1) computes the same value; CI checks
//! the two agree (tests/tests/uki_measure.rs).
//!
//! Userspace boot phases (systemd-pcrphase) then extend PCR 11 with the
//! digest of the phase word ("enter-initrd", "leave-initrd", ...).
//!
//! PCR 4 (UEFI boot manager code) is the firmware's: OVMF extends the
//! digest of "Calling EFI Application from Boot Option" (EV_EFI_ACTION),
//! then the EV_SEPARATOR (digest of four zero bytes) that closes the
//! pre-OS phase, then the Authenticode digest of each PE image loaded: the
//! boot loader if any, the UKI, and the kernel the stub loads from .linux.
//! Checked against a real OVMF + swtpm boot's event log in tests/tests/uki.rs.

use anyhow::{anyhow, Result};
use ember_tpm::HashAlg;

use ember_build::pe::PeImage;
use ember_proto::slot::{entry_options, slot_cmdline, SLOT_NAMES};

/// The sections systemd-stub 252 measures into PCR 11, in its order.
pub const MEASURED_SECTIONS: [&str; 7] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// The PCR that systemd-stub extends the UKI's sections into.
pub const PCR_KERNEL_IMAGE: u8 = 11;
/// The PCR UEFI firmware extends loaded boot applications into.
pub const PCR_BOOT_LOADER_CODE: u8 = 4;
/// OVMF's EV_EFI_ACTION before it starts a Boot#### option.
const CALLING_EFI_APPLICATION: &[u8] = b"Calling EFI Application from Boot Option";
/// OVMF's EV_EFI_ACTION when a boot option returned (failed) and the next
/// one is tried (then "Calling ..." again).
const RETURNING_FROM_EFI_APPLICATION: &[u8] = b"Returning from EFI Application from Boot Option";

/// One extend of PCR 11, in the order the stub makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What was measured: ".initrd (name)" or ".initrd".
    pub label: String,
    pub digest: Vec<u8>,
}

/// A PCR's predicted final value and the events that lead to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub bank: HashAlg,
    pub pcr: u8,
    pub value: Vec<u8>,
    pub events: Vec<Event>,
}

pub use ember_tpm::eventlog::Mismatch;

impl Prediction {
    /// The events as a policy stores them.
    pub fn expected(&self) -> Vec<ember_tpm::eventlog::Expected> {
        self.events
            .iter()
            .map(|e| ember_tpm::eventlog::Expected {
                label: e.label.clone(),
                digest: e.digest.clone(),
            })
            .collect()
    }

    /// The value `events` leave in a reset (all-zero) `pcr`.
    pub(crate) fn replay(bank: HashAlg, pcr: u8, events: Vec<Event>) -> Result<Prediction> {
        let mut value = vec![0u8; bank.digest_len()];
        for e in &events {
            value = extend(bank, &value, &e.digest)?;
        }
        Ok(Prediction {
            bank,
            pcr,
            value,
            events,
        })
    }
}

fn digest(bank: HashAlg, data: &[u8]) -> Result<Vec<u8>> {
    bank.digest(&[data])
        .map_err(|e| anyhow!("{} digest: {e:?}", bank.name()))
}

/// PCR extend: new = H(old ‖ digest).
pub fn extend(bank: HashAlg, pcr: &[u8], digest: &[u8]) -> Result<Vec<u8>> {
    bank.digest(&[pcr, digest])
        .map_err(|e| anyhow!("{} extend: {e:?}", bank.name()))
}

/// Predicts PCR 11 for booting the UKI `file` (a PE image), starting from
/// a reset PCR (all zeros), then extended with each of `phases` as
/// systemd-pcrphase does.
pub fn predict_pcr11(file: &[u8], bank: HashAlg, phases: &[String]) -> Result<Prediction> {
    let img = PeImage::parse(file)?;
    let sections: Vec<(&str, Vec<u8>)> = MEASURED_SECTIONS
        .iter()
        .filter_map(|name| {
            img.section(name)
                .map(|s| (*name, img.section_bytes(file, s)))
        })
        .collect();
    if !sections.iter().any(|(n, _)| *n == ".linux") {
        return Err(anyhow!("not a UKI: no .linux section"));
    }
    let sections: Vec<(&str, &[u8])> = sections.iter().map(|(n, d)| (*n, &d[..])).collect();
    predict_from_sections(&sections, bank, phases)
}

/// Like [`predict_pcr11`], from section contents (name, bytes); sections
/// not in [`MEASURED_SECTIONS`] are ignored and the stub's order applies
/// whatever the order given.
pub fn predict_from_sections(
    sections: &[(&str, &[u8])],
    bank: HashAlg,
    phases: &[String],
) -> Result<Prediction> {
    let mut events = Vec::new();
    for name in MEASURED_SECTIONS {
        let Some((_, data)) = sections.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let mut name_nul = name.as_bytes().to_vec();
        name_nul.push(0);
        events.push(Event {
            label: format!("{name} (name)"),
            digest: digest(bank, &name_nul)?,
        });
        events.push(Event {
            label: name.to_string(),
            digest: digest(bank, data)?,
        });
    }
    for phase in phases {
        events.push(Event {
            label: format!("phase {phase}"),
            digest: digest(bank, phase.as_bytes())?,
        });
    }
    Prediction::replay(bank, PCR_KERNEL_IMAGE, events)
}

/// Predicts PCR 4 for firmware booting `loaders` (PE images, in order,
/// e.g. a boot manager) and then the UKI `uki` from a boot option.
pub fn predict_pcr4(loaders: &[&[u8]], uki: &[u8], bank: HashAlg) -> Result<Prediction> {
    predict_pcr4_after(0, loaders, uki, bank)
}

/// Like [`predict_pcr4`], when `failed` boot options (a network boot whose
/// server is down) returned before this one: OVMF extends "Returning
/// from ..." and "Calling ..." again for each.
pub fn predict_pcr4_after(
    failed: usize,
    loaders: &[&[u8]],
    uki: &[u8],
    bank: HashAlg,
) -> Result<Prediction> {
    pcr4_with(failed, bank, image_events(loaders, uki, bank, true)?)
}

/// Like [`predict_pcr4`] on a firmware enforcing Secure Boot: systemd-stub
/// (252) then loads the kernel through its own security override (the
/// kernel is part of the UKI the firmware verified), which also bypasses
/// the firmware's measuring hook, so PCR 4 has no `.linux` event. Seen in
/// a real OVMF Secure Boot boot (tests/tests/secure_boot_qemu.rs).
pub fn predict_pcr4_secure_boot(
    loaders: &[&[u8]],
    uki: &[u8],
    bank: HashAlg,
) -> Result<Prediction> {
    pcr4_with(0, bank, image_events(loaders, uki, bank, false)?)
}

/// [`predict_pcr4_after`] for 0, 1, … `max_failed` failed boot options,
/// the images hashed once (a UKI's Authenticode digest is most of the cost).
pub fn predict_pcr4_each(
    max_failed: usize,
    loaders: &[&[u8]],
    uki: &[u8],
    bank: HashAlg,
) -> Result<Vec<Prediction>> {
    let images = image_events(loaders, uki, bank, true)?;
    (0..=max_failed)
        .map(|failed| pcr4_with(failed, bank, images.clone()))
        .collect()
}

/// [`predict_pcr4_each`] for both firmware modes: Secure Boot off (the
/// firmware measures the kernel the stub loads), then on (it does not; see
/// [`predict_pcr4_secure_boot`]).
pub fn predict_pcr4_each_mode(
    max_failed: usize,
    loaders: &[&[u8]],
    uki: &[u8],
    bank: HashAlg,
) -> Result<Vec<Prediction>> {
    let mut out = Vec::with_capacity(2 * (max_failed + 1));
    for kernel_measured in [true, false] {
        let images = image_events(loaders, uki, bank, kernel_measured)?;
        for failed in 0..=max_failed {
            out.push(pcr4_with(failed, bank, images.clone())?);
        }
    }
    Ok(out)
}

/// The firmware's fixed events, `failed` returned boot options, then the
/// images' events.
fn pcr4_with(failed: usize, bank: HashAlg, images: Vec<Event>) -> Result<Prediction> {
    let calling = || -> Result<Event> {
        Ok(Event {
            label: "EV_EFI_ACTION Calling EFI Application from Boot Option".into(),
            digest: digest(bank, CALLING_EFI_APPLICATION)?,
        })
    };
    let mut events = vec![
        calling()?,
        Event {
            label: "EV_SEPARATOR".into(),
            digest: digest(bank, &[0u8; 4])?,
        },
    ];
    for _ in 0..failed {
        events.push(Event {
            label: "EV_EFI_ACTION Returning from EFI Application from Boot Option".into(),
            digest: digest(bank, RETURNING_FROM_EFI_APPLICATION)?,
        });
        events.push(calling()?);
    }
    events.extend(images);
    Prediction::replay(bank, PCR_BOOT_LOADER_CODE, events)
}

/// What the firmware extends loading `loaders`, the UKI, then (when
/// `kernel_measured`: Secure Boot off) the kernel the stub loads: each
/// one's Authenticode digest.
fn image_events(
    loaders: &[&[u8]],
    uki: &[u8],
    bank: HashAlg,
    kernel_measured: bool,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for (i, l) in loaders.iter().enumerate() {
        let img = PeImage::parse(l).map_err(|e| anyhow!("loader {}: {e}", i + 1))?;
        events.push(Event {
            label: format!("EV_EFI_BOOT_SERVICES_APPLICATION loader {}", i + 1),
            digest: img.authenticode(l, bank)?,
        });
    }
    let img = PeImage::parse(uki)?;
    events.push(Event {
        label: "EV_EFI_BOOT_SERVICES_APPLICATION UKI".into(),
        digest: img.authenticode(uki, bank)?,
    });
    let linux = img
        .section(".linux")
        .map(|s| img.section_bytes(uki, s))
        .ok_or_else(|| anyhow!("not a UKI: no .linux section"))?;
    let kernel = PeImage::parse(&linux).map_err(|e| anyhow!(".linux: {e}"))?;
    if !kernel_measured {
        return Ok(events);
    }
    events.push(Event {
        label: "EV_EFI_BOOT_SERVICES_APPLICATION .linux".into(),
        digest: kernel.authenticode(&linux, bank)?,
    });
    Ok(events)
}

/// PCR 12, where systemd-stub 252 measures the load options a loader
/// passed, and boots with them instead of the embedded `.cmdline` (without
/// Secure Boot).
pub const PCR_KERNEL_PARAMETERS: u8 = 12;

/// Predicts PCR 12 for a UKI started with `load_options` (iPXE's `chain
/// --name uki.efi <sha256> ARGS` passes "uki.efi ARGS"): one EV_IPL of the
/// options as UTF-16LE with their terminating NUL, as systemd-stub 252
/// measures them (checked against a real iPXE boot's event log in
/// tests/tests/measured_boot_qemu.rs).
pub fn predict_pcr12(load_options: &str, bank: HashAlg) -> Result<Prediction> {
    let events = vec![Event {
        label: "EV_IPL load options".into(),
        digest: digest(bank, &utf16z(load_options))?,
    }];
    Prediction::replay(bank, PCR_KERNEL_PARAMETERS, events)
}

/// Every PCR 12 value a genuine boot of `uki` may leave, one prediction
/// per boot path, so one policy admits them all and nothing else:
/// - each of `load_options` (iPXE's "uki.efi ARGS"), and always the
///   options `ember artifact ipxe`'s script passes ([`ipxe_load_options`]
///   of the UKI's own command line), as systemd-stub measures a loader's
///   options (without Secure Boot: under it the stub ignores them);
/// - each slot's loader entry on the ESP (`options` = the boot's command
///   line and `ember.slot=`, as the init writes it from an iPXE boot or one
///   with the UKI's own `.cmdline`): systemd-boot measures the options, and
///   without Secure Boot systemd-stub measures them again;
/// - no event at all: the UKI booted with its embedded `.cmdline` (a
///   firmware boot entry, as a real OVMF boot's log shows; or a loader's
///   options under Secure Boot).
///
/// `secure_boot` is whether the firmware enforces it, `None` when the
/// policy does not say (both then). A command line none of these allows
/// is refused naming what the node logged (`measured::judge`).
pub fn predict_pcr12_paths(
    uki: &[u8],
    load_options: &[String],
    secure_boot: Option<bool>,
    bank: HashAlg,
) -> Result<Vec<Prediction>> {
    let embedded = embedded_cmdline(uki)?;
    let stub_takes_options = secure_boot != Some(true);
    // The options `ember artifact ipxe`'s script passes are always
    // allowed: they are the UKI's own command line.
    let mut load_options = load_options.to_vec();
    load_options.insert(0, ipxe_load_options(&embedded));
    let load_options = &load_options[..];
    // The command lines a slot's entry may repeat: the boot that wrote it
    // ran with the UKI's own, or (without Secure Boot) with a loader's.
    let mut bases = vec![slot_cmdline(&embedded)];
    if stub_takes_options {
        for o in load_options {
            let base = slot_cmdline(o);
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
    }
    let extends: &[usize] = match secure_boot {
        Some(true) => &[1],
        Some(false) => &[2],
        None => &[1, 2],
    };
    let mut out: Vec<Prediction> = Vec::new();
    let mut add = |p: Prediction| {
        if !out.iter().any(|q| q.value == p.value) {
            out.push(p);
        }
    };
    for base in &bases {
        for slot in SLOT_NAMES {
            let options = entry_options(base, slot);
            let d = digest(bank, &utf16z(&options))?;
            for &n in extends {
                let events = (0..n)
                    .map(|i| Event {
                        label: format!(
                            "EV_IPL slot {slot}'s loader entry options, by {}",
                            ["systemd-boot", "systemd-stub"][i]
                        ),
                        digest: d.clone(),
                    })
                    .collect();
                add(Prediction::replay(bank, PCR_KERNEL_PARAMETERS, events)?);
            }
        }
    }
    if stub_takes_options {
        for o in load_options {
            add(predict_pcr12(o, bank)?);
        }
    }
    add(Prediction::replay(bank, PCR_KERNEL_PARAMETERS, Vec::new())?);
    Ok(out)
}

/// The command line a UKI carries in its `.cmdline` section ("" if none),
/// without the NUL padding of the section's virtual size.
pub fn embedded_cmdline(uki: &[u8]) -> Result<String> {
    let img = PeImage::parse(uki)?;
    let Some(s) = img.section(".cmdline") else {
        return Ok(String::new());
    };
    let text = String::from_utf8(img.section_bytes(uki, s))
        .map_err(|_| anyhow!(".cmdline is not UTF-8"))?;
    Ok(text.trim_end_matches('\0').to_string())
}

/// The load options iPXE hands a UKI that `ember artifact ipxe`'s script
/// chains (`chain --name uki.efi <sha256> <command line>`): the image
/// name, then the arguments one space apart (iPXE splits them on spaces
/// and joins them again), here the UKI's own `cmdline`.
pub fn ipxe_load_options(cmdline: &str) -> String {
    core::iter::once("uki.efi")
        .chain(cmdline.split_ascii_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` as UTF-16LE with its terminating NUL: how systemd-boot and
/// systemd-stub measure a command line.
fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Compares the events `log` records for the prediction's PCR with the
/// predicted events (digests only; see [`ember_tpm::eventlog::compare`]).
pub fn check_log(
    p: &Prediction,
    log: &ember_tpm::eventlog::EventLog<'_>,
) -> Result<std::result::Result<(), Mismatch>> {
    ember_tpm::eventlog::compare(log, p.pcr, p.bank, &p.expected())
        .map_err(|e| anyhow!("event log: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_fs::hex::hex;

    #[test]
    fn pcr12_measures_the_load_options_as_utf16_with_their_nul() {
        // python3: d = sha256("uki.efi a=1".encode("utf-16-le") + b"\0\0")
        // and the value sha256(b"\0" * 32 + d.digest()).
        let p = predict_pcr12("uki.efi a=1", HashAlg::Sha256).unwrap();
        assert_eq!(
            hex(&p.events[0].digest),
            "20f7ae6c71cc7e5c5402f6c6aa3a353c0470439fbafdab98f6f7929790a5227b"
        );
        assert_eq!(
            hex(&p.value),
            "2ab6f57db8b0a0d0bed3fdc861583db6d641f8768284fa2af21004f5c86835c1"
        );
    }

    #[test]
    fn matches_systemd_measure_on_a_small_uki() {
        // `systemd-measure calculate --linux=l --osrel=o --phase= --bank=sha256`
        // with l = "abc", o = "x" (systemd 252, Debian 12).
        let p = predict_from_sections(
            &[(".osrel", b"x"), (".linux", b"abc")],
            HashAlg::Sha256,
            &[],
        )
        .unwrap();
        assert_eq!(
            hex(&p.value),
            "8134f0e8323fb14dd42a6e168790e52319d01948d1ba63c76e59a5ddb25f627f"
        );
        assert_eq!(p.events.len(), 4);
        assert_eq!(p.events[0].label, ".linux (name)");
        // --phase=enter-initrd
        let p = predict_from_sections(
            &[(".osrel", b"x"), (".linux", b"abc")],
            HashAlg::Sha256,
            &["enter-initrd".to_string()],
        )
        .unwrap();
        assert_eq!(
            hex(&p.value),
            "6cc97cafb7c0f20cb1dbbb534b40b01e7dc48f1b12ddde85fc83f99d2a2e2f44"
        );
    }

    #[test]
    fn one_changed_initrd_byte_changes_pcr11_and_names_the_event() {
        let a = predict_from_sections(
            &[(".linux", b"k"), (".initrd", b"initrd-0")],
            HashAlg::Sha256,
            &[],
        )
        .unwrap();
        let b = predict_from_sections(
            &[(".linux", b"k"), (".initrd", b"initrd-1")],
            HashAlg::Sha256,
            &[],
        )
        .unwrap();
        assert_ne!(a.value, b.value);
        let differ: Vec<_> = a
            .events
            .iter()
            .zip(&b.events)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.label.as_str())
            .collect();
        assert_eq!(differ, [".initrd"]);
    }

    #[test]
    fn a_file_without_linux_is_not_a_uki() {
        let stub = ember_build::pe::test_stub();
        let err = predict_pcr11(&stub, HashAlg::Sha256, &[]).unwrap_err();
        assert!(err.to_string().contains("no .linux"), "{err}");
    }

    /// PCR 12 of a real OVMF + swtpm boot through systemd-boot 252 with the
    /// entry "options console=ttyS0 panic=-1 ember.slot=a"
    /// (docs/src/operator/secure-boot.md; the init's `entry_pcr12` test
    /// holds the same values): Secure Boot on, off.
    const ESP_SLOT_A_SB_ON: &str =
        "43051fb4e0ce040ac93565c9dd7a112423c3ba3133a2408b72c518d489f1f783";
    const ESP_SLOT_A_SB_OFF: &str =
        "28efb5d05bf47a18cec8f6bb664d563cfcbc976209329f4731f8ddc1f7bd8973";

    fn uki_with_cmdline(cmdline: &str) -> Vec<u8> {
        let stub = ember_build::pe::test_stub();
        ember_build::pe::append_sections(&stub, &[(".cmdline", cmdline.as_bytes())]).unwrap()
    }

    fn values(p: &[Prediction]) -> Vec<String> {
        p.iter().map(|p| hex(&p.value)).collect()
    }

    #[test]
    fn pcr12_paths_are_the_esp_entries_the_load_options_and_the_embedded_line() {
        let uki = uki_with_cmdline("console=ttyS0  panic=-1\0");
        let ipxe = "uki.efi console=ttyS0 x=1".to_string();
        let all =
            predict_pcr12_paths(&uki, std::slice::from_ref(&ipxe), None, HashAlg::Sha256).unwrap();
        let v = values(&all);
        // The ESP path, from a boot with the UKI's own command line.
        assert!(v.contains(&ESP_SLOT_A_SB_ON.to_string()), "{v:?}");
        assert!(v.contains(&ESP_SLOT_A_SB_OFF.to_string()), "{v:?}");
        // iPXE's options, and the ESP entries a boot with them writes.
        let ipxe_value = hex(&predict_pcr12(&ipxe, HashAlg::Sha256).unwrap().value);
        assert!(v.contains(&ipxe_value), "{v:?}");
        let entry_b = entry_options("console=ttyS0 x=1", "b");
        let once = predict_pcr12(&entry_b, HashAlg::Sha256).unwrap();
        assert!(v.contains(&hex(&once.value)), "{v:?}");
        // Nothing measured: the embedded line, last.
        assert_eq!(v.last().unwrap(), &"00".repeat(32));
        // `ember artifact ipxe`'s options, always.
        let script = ipxe_load_options("console=ttyS0  panic=-1");
        assert_eq!(script, "uki.efi console=ttyS0 panic=-1");
        let script_value = hex(&predict_pcr12(&script, HashAlg::Sha256).unwrap().value);
        assert!(v.contains(&script_value), "{v:?}");
        // 2 command lines x 2 slots x (1 or 2 extends), the script's and
        // the given options, none.
        assert_eq!(v.len(), 2 * 2 * 2 + 2 + 1, "{v:?}");
        // One more argument is none of them.
        let evil = predict_pcr12(&(ipxe + " efivar_ssdt=evil"), HashAlg::Sha256).unwrap();
        assert!(!v.contains(&hex(&evil.value)));
    }

    #[test]
    fn under_secure_boot_pcr12_is_one_esp_extend_of_the_embedded_line() {
        let uki = uki_with_cmdline("console=ttyS0 panic=-1");
        let ipxe = ["uki.efi other=1".to_string()];
        let on = predict_pcr12_paths(&uki, &ipxe, Some(true), HashAlg::Sha256).unwrap();
        let v = values(&on);
        assert!(v.contains(&ESP_SLOT_A_SB_ON.to_string()), "{v:?}");
        assert!(!v.contains(&ESP_SLOT_A_SB_OFF.to_string()), "{v:?}");
        // The stub ignores a loader's options: neither they nor an entry
        // written from them can be measured.
        assert_eq!(v.len(), 2 + 1, "{v:?}");
        let off = predict_pcr12_paths(&uki, &ipxe, Some(false), HashAlg::Sha256).unwrap();
        let v = values(&off);
        assert!(v.contains(&ESP_SLOT_A_SB_OFF.to_string()), "{v:?}");
        assert!(!v.contains(&ESP_SLOT_A_SB_ON.to_string()), "{v:?}");
        assert_eq!(v.len(), 2 * 2 + 2 + 1, "{v:?}");
    }
}
