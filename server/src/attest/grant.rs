//! What Finish hands a node besides its credential: the UKI it booted
//! (identified from its quote, for last-known-good and rollback floors)
//! and its overlay grant (the stored signed manifest, the data key
//! wrapped for this session, and the signed boot image record).

use std::sync::Arc;

use ember_proto::keys;
use ember_proto::manifest::{BootImage, SignedManifest, BOOT_IMAGE_FORMAT};
use ember_proto::msg::{ErrorCode, FinishRequest, OverlayGrant, ALG_SHA256};

use super::{Refusal, Server, Session};
use crate::store::{hex, overlays::Assigned};
use crate::uki::measure::{PCR_BOOT_LOADER_CODE, PCR_KERNEL_IMAGE};
use crate::uki::{Found, Uki};
use ember_tpm::eventlog::{self, EventLog};
use ember_tpm::HashAlg;

/// The value this session quoted for `pcr` (the quote verified before).
fn quoted<'a>(s: &Session, req: &'a FinishRequest, pcr: u8) -> Option<&'a [u8]> {
    s.pcrs
        .indices()
        .zip(&req.pcr_values)
        .find(|(i, _)| *i == pcr)
        .map(|(_, v)| v.as_slice())
}

/// The PCR 11 this session quoted, which names the UKI booted; why none
/// otherwise.
fn quoted_pcr11<'a>(s: &Session, req: &'a FinishRequest) -> Result<&'a [u8], &'static str> {
    if s.pcrs.hash_alg != ALG_SHA256 {
        return Err("the quote is not in the sha256 bank");
    }
    quoted(s, req, PCR_KERNEL_IMAGE).ok_or(
        "its policy does not quote PCR 11, which names the UKI booted (`ember policy set --uki`)",
    )
}

/// The digests the firmware extended PCR 4 with, from the node's event
/// log, only when that log replays to the PCR 4 the quote signed: an
/// unquoted PCR 4, or a log that does not replay to it, is the node's word
/// and names no UKI. Why none otherwise (for the log).
fn quoted_pcr4_extends(s: &Session, req: &FinishRequest) -> Result<Vec<Vec<u8>>, &'static str> {
    if req.event_log.is_empty() {
        return Err("no event log");
    }
    let pcr4 = quoted(s, req, PCR_BOOT_LOADER_CODE).ok_or("PCR 4 is not quoted")?;
    let log = EventLog::parse(&req.event_log).map_err(|_| "the event log is malformed")?;
    let replayed =
        eventlog::replay(&log, HashAlg::Sha256).map_err(|_| "the event log is malformed")?;
    match &replayed[usize::from(PCR_BOOT_LOADER_CODE)] {
        Some(v) if keys::ct_eq(v, pcr4) => Ok(crate::uki::pcr4_extends(&log)),
        _ => Err("the event log does not replay to the quoted PCR 4"),
    }
}

impl Server {
    /// The assigned overlay for this session: its stored signed manifest
    /// and its data key wrapped under a key only this session's secret
    /// derives. Nothing is sealed here.
    pub(super) fn grant(
        &self,
        s: &Session,
        o: Assigned,
        booted: Option<&Uki>,
    ) -> Result<OverlayGrant, Refusal> {
        let (Some(manifest), Some(data_key)) = (o.manifest, o.data_key) else {
            return Err(Refusal::new(
                ErrorCode::Internal,
                format!(
                    "overlay {} predates sealed blobs: add it again with `ember overlay add` and assign it",
                    o.version_id
                ),
            )
            .because("overlay-unavailable"));
        };
        let manifest = SignedManifest::from_bytes(&manifest).map_err(|e| {
            Refusal::new(
                ErrorCode::Internal,
                format!("stored manifest of overlay {}: {e}", o.version_id),
            )
        })?;
        let wrapped_key = keys::wrap_data_key(&s.secret, &s.id, &manifest.body, &data_key).to_vec();
        // Without the ESP's loader no slot PCR 4 is known: no record.
        let boot_image = booted.filter(|u| !u.pcr4_from_esp.is_empty()).map(|u| {
            self.signing_key.sign_boot_image(&BootImage {
                format: BOOT_IMAGE_FORMAT,
                manifest_sha256: manifest.body_sha256(),
                sha256: u.sha256,
                size: u.size,
                pcr11: u.pcr11,
                pcr4: u.pcr4_from_esp.clone(),
                ek: s.ek_hash,
            })
        });
        Ok(OverlayGrant {
            manifest,
            wrapped_key,
            http_port: self.http_port.get().copied(),
            boot_image,
        })
    }

