//! The TCG firmware event log (crypto-agile format, TCG PC Client Platform
//! Firmware Profile §10), as Linux exposes it in
//! /sys/kernel/security/tpm0/binary_bios_measurements: a view over the
//! bytes, and a replay that recomputes the PCRs the events extended.
//!
//! ```text
//! first event (TCG_PCClientPCREvent, SHA-1 layout, EV_NO_ACTION):
//!   pcr u32 | type u32 | digest [20] | size u32 | TCG_EfiSpecIdEvent
//!   TCG_EfiSpecIdEvent: "Spec ID Event03\0" | platformClass u32 | minor u8 |
//!     major u8 | errata u8 | uintnSize u8 | count u32 | {alg u16, size u16}* |
//!     vendorInfoSize u8 | vendorInfo
//! then TCG_PCR_EVENT2, repeated:
//!   pcr u32 | type u32 | count u32 | {alg u16, digest [size of alg]}* |
//!   size u32 | event data
//! ```
//!
//! Everything is little endian. Replays trust the digests, never the event
//! types or data: an attacker can retype an event, but the type is outside
//! what the TPM extended. The only type that matters is EV_NO_ACTION, which
//! by definition extended nothing.

use crate::ErrorKind;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::consts::HashAlg;
use crate::error::{Error, Result};

/// EV_NO_ACTION: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
/// EV_SEPARATOR: the end of the pre-OS phase of a PCR.
pub const EV_SEPARATOR: u32 = 0x4;
/// EV_EFI_ACTION: an ASCII action string, e.g. "Calling EFI Application from Boot Option".
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// EV_EFI_BOOT_SERVICES_APPLICATION: a PE image the firmware loaded (its Authenticode hash).
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// EV_IPL: what systemd-stub logs its PCR 11 section measurements as.
pub const EV_IPL: u32 = 0xd;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// "StartupLocality\0": an EV_NO_ACTION event in PCR 0 giving the locality
/// the firmware started from, which is PCR 0's initial value.
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// Algorithms one log may declare (the spec defines a handful).
const MAX_ALGS: usize = 8;
/// PCRs of a PC client TPM.
pub const NUM_PCRS: usize = 24;

fn malformed(what: &'static str, offset: usize) -> Error {
    Error::new(ErrorKind::Malformed { what, offset })
}

/// A little-endian cursor that reports where the input ran out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| malformed(what, self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// One algorithm the log's header declares, with its digest size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgSize {
    pub alg: u16,
    pub size: u16,
}

/// A parsed event log: the header's algorithm table and the events' bytes.
#[derive(Debug, Clone)]
pub struct EventLog<'a> {
    algs: Vec<AlgSize>,
    /// The TCG_PCR_EVENT2 records after the header.
    events: &'a [u8],
    /// Offset of `events` in the whole log (for error offsets).
    events_at: usize,
}

/// One TCG_PCR_EVENT2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log, the header event being 0.
    pub number: usize,
    /// Byte offset of the event in the whole log (for error messages).
    pub at: usize,
    pub pcr: u32,
    pub event_type: u32,
    /// (algorithm id, digest) pairs, as logged.
    pub digests: Vec<(u16, &'a [u8])>,
    pub data: &'a [u8],
}

impl Event<'_> {
    /// What the event says it measured, for people: its data as a UTF-16
    /// or ASCII string when it is one (systemd-stub's ".initrd", OVMF's
    /// "Calling EFI Application from Boot Option"), else its type's name.
    /// Never used to judge: the data and type are outside the digest.
    pub fn describe(&self) -> String {
        let printable = |c: char| c == ' ' || c.is_ascii_graphic();
        let trimmed = self.data.strip_suffix(&[0, 0]).unwrap_or(self.data);
        if !trimmed.is_empty() && trimmed.len().is_multiple_of(2) {
            let units: Vec<u16> = trimmed
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            if let Ok(text) = String::from_utf16(&units) {
                if text.chars().all(printable) && text.len() <= 64 {
                    return text;
                }
            }
        }
        if let Ok(text) = core::str::from_utf8(self.data.strip_suffix(&[0]).unwrap_or(self.data)) {
            if !text.is_empty() && text.len() <= 64 && text.chars().all(printable) {
                return String::from(text);
            }
        }
        String::from(type_name(self.event_type))
    }

    /// The digest logged for `bank`, if the event carries one.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == bank.alg_id())
            .map(|(_, d)| *d)
    }
}

