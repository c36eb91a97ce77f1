//! A TCG crypto-agile event log writer (sha256 only), for tests that play
//! the firmware on a host-side swtpm: each [`LogEvent`] is extended into
//! the TPM and written to the log the node then sends, as OVMF and
//! systemd-stub would. The reader is ember-tpm's (one parser); this only
//! writes the layout it reads.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::swtpm::Swtpm;

/// EV_IPL: systemd-stub's PCR 11 events.
pub const EV_IPL: u32 = 0xd;
/// EV_NO_ACTION: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
pub const EV_SEPARATOR: u32 = 0x4;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
const TPM_ALG_SHA256: u16 = 0x000b;
/// The init's boot-phase end (init/src/measure.rs), as systemd-pcrphase's
/// leave-initrd.
pub const LEAVE_INITRD: &[u8] = b"ember: leaving initrd boot phase";

/// One extend and how the log records it.
#[derive(Clone, Debug)]
pub struct LogEvent {
    pub pcr: u32,
    pub event_type: u32,
    pub digest: [u8; 32],
    /// What the event says it is (written as UTF-16, as systemd-stub does).
    pub description: String,
}

/// The log's bytes: the Spec ID header event, then `events`.
pub fn write(events: &[LogEvent]) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend(0u32.to_le_bytes()); // platformClass
    spec.extend([0, 2, 0, 2]); // minor, major, errata, uintnSize
    spec.extend(1u32.to_le_bytes());
    spec.extend(TPM_ALG_SHA256.to_le_bytes());
    spec.extend(32u16.to_le_bytes());
    spec.push(0); // vendorInfoSize
    let mut log = Vec::new();
    log.extend(0u32.to_le_bytes());
    log.extend(EV_NO_ACTION.to_le_bytes());
    log.extend([0u8; 20]);
    log.extend((spec.len() as u32).to_le_bytes());
    log.extend(spec);
    for e in events {
        let data: Vec<u8> = e
            .description
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect();
        log.extend(e.pcr.to_le_bytes());
        log.extend(e.event_type.to_le_bytes());
        log.extend(1u32.to_le_bytes());
        log.extend(TPM_ALG_SHA256.to_le_bytes());
        log.extend(e.digest);
        log.extend((data.len() as u32).to_le_bytes());
        log.extend(data);
    }
    log
}

/// Byte offset of the type field of event `number` (the header is 0) in
/// a log [`write()`] made.
pub fn type_offset(events: &[LogEvent], number: usize) -> usize {
    let header = 32 + 16 + 4 + 4 + 4 + 4 + 1;
    let mut at = header;
    for e in &events[..number - 1] {
        at += 4 + 4 + 4 + 2 + 32 + 4 + (e.description.encode_utf16().count() + 1) * 2;
    }
    at + 4
}

/// Extends every event into `tpm`'s sha256 bank, as the firmware would.
pub fn extend(tpm: &Swtpm, events: &[LogEvent]) {
    for e in events {
        let hex: String = e.digest.iter().map(|b| format!("{b:02x}")).collect();
        tpm.tpm2_run("tpm2_pcrextend", &[&format!("{}:sha256={hex}", e.pcr)])
            .expect("tpm2_pcrextend");
    }
}

/// The sha256 value of `pcr` in `tpm`, as hex.
pub fn pcr_value(tpm: &Swtpm, pcr: u32) -> String {
    let out = tpm
        .tpm2_run("tpm2_pcrread", &[&format!("sha256:{pcr}")])
        .expect("tpm2_pcrread");
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .find_map(|l| {
            l.trim()
                .split_once(": 0x")
                .map(|(_, v)| v.to_ascii_lowercase())
        })
        .unwrap_or_else(|| panic!("no PCR {pcr} in {text}"))
}

/// What the firmware (PCR 4) and systemd-stub (PCR 11) extend booting
/// `uki`, from `ember policy predict --events`, typed as they log them.
pub fn measurements(uki: &Path) -> Vec<LogEvent> {
    let out = std::process::Command::new(crate::ember_bin())
        .args([
            "policy",
            "predict",
            "--uki",
            uki.to_str().unwrap(),
            "--events",
        ])
        .output()
        .expect("run ember policy predict");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pcr = 0;
    let mut events = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("PCR ") {
            pcr = rest.split_whitespace().next().unwrap().parse().unwrap();
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() != Some(&"event") {
            continue;
        }
        let digest: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&f[2][2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let label = f[3..].join(" ");
        let event_type = match (pcr, label.as_str()) {
            (11, _) => EV_IPL,
            (_, l) if l.starts_with("EV_EFI_ACTION") => EV_EFI_ACTION,
            (_, "EV_SEPARATOR") => EV_SEPARATOR,
            _ => EV_EFI_BOOT_SERVICES_APPLICATION,
        };
        let description = match pcr {
            11 => label.trim_end_matches(" (name)").to_string(),
            _ => label.clone(),
        };
        events.push(LogEvent {
            pcr,
            event_type,
            digest: digest.try_into().unwrap(),
            description,
        });
    }
    // The firmware measures PCR 4 before the stub runs.
    events.sort_by_key(|e| e.pcr != 4);
    events
}

pub fn leave_initrd() -> LogEvent {
    LogEvent {
        pcr: 11,
        event_type: EV_IPL,
        digest: Sha256::digest(LEAVE_INITRD).into(),
        description: "leave-initrd".into(),
    }
}