    /// The UKI this node booted, among the boot artifacts: the one whose
    /// PCR 11 it quoted (and, with an event log, which the firmware
    /// measured into PCR 4). `None`, logged, when the server knows none:
    /// the node then writes no last-known-good slot.
    pub(super) fn booted_uki(&self, s: &Session, req: &FinishRequest) -> Option<Arc<Uki>> {
        let said = |why: String| {
            tracing::info!(
                "step=finish node={} boot-image=none: {why}; the node writes no last-known-good slot",
                s.who.name()
            );
            None
        };
        let pcr11 = match quoted_pcr11(s, req) {
            Ok(v) => v,
            Err(why) => return said(why.into()),
        };
        // Only measurements the quote vouches for narrow the choice.
        let extends = quoted_pcr4_extends(s, req);
        match self
            .ukis
            .find(&self.state.boot_dir(), pcr11, extends.as_deref().ok())
        {
            Ok(Found::One(u)) => {
                tracing::info!(
                    "step=finish node={} boot-image={} (PCR 11 {}){}",
                    s.who.name(),
                    hex(&u.sha256),
                    hex(pcr11),
                    if u.pcr4_from_esp.is_empty() {
                        "; no --esp-loader, so no boot image record: the node writes no last-known-good slot"
                    } else {
                        ""
                    }
                );
                Some(u)
            }
            Ok(Found::None) => said(format!(
                "PCR 11 {} is no UKI's among the boot artifacts (`ember policy set --uki` and `ember artifact ipxe --uki` store them)",
                hex(pcr11)
            )),
            Ok(Found::Ambiguous(shas)) => said(format!(
                "PCR 11 {} is that of {} stored UKIs ({}), which differ only outside it (the stub), and PCR 4 cannot tell them apart ({}): none is assumed; quote PCR 4 (`ember policy set --pcrs 4 --uki`) or keep one of them",
                hex(pcr11),
                shas.len(),
                shas.iter()
                    .map(|s| crate::rollback::short(s))
                    .collect::<Vec<_>>()
                    .join(", "),
                extends.err().unwrap_or("its extends name several")
            )),
            Err(e) => said(format!("reading the boot artifacts: {e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Who;
    use crate::store::Node;
    use ember_proto::msg::PcrSelection;

    fn session(hash_alg: u16, mask: u32) -> Session {
        Session {
            id: [0; 16],
            who: Who::Enrolled(Node {
                id: 1,
                name: "n".into(),
                group: "g".into(),
            }),
            ek_hash: [0; 32],
            secret: [0; 32],
            nonce: [0; 32],
            ak_public: vec![],
            transcript: [0; 32],
            pcrs: PcrSelection { hash_alg, mask },
        }
    }

    fn finish(pcr_values: Vec<Vec<u8>>) -> FinishRequest {
        FinishRequest {
            version: ember_proto::msg::PROTOCOL_VERSION,
            session: [0; 16],
            attest: vec![],
            signature: vec![],
            pcr_values,
            proof: [0; 32],
            event_log: vec![],
        }
    }

    #[test]
    fn the_booted_uki_is_named_by_the_quoted_pcr_11_of_the_sha256_bank() {
        // PCRs 0, 4 and 11 quoted: the third value is PCR 11's.
        let req = finish(vec![vec![0], vec![4], vec![11]]);
        let s = session(ALG_SHA256, 1 | 1 << 4 | 1 << 11);
        assert_eq!(quoted_pcr11(&s, &req), Ok(&[11u8][..]));
        let without = session(ALG_SHA256, 1 | 1 << 4);
        assert!(quoted_pcr11(&without, &req).unwrap_err().contains("PCR 11"));
        let sha1 = session(4, 1 << 11);
        assert_eq!(
            quoted_pcr11(&sha1, &req),
            Err("the quote is not in the sha256 bank")
        );
    }

    /// OVMF + swtpm booting a UKI, captured from the guest (the tpm
    /// crate's test data).
    const LOG: &[u8] = include_bytes!("../../../tpm/src/testdata/ovmf-uki-eventlog.bin");

    #[test]
    fn pcr_4_extends_name_the_uki_only_when_the_log_replays_to_the_quoted_pcr_4() {
        let log = EventLog::parse(LOG).unwrap();
        let pcrs = eventlog::replay(&log, HashAlg::Sha256).unwrap();
        let pcr4 = pcrs[4].clone().unwrap();
        let pcr11 = pcrs[11].clone().unwrap();
        let s = session(ALG_SHA256, 1 << 4 | 1 << 11);
        let mut req = finish(vec![pcr4.clone(), pcr11.clone()]);
        req.event_log = LOG.to_vec();
        let extends = quoted_pcr4_extends(&s, &req).unwrap();
        assert_eq!(extends, crate::uki::pcr4_extends(&log));
        assert!(!extends.is_empty());
        // PCR 4 not in the quote: the log is the node's word.
        let unquoted = session(ALG_SHA256, 1 << 11);
        let mut only11 = finish(vec![pcr11.clone()]);
        only11.event_log = LOG.to_vec();
        assert_eq!(
            quoted_pcr4_extends(&unquoted, &only11),
            Err("PCR 4 is not quoted")
        );
        // A quoted PCR 4 the log does not replay to (an edited log).
        let mut other = finish(vec![vec![0x44; 32], pcr11]);
        other.event_log = LOG.to_vec();
        assert_eq!(
            quoted_pcr4_extends(&s, &other),
            Err("the event log does not replay to the quoted PCR 4")
        );
        assert_eq!(
            quoted_pcr4_extends(&s, &finish(vec![pcr4, vec![0; 32]])),
            Err("no event log")
        );
    }
}