impl<'a> EventLog<'a> {
    /// Checks the header event and reads its algorithm table; the events
    /// are parsed as [`EventLog::events`] walks them.
    pub fn parse(bytes: &'a [u8]) -> Result<EventLog<'a>> {
        let mut c = Cursor { bytes, at: 0 };
        let _pcr = c.u32("event log header")?;
        let event_type = c.u32("event log header")?;
        c.take(20, "event log header digest")?;
        let size = c.u32("event log header size")? as usize;
        if event_type != EV_NO_ACTION {
            return Err(malformed("event log: first event is not EV_NO_ACTION", 4));
        }
        let spec_at = c.at;
        let spec = c.take(size, "event log: Spec ID event")?;
        let mut s = Cursor { bytes: spec, at: 0 };
        if s.take(16, "Spec ID signature")? != SPEC_ID_SIGNATURE {
            return Err(malformed(
                "event log: not crypto-agile (no \"Spec ID Event03\")",
                spec_at,
            ));
        }
        s.take(4 + 4, "Spec ID event")?; // platformClass, version, errata, uintnSize
        let count = s.u32("Spec ID algorithm count")? as usize;
        if count == 0 || count > MAX_ALGS {
            return Err(malformed("event log: algorithm count", spec_at + s.at - 4));
        }
        let mut algs = Vec::with_capacity(count);
        for _ in 0..count {
            let alg = s.u16("Spec ID algorithm")?;
            let size = s.u16("Spec ID digest size")?;
            algs.push(AlgSize { alg, size });
        }
        let vendor = s.u8("Spec ID vendor info size")? as usize;
        s.take(vendor, "Spec ID vendor info")?;
        Ok(EventLog {
            algs,
            events: &bytes[c.at..],
            events_at: c.at,
        })
    }

    /// The algorithms (and digest sizes) the log declares.
    pub fn algorithms(&self) -> &[AlgSize] {
        &self.algs
    }

    /// The events in order; an item is an error where the log is malformed
    /// (and the walk stops there).
    pub fn events(&self) -> Events<'a, '_> {
        Events {
            log: self,
            cursor: Cursor {
                bytes: self.events,
                at: 0,
            },
            number: 1,
            failed: false,
        }
    }

    fn digest_size(&self, alg: u16) -> Option<usize> {
        self.algs
            .iter()
            .find(|a| a.alg == alg)
            .map(|a| a.size as usize)
    }
}

pub struct Events<'a, 'l> {
    log: &'l EventLog<'a>,
    cursor: Cursor<'a>,
    number: usize,
    failed: bool,
}

impl<'a> Events<'a, '_> {
    fn next_event(&mut self) -> Result<Event<'a>> {
        let base = self.log.events_at;
        let c = &mut self.cursor;
        let start = c.at;
        let pcr = c.u32("event PCR index").map_err(|e| rebase(e, base))?;
        if pcr as usize >= NUM_PCRS {
            return Err(malformed("event log: PCR index out of range", base + start));
        }
        let event_type = c.u32("event type").map_err(|e| rebase(e, base))?;
        let count = c.u32("event digest count").map_err(|e| rebase(e, base))? as usize;
        if count > MAX_ALGS {
            return Err(malformed("event log: digest count", base + start + 8));
        }
        let mut digests = Vec::with_capacity(count);
        for _ in 0..count {
            let alg_at = c.at;
            let alg = c
                .u16("event digest algorithm")
                .map_err(|e| rebase(e, base))?;
            let size = self.log.digest_size(alg).ok_or_else(|| {
                malformed(
                    "event log: digest of an undeclared algorithm",
                    base + alg_at,
                )
            })?;
            let digest = c.take(size, "event digest").map_err(|e| rebase(e, base))?;
            digests.push((alg, digest));
        }
        let size = c.u32("event data size").map_err(|e| rebase(e, base))? as usize;
        let data = c.take(size, "event data").map_err(|e| rebase(e, base))?;
        Ok(Event {
            number: self.number,
            at: base + start,
            pcr,
            event_type,
            digests,
            data,
        })
    }
}

