//! NV indices: their public areas, definition and removal, counters and
//! reads (the EK certificates the manufacturer stored).

use crate::consts::*;
use crate::error::{Error, Result};
use crate::public::EkTemplate;
use crate::transport::Transport;
use crate::wire::Reader;
use crate::ErrorKind;
use alloc::vec::Vec;
use tpm2_protocol::data::TpmCc;

use super::{Auth, NvPublic, Tpm};

/// EK certificates are a few KiB; refuse NV indices claiming more.
const MAX_NV_CERT: usize = 16 * 1024;

impl<T: Transport> Tpm<T> {
    /// TPM2_NV_ReadPublic.
    pub fn nv_read_public(&mut self, index: u32) -> Result<NvPublic> {
        let reply = self.execute(TpmCc::NvReadPublic, &[index], &[], 0, |_| Ok(()))?;
        let mut r = self.params(&reply);
        let mut p = Reader::new(r.tpm2b("nvPublic")?);
        let nv = NvPublic {
            index: p.u32("nvIndex")?,
            name_alg: p.u16("nameAlg")?,
            attributes: p.u32("attributes")?,
            auth_policy: p.tpm2b("authPolicy")?.to_vec(),
            data_size: p.u16("dataSize")?,
            name: r.tpm2b("nvName")?.to_vec(),
        };
        p.finish("trailing TPMS_NV_PUBLIC bytes")?;
        Ok(nv)
    }

    /// TPM2_NV_DefineSpace in the owner hierarchy (`owner_auth` is its
    /// authValue, empty on most machines) with `auth_value` for the index.
    pub fn nv_define_space(
        &mut self,
        owner_auth: &[u8],
        auth_value: &[u8],
        public: &NvPublic,
    ) -> Result<()> {
        self.execute(
            TpmCc::NvDefineSpace,
            &[RH_OWNER],
            &[Auth::Password(owner_auth)],
            0,
            |w| {
                w.tpm2b(auth_value)?;
                let at = w.begin_size16();
                public.write(w)?;
                w.end_size16(at)
            },
        )?;
        Ok(())
    }

    /// TPM2_NV_UndefineSpace of an owner index (not one with POLICY_DELETE).
    pub fn nv_undefine_space(&mut self, owner_auth: &[u8], index: u32) -> Result<()> {
        self.execute(
            TpmCc::NvUndefineSpace,
            &[RH_OWNER, index],
            &[Auth::Password(owner_auth)],
            0,
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// TPM2_NV_Increment of a counter index, authorized by `auth` (a policy
    /// session for a POLICYWRITE index).
    pub fn nv_increment(&mut self, index: u32, auth: Auth<'_>) -> Result<()> {
        self.execute(TpmCc::NvIncrement, &[index, index], &[auth], 0, |_| Ok(()))?;
        Ok(())
    }

    /// A counter index's value (8 bytes, big-endian), read with its own
    /// empty authValue (TPMA_NV_AUTHREAD).
    pub fn nv_read_counter(&mut self, index: u32) -> Result<u64> {
        // One NV_Read of 8 bytes: below any TPM's NV buffer, so without
        // the chunking (and capability query) of [`Tpm::nv_read`].
        let reply = self.execute(
            TpmCc::NvRead,
            &[index, index],
            &[Auth::Password(&[])],
            0,
            |w| {
                w.u16(8);
                w.u16(0);
                Ok(())
            },
        )?;
        let mut r = self.params(&reply);
        let mut data = Reader::new(r.tpm2b("NV data")?);
        let v = data.u64("counter")?;
        data.finish("counter longer than 8 bytes")?;
        Ok(v)
    }

    fn nv_buffer_max(&mut self) -> Result<u16> {
        if let Some(m) = self.nv_buffer_max {
            return Ok(m);
        }
        // 512 is a conservative default for TPMs that omit the property.
        let m = self
            .get_property(PT_NV_BUFFER_MAX)?
            .unwrap_or(512)
            .clamp(64, 2048) as u16;
        self.nv_buffer_max = Some(m);
        Ok(m)
    }

    /// Reads `size` bytes of NV index `index`, authorizing with the index's
    /// own (empty) authValue, in chunks of TPM_PT_NV_BUFFER_MAX.
    pub fn nv_read(&mut self, index: u32, size: usize) -> Result<Vec<u8>> {
        let chunk = self.nv_buffer_max()? as usize;
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let want = (size - out.len()).min(chunk) as u16;
            let offset = u16::try_from(out.len()).map_err(|_| {
                Error::new(ErrorKind::InvalidArgument {
                    what: "NV offset above 65535",
                })
            })?;
            let reply = self.execute(
                TpmCc::NvRead,
                &[index, index],
                &[Auth::Password(&[])],
                0,
                |w| {
                    w.u16(want);
                    w.u16(offset);
                    Ok(())
                },
            )?;
            let mut r = self.params(&reply);
            let data = r.tpm2b("NV data")?;
            if data.len() != want as usize {
                return Err(Error::new(ErrorKind::Malformed {
                    what: "NV_Read returned a different size",
                    offset: 0,
                }));
            }
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    /// The DER EK certificate at `index` (whole NV index, trailing padding
    /// some manufacturers add is left to the certificate parser).
    pub fn nv_read_certificate(&mut self, index: u32) -> Result<Vec<u8>> {
        let public = self.nv_read_public(index)?;
        let size = public.data_size as usize;
        if size == 0 || size > MAX_NV_CERT {
            return Err(Error::new(ErrorKind::NvSize { index, size }));
        }
        self.nv_read(index, size)
    }

    /// The manufacturer's certificate for the EK created from `template`.
    pub fn nv_read_ek_certificate(&mut self, template: EkTemplate) -> Result<Vec<u8>> {
        self.nv_read_certificate(template.certificate_nv_index())
    }
}
