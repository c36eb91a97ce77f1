//! Startup, GetCapability and GetRandom: bringing the TPM up and asking
//! what it is and has.

use crate::consts::*;
use crate::error::{Error, Result};
use crate::pcr::PcrSelection;
use crate::transport::Transport;
use crate::wire::Reader;
use crate::ErrorKind;
use alloc::vec::Vec;
use tpm2_protocol::data::{TpmCc, TpmRcBase};

use super::{AlgProperty, Capabilities, Tpm, TpmProperty};

impl<T: Transport> Tpm<T> {
    /// TPM2_Startup. TPM_RC_INITIALIZE (already started, e.g. by firmware)
    /// counts as success.
    pub fn startup(&mut self, clear: bool) -> Result<()> {
        let kind = if clear { SU_CLEAR } else { SU_STATE };
        match self.execute(TpmCc::Startup, &[], &[], 0, |w| {
            w.u16(kind);
            Ok(())
        }) {
            Ok(_) => Ok(()),
            Err(e) if e.is_tpm(TpmRcBase::Initialize) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One TPM2_GetCapability call: (moreData, capability data bytes after the
    /// capability selector).
    fn get_capability_raw(
        &mut self,
        cap: u32,
        property: u32,
        count: u32,
    ) -> Result<(bool, core::ops::Range<usize>)> {
        let reply = self.execute(TpmCc::GetCapability, &[], &[], 0, |w| {
            w.u32(cap);
            w.u32(property);
            w.u32(count);
            Ok(())
        })?;
        let mut r = self.params(&reply);
        let more = r.u8("moreData")? != 0;
        let got = r.u32("capability")?;
        if got != cap {
            return Err(Error::new(ErrorKind::Malformed {
                what: "capability differs from the one asked for",
                offset: 1,
            }));
        }
        Ok((more, reply.params.start + r.position()..reply.params.end))
    }

    /// TPM properties (TPM_CAP_TPM_PROPERTIES) from `first`, up to `count`.
    pub fn get_properties(&mut self, first: u32, count: u32) -> Result<Vec<TpmProperty>> {
        let mut out = Vec::new();
        let mut next = first;
        loop {
            let (more, range) = self.get_capability_raw(CAP_TPM_PROPERTIES, next, count)?;
            let mut r = Reader::new(self.response(range));
            let n = r.u32("property count")?;
            let mut last = None;
            for _ in 0..n {
                let p = TpmProperty {
                    property: r.u32("property")?,
                    value: r.u32("property value")?,
                };
                last = Some(p.property);
                if out.len() < count as usize {
                    out.push(p);
                }
            }
            r.finish("trailing capability data")?;
            match last {
                Some(l) if more && out.len() < count as usize && l >= next && l < u32::MAX => {
                    next = l + 1
                }
                _ => return Ok(out),
            }
        }
    }

    /// One TPM property's value, or `None` if the TPM does not report it.
    pub fn get_property(&mut self, property: u32) -> Result<Option<u32>> {
        Ok(self
            .get_properties(property, 1)?
            .into_iter()
            .find(|p| p.property == property)
            .map(|p| p.value))
    }

    /// The algorithms the TPM implements (TPM_CAP_ALGS).
    pub fn get_algorithms(&mut self) -> Result<Vec<AlgProperty>> {
        let (_, range) = self.get_capability_raw(CAP_ALGS, 0, 256)?;
        let mut r = Reader::new(self.response(range));
        let n = r.u32("algorithm count")?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(AlgProperty {
                alg: r.u16("algorithm")?,
                attributes: r.u32("algorithm attributes")?,
            });
        }
        r.finish("trailing capability data")?;
        Ok(out)
    }

    /// Handles in the range that starts at `range` (e.g. [`HR_TRANSIENT`],
    /// [`HR_PERSISTENT`], [`HR_NV_INDEX`]).
    pub fn get_handles(&mut self, range: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut next = range;
        loop {
            let (more, r) = self.get_capability_raw(CAP_HANDLES, next, 64)?;
            let mut r = Reader::new(self.response(r));
            let n = r.u32("handle count")?;
            let mut last = None;
            for _ in 0..n {
                let h = r.u32("handle")?;
                // The TPM continues into the next range; stop at its end.
                if h >> 24 == range >> 24 {
                    out.push(h);
                }
                last = Some(h);
            }
            r.finish("trailing capability data")?;
            match last {
                Some(l)
                    if more
                        && l >> 24 == range >> 24
                        && l >= next
                        && l < u32::MAX
                        && out.len() < 4096 =>
                {
                    next = l + 1
                }
                _ => return Ok(out),
            }
        }
    }

    /// The allocated PCR banks and which PCRs each has (TPM_CAP_PCRS).
    pub fn get_pcr_banks(&mut self) -> Result<PcrSelection> {
        let (_, range) = self.get_capability_raw(CAP_PCRS, 0, 16)?;
        let resp = self.response(range);
        // Banks the crate cannot name (SM3) are skipped, not fatal.
        let mut r = Reader::new(resp);
        let n = r.u32("PCR bank count")?;
        let mut out = PcrSelection::default();
        for _ in 0..n.min(16) {
            let alg = r.u16("PCR bank")?;
            let size = r.u8("sizeofSelect")? as usize;
            let bits = r.bytes(size, "pcrSelect")?;
            if let Ok(bank) = HashAlg::from_alg_id(alg) {
                let mut mask = 0u32;
                for (i, b) in bits.iter().take(3).enumerate() {
                    mask |= u32::from(*b) << (8 * i);
                }
                out.banks.push((bank, mask));
            }
        }
        Ok(out)
    }

    /// A summary for `ember tpm info`.
    pub fn capabilities(&mut self) -> Result<Capabilities> {
        let props = self.get_properties(PT_FIXED, 64)?;
        let get = |p: u32| {
            props
                .iter()
                .find(|x| x.property == p)
                .map(|x| x.value)
                .unwrap_or(0)
        };
        let mut vendor = alloc::string::String::new();
        for p in PT_VENDOR_STRING_1..PT_VENDOR_STRING_1 + 4 {
            for b in get(p).to_be_bytes() {
                if b.is_ascii_graphic() || b == b' ' {
                    vendor.push(b as char);
                }
            }
        }
        Ok(Capabilities {
            family: get(PT_FAMILY_INDICATOR),
            revision: get(PT_REVISION),
            manufacturer: get(PT_MANUFACTURER),
            vendor,
            firmware_version: (get(PT_FIRMWARE_VERSION_1), get(PT_FIRMWARE_VERSION_2)),
            max_command_size: get(PT_MAX_COMMAND_SIZE),
            max_response_size: get(PT_MAX_RESPONSE_SIZE),
            nv_buffer_max: get(PT_NV_BUFFER_MAX),
            pcr_banks: self.get_pcr_banks()?,
            algorithms: self.get_algorithms()?,
        })
    }

    /// `n` random bytes from the TPM's RNG (several GetRandom calls if needed).
    pub fn get_random(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let want = (n - out.len()).min(64) as u16;
            let reply = self.execute(TpmCc::GetRandom, &[], &[], 0, |w| {
                w.u16(want);
                Ok(())
            })?;
            let mut r = self.params(&reply);
            let got = r.tpm2b("randomBytes")?;
            if got.is_empty() || got.len() > want as usize {
                return Err(Error::new(ErrorKind::Malformed {
                    what: "GetRandom returned no or too many bytes",
                    offset: 0,
                }));
            }
            out.extend_from_slice(got);
        }
        Ok(out)
    }
}