/// A cursor error's offset made relative to the whole log.
fn rebase(e: Error, base: usize) -> Error {
    match *e.kind() {
        ErrorKind::Malformed { what, offset } => Error::new(ErrorKind::Malformed {
            what,
            offset: offset + base,
        }),
        _ => e,
    }
}

impl<'a> Iterator for Events<'a, '_> {
    type Item = Result<Event<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.cursor.at >= self.cursor.bytes.len() {
            return None;
        }
        let r = self.next_event();
        self.failed = r.is_err();
        self.number += 1;
        Some(r)
    }
}

/// The PCR values of one bank after replaying every event: `None` for a
/// PCR no event touched (its value is then the reset value, unknown here).
pub fn replay(log: &EventLog<'_>, bank: HashAlg) -> Result<[Option<Vec<u8>>; NUM_PCRS]> {
    let mut pcrs: [Option<Vec<u8>>; NUM_PCRS] = Default::default();
    for event in log.events() {
        let e = event?;
        let slot = &mut pcrs[e.pcr as usize];
        if e.event_type == EV_NO_ACTION {
            // StartupLocality sets PCR 0's starting value; others extend nothing.
            if e.pcr == 0 && e.data.len() >= 17 && &e.data[..16] == STARTUP_LOCALITY_SIGNATURE {
                // Only before anything touched PCR 0 (TCG PC Client spec:
                // it precedes the first PCR 0 measurement). A later one
                // would reset PCR 0's replay and let a forged log hide
                // every measurement before it.
                if slot.is_some() {
                    return Err(Error::new(ErrorKind::Malformed {
                        what: "event log: StartupLocality after PCR 0 was extended or set",
                        offset: e.at,
                    }));
                }
                let mut v = alloc::vec![0u8; bank.digest_len()];
                if let Some(last) = v.last_mut() {
                    *last = e.data[16];
                }
                *slot = Some(v);
            }
            continue;
        }
        let digest = e
            .digest(bank)
            .ok_or(Error::new(ErrorKind::PcrValueMissing {
                bank: bank.alg_id(),
                index: e.pcr as u8,
            }))?;
        let old = slot
            .take()
            .unwrap_or_else(|| alloc::vec![0u8; bank.digest_len()]);
        *slot = Some(bank.digest(&[&old, digest])?);
    }
    Ok(pcrs)
}

/// The name of an event type, for messages.
pub fn type_name(t: u32) -> &'static str {
    match t {
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_SEPARATOR => "EV_SEPARATOR",
        EV_EFI_ACTION => "EV_EFI_ACTION",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_IPL => "EV_IPL",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        _ => "event",
    }
}

/// One extend a policy expects: what it measures and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// What the prediction says this extend measures (".initrd").
    pub label: String,
    pub digest: Vec<u8>,
}

/// The first place where a log's events for one PCR disagree with the
/// expected extends: the PCR, bank, event number in the log, what it
/// measured, and both digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub pcr: u8,
    pub bank: HashAlg,
    /// The log's event number (the header event is 0), if the log has one there.
    pub event: Option<usize>,
    /// The expected extend's label, or what the extra logged event says it is.
    pub label: String,
    pub expected: Option<Vec<u8>>,
    pub measured: Option<Vec<u8>>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |f: &mut fmt::Formatter<'_>, d: &Option<Vec<u8>>| match d {
            Some(d) => d.iter().try_for_each(|b| write!(f, "{b:02x}")),
            None => f.write_str("nothing"),
        };
        write!(f, "PCR {} {} ", self.pcr, self.bank.name())?;
        match self.event {
            Some(n) => write!(f, "event {n}")?,
            None => f.write_str("after the last logged event")?,
        }
        write!(f, " ({}) differs: expected ", self.label)?;
        hex(f, &self.expected)?;
        f.write_str(", measured ")?;
        hex(f, &self.measured)
    }
}

