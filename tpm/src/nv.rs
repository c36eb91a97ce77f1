//! NV index definitions (TPMS_NV_PUBLIC) and their Names, computed
//! host-side: a policy that names an index (PolicyNV) binds to its Name,
//! which covers the index's attributes and authPolicy, so a look-alike
//! index defined by someone else has another Name.

use crate::consts::ALG_SHA256;
use crate::error::{Error, Result};
use crate::tpm::NvPublic;
use crate::wire::Writer;
use crate::ErrorKind;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// TPMA_NV bits (Part 2 §13.4).
pub mod attributes {
    pub const OWNERWRITE: u32 = 1 << 1;
    pub const AUTHWRITE: u32 = 1 << 2;
    pub const POLICYWRITE: u32 = 1 << 3;
    /// TPM_NT_COUNTER in the TPM_NT field (bits 4..7).
    pub const TYPE_COUNTER: u32 = 1 << 4;
    pub const TYPE_MASK: u32 = 0xF << 4;
    pub const POLICY_DELETE: u32 = 1 << 10;
    pub const WRITEDEFINE: u32 = 1 << 13;
    pub const WRITE_STCLEAR: u32 = 1 << 14;
    pub const OWNERREAD: u32 = 1 << 17;
    pub const AUTHREAD: u32 = 1 << 18;
    pub const POLICYREAD: u32 = 1 << 19;
    pub const NO_DA: u32 = 1 << 25;
    pub const ORDERLY: u32 = 1 << 26;
    /// Set by the TPM on the first write; part of the Name from then on.
    pub const WRITTEN: u32 = 1 << 29;
    pub const PLATFORMCREATE: u32 = 1 << 30;
}

impl NvPublic {
    /// A SHA-256-named definition (no Name yet: see [`NvPublic::compute_name`]).
    pub fn define(index: u32, attributes: u32, auth_policy: &[u8], data_size: u16) -> Self {
        NvPublic {
            index,
            name_alg: ALG_SHA256,
            attributes,
            auth_policy: auth_policy.to_vec(),
            data_size,
            name: Vec::new(),
        }
    }

    /// TPMS_NV_PUBLIC as the TPM marshals it (without the TPM2B size).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(14 + self.auth_policy.len());
        let mut w = Writer::unbounded(&mut out);
        self.write(&mut w)?;
        w.finish()?;
        Ok(out)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u32(self.index);
        w.u16(self.name_alg);
        w.u32(self.attributes);
        w.tpm2b(&self.auth_policy)?;
        w.u16(self.data_size);
        Ok(())
    }

    /// The index's Name: nameAlg || SHA-256(TPMS_NV_PUBLIC). It changes
    /// when the TPM sets TPMA_NV_WRITTEN. Only SHA-256 names: a hash chosen
    /// at run time would link SHA-384/512 into PID 1 (~25 KB).
    pub fn compute_name(&self) -> Result<Vec<u8>> {
        if self.name_alg != ALG_SHA256 {
            return Err(Error::new(ErrorKind::Unsupported {
                what: "NV index name algorithm",
                value: u32::from(self.name_alg),
            }));
        }
        let digest = Sha256::digest(self.to_bytes()?);
        let mut name = Vec::with_capacity(2 + digest.len());
        name.extend_from_slice(&self.name_alg.to_be_bytes());
        name.extend_from_slice(&digest);
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::HashAlg;
    use crate::test_hex::unhex as hex;

    // TPMS_NV_PUBLIC field by field (Part 2 §13.5).
    #[test]
    fn nv_public_marshals_as_tpms_nv_public() {
        let p = NvPublic::define(
            0x0180_0e70,
            attributes::TYPE_COUNTER
                | attributes::POLICYWRITE
                | attributes::AUTHREAD
                | attributes::NO_DA,
            &[0xAA; 32],
            8,
        );
        let bytes = p.to_bytes().unwrap();
        let mut want =
            alloc::vec![0x01, 0x80, 0x0e, 0x70, 0x00, 0x0b, 0x02, 0x04, 0x00, 0x18, 0x00, 0x20];
        want.extend_from_slice(&[0xAA; 32]);
        want.extend_from_slice(&[0x00, 0x08]);
        assert_eq!(bytes, want);
        let name = p.compute_name().unwrap();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(&name[2..], &HashAlg::Sha256.digest(&[&want]).unwrap()[..]);
    }

    // tpm2_nvreadpublic's Names for that definition with the authPolicy
    // PolicyCommandCode(NV_Increment) then PolicyPCR(sha256:15 at zero),
    // before and after the first NV_Increment (TPMA_NV_WRITTEN).
    #[test]
    fn name_matches_tpm2_nvreadpublic_before_and_after_the_first_write() {
        let policy = hex("7754fcac28ec620e9435d8c1ead02e58903b9b053e322d668aae8bbe02289c60");
        let attrs = attributes::TYPE_COUNTER
            | attributes::POLICYWRITE
            | attributes::AUTHREAD
            | attributes::NO_DA;
        let p = NvPublic::define(0x0180_0e70, attrs, &policy, 8);
        assert_eq!(
            p.compute_name().unwrap(),
            hex("000b8b8f8fa6f26f6c68dd7d7a4e4c03667162e06e59a4ab013b1ca51836155ac069")
        );
        let written = NvPublic::define(0x0180_0e70, attrs | attributes::WRITTEN, &policy, 8);
        assert_eq!(
            written.compute_name().unwrap(),
            hex("000ba9f493fd4864aaf797d2e270d88683245c967a3ab240fbec9d62773f388fba21")
        );
    }
}
