//! A TCG crypto-agile event log writer (sha256 only), for tests that play
//! the firmware on a host-side swtpm: each [`LogEvent`] is extended into
//! the TPM and written to the log the node then sends, as OVMF and
//! systemd-stub would. The reader is ember-tpm's (one parser); this only
//! writes the layout it reads.

use crate::swtpm::Swtpm;

/// EV_IPL: systemd-stub's PCR 11 events.
pub const EV_IPL: u32 = 0xd;
/// EV_NO_ACTION: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
pub const EV_SEPARATOR: u32 = 0x4;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
const TPM_ALG_SHA256: u16 = 0x000b;

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
/// a log [`write`] made.
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