/// Compares the digests `log` records for `pcr` in `bank` (in order;
/// EV_NO_ACTION extended nothing and is skipped) with `expected`. Event
/// types and data are never compared: only what the TPM extended counts.
pub fn compare(
    log: &EventLog<'_>,
    pcr: u8,
    bank: HashAlg,
    expected: &[Expected],
) -> Result<core::result::Result<(), Mismatch>> {
    let mut logged = Vec::new();
    for e in log.events() {
        let e = e?;
        if e.pcr == u32::from(pcr) && e.event_type != EV_NO_ACTION {
            let d = e
                .digest(bank)
                .ok_or(Error::new(ErrorKind::PcrValueMissing {
                    bank: bank.alg_id(),
                    index: pcr,
                }))?;
            logged.push((e.number, d.to_vec(), e.describe()));
        }
    }
    for i in 0..expected.len().max(logged.len()) {
        let want = expected.get(i);
        let got = logged.get(i);
        if want.map(|e| &e.digest) != got.map(|(_, d, _)| d) {
            let label = match (want, got) {
                (Some(w), _) => w.label.clone(),
                (None, Some((_, _, said))) => alloc::format!("not in the policy; logged as {said}"),
                (None, None) => String::new(),
            };
            return Ok(Err(Mismatch {
                pcr,
                bank,
                event: got.map(|(n, _, _)| *n),
                label,
                expected: want.map(|e| e.digest.clone()),
                measured: got.map(|(_, d, _)| d.clone()),
            }));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a real boot: OVMF (Debian's ovmf) + swtpm, booting a
    /// UKI made by `ember uki build` (systemd-stub 252, Debian's 6.1 kernel,
    /// a busybox initrd) from the ESP; read by the guest from
    /// /sys/kernel/security/tpm0/binary_bios_measurements.
    const OVMF_UKI_LOG: &[u8] = include_bytes!("testdata/ovmf-uki-eventlog.bin");

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    #[test]
    fn a_real_ovmf_log_parses_and_replays() {
        let log = EventLog::parse(OVMF_UKI_LOG).unwrap();
        assert_eq!(
            log.algorithms(),
            &[AlgSize {
                alg: 0x000b,
                size: 32
            }]
        );
        let events: Vec<Event<'_>> = log.events().collect::<Result<_>>().unwrap();
        assert_eq!(events.len(), 36);
        let boot_option = &events[13];
        assert_eq!(
            (boot_option.pcr, boot_option.event_type),
            (4, EV_EFI_ACTION)
        );
        assert_eq!(
            boot_option.data,
            b"Calling EFI Application from Boot Option"
        );
        // systemd-stub's PCR 11 events: name then data, 4 sections.
        let stub: Vec<_> = events.iter().filter(|e| e.pcr == 11).collect();
        assert_eq!(stub.len(), 8);
        assert!(stub.iter().all(|e| e.event_type == EV_IPL));

        let pcrs = replay(&log, HashAlg::Sha256).unwrap();
        // Values computed from the same bytes by an independent script (Python).
        assert_eq!(
            hex(pcrs[11].as_deref().unwrap()),
            "352e51d0178af3e4090ef36a9075ee9c5af678e009b83289d22215e908d962f8"
        );
        assert_eq!(
            hex(pcrs[4].as_deref().unwrap()),
            "4724c90d11ada3e995962c0fecf6f1ecf7f5ceec68b8777791e8356d3e046eac"
        );
        assert_eq!(
            hex(pcrs[7].as_deref().unwrap()),
            "65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068"
        );
        assert!(pcrs[8].is_none() && pcrs[10].is_none());
        // The log has no sha384 digests: replaying that bank is an error.
        assert!(replay(&log, HashAlg::Sha384).is_err());
    }

    #[test]
    fn truncated_and_forged_logs_are_errors_not_panics() {
        for cut in (0..OVMF_UKI_LOG.len()).step_by(7) {
            let bytes = &OVMF_UKI_LOG[..cut];
            if let Ok(log) = EventLog::parse(bytes) {
                // A cut inside an event surfaces as an error item, at most once.
                let errors = log.events().filter(|e| e.is_err()).count();
                assert!(errors <= 1, "cut {cut}");
            }
        }
        let mut bad = OVMF_UKI_LOG.to_vec();
        bad[32] ^= 1; // the "Spec ID Event03" signature
        assert!(EventLog::parse(&bad).is_err());
        // An event naming PCR 99.
        let log = EventLog::parse(OVMF_UKI_LOG).unwrap();
        let first_event = OVMF_UKI_LOG.len() - log.events.len();
        let mut bad = OVMF_UKI_LOG.to_vec();
        bad[first_event..first_event + 4].copy_from_slice(&99u32.to_le_bytes());
        let log = EventLog::parse(&bad).unwrap();
        let first = log.events().next();
        assert!(matches!(
            first.as_ref().map(|r| r.as_ref().map_err(Error::kind)),
            Some(Err(ErrorKind::Malformed { offset, .. })) if *offset == first_event
        ));
        // A digest count that would overrun the algorithm table.
        let mut bad = OVMF_UKI_LOG.to_vec();
        bad[first_event + 8..first_event + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(replay(&EventLog::parse(&bad).unwrap(), HashAlg::Sha256).is_err());
    }

    #[test]
    fn replay_uses_digests_not_event_types() {
        // Retyping an event (outside the digest) changes nothing, except
        // into EV_NO_ACTION, which the TPM never extended: then the replay
        // no longer matches the quoted PCR, as it should.
        let log = EventLog::parse(OVMF_UKI_LOG).unwrap();
        let genuine = replay(&log, HashAlg::Sha256).unwrap();
        let first_event = OVMF_UKI_LOG.len() - log.events.len();
        let mut retyped = OVMF_UKI_LOG.to_vec();
        retyped[first_event + 4..first_event + 8].copy_from_slice(&EV_SEPARATOR.to_le_bytes());
        let log = EventLog::parse(&retyped).unwrap();
        assert_eq!(replay(&log, HashAlg::Sha256).unwrap(), genuine);
    }

    /// One TCG_PCR_EVENT2 with a single SHA-256 digest.
    fn event2(pcr: u32, event_type: u32, digest: &[u8; 32], data: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&pcr.to_le_bytes());
        e.extend_from_slice(&event_type.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&0x000bu16.to_le_bytes());
        e.extend_from_slice(digest);
        e.extend_from_slice(&(data.len() as u32).to_le_bytes());
        e.extend_from_slice(data);
        e
    }

    #[test]
    fn startup_locality_counts_only_before_pcr_0_is_extended() {
        let log = EventLog::parse(OVMF_UKI_LOG).unwrap();
        let header = &OVMF_UKI_LOG[..OVMF_UKI_LOG.len() - log.events.len()];
        let mut locality = STARTUP_LOCALITY_SIGNATURE.to_vec();
        locality.push(3);
        let no_action = event2(0, EV_NO_ACTION, &[0; 32], &locality);
        let extend = event2(0, EV_SEPARATOR, &[7; 32], b"");

        // First: PCR 0 starts at the locality, then is extended.
        let first = [header, &no_action, &extend].concat();
        let pcrs = replay(&EventLog::parse(&first).unwrap(), HashAlg::Sha256).unwrap();
        let mut start = [0u8; 32];
        start[31] = 3;
        let want = HashAlg::Sha256.digest(&[&start, &[7; 32]]).unwrap();
        assert_eq!(pcrs[0].as_deref(), Some(&want[..]));

        // After an extend it would erase that extend from the replay: refused.
        let late = [header, &extend, &no_action].concat();
        let err = replay(&EventLog::parse(&late).unwrap(), HashAlg::Sha256).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Malformed { offset, .. } if *offset == header.len() + extend.len()),
            "{err:?}"
        );
        // Twice is refused too.
        let twice = [header, &no_action, &no_action].concat();
        assert!(replay(&EventLog::parse(&twice).unwrap(), HashAlg::Sha256).is_err());
    }
}
