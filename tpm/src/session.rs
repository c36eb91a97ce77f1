//! Policy sessions and the policy digests they accumulate, computed
//! host-side exactly as a SHA-256 session extends them (Part 3 §23), so a
//! key can be sealed to a policy without a trial session.

use crate::error::Result;
use crate::pcr::PcrSelection;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// Whether a session enforces its policy or only computes the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Policy,
    Trial,
}

/// A started policy session (unbound, unsalted, SHA-256). Its handle must be
/// flushed ([`crate::Tpm::flush_context`]) unless a command consumed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySession {
    pub handle: u32,
    pub kind: SessionKind,
}

pub(crate) const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
pub(crate) const TPM_CC_POLICY_NV: u32 = 0x0000_0149;
pub(crate) const TPM_CC_POLICY_COMMAND_CODE: u32 = 0x0000_016C;

/// TPM_EO: how PolicyNV compares the NV index's bytes (operand A) with
/// the caller's operand B, both as big-endian numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum NvCompare {
    Eq = 0x0000,
    UnsignedGt = 0x0003,
    UnsignedLt = 0x0005,
    UnsignedGe = 0x0007,
    /// A ≤ B: "the counter has not moved past B".
    UnsignedLe = 0x0009,
}

/// A SHA-256 policy digest built step by step, as the TPM builds
/// policyDigest in a session that runs the same commands in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDigest([u8; 32]);

impl Default for PolicyDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyDigest {
    /// A fresh session's digest: 32 zero bytes.
    pub fn new() -> Self {
        PolicyDigest([0; 32])
    }

    // SHA-256 named directly, not through [`HashAlg::digest`]: a hash
    // chosen at run time would link SHA-384/512 into PID 1.
    fn extend(self, parts: &[&[u8]]) -> Result<Self> {
        let mut h = Sha256::new().chain_update(self.0);
        for p in parts {
            h.update(p);
        }
        Ok(PolicyDigest(h.finalize().into()))
    }

    /// PolicyPCR (§23.7): H(old || TPM_CC_PolicyPCR || pcrs || pcrDigest).
    pub fn pcr(self, selection: &PcrSelection, pcr_digest: &[u8]) -> Result<Self> {
        self.extend(&[
            &TPM_CC_POLICY_PCR.to_be_bytes(),
            &selection.to_bytes(),
            pcr_digest,
        ])
    }

    /// PolicyCommandCode (§23.11): H(old || TPM_CC_PolicyCommandCode || code).
    pub fn command_code(self, code: u32) -> Result<Self> {
        self.extend(&[
            &TPM_CC_POLICY_COMMAND_CODE.to_be_bytes(),
            &code.to_be_bytes(),
        ])
    }

    /// PolicyNV (§23.9): H(old || TPM_CC_PolicyNV || args || nvIndex.Name)
    /// with args = H(operandB || offset || operation).
    pub fn nv(self, nv_name: &[u8], operand_b: &[u8], offset: u16, op: NvCompare) -> Result<Self> {
        let args = Sha256::new()
            .chain_update(operand_b)
            .chain_update(offset.to_be_bytes())
            .chain_update((op as u16).to_be_bytes())
            .finalize();
        self.extend(&[&TPM_CC_POLICY_NV.to_be_bytes(), &args, nv_name])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The policy digest of a fresh SHA-256 session after one PolicyPCR with
/// `selection` whose composite PCR digest is `pcr_digest`
/// (Part 3 §23.7: H(0…0 || TPM_CC_PolicyPCR || pcrs || pcrDigest)).
pub fn policy_pcr_digest(selection: &PcrSelection, pcr_digest: &[u8]) -> Result<Vec<u8>> {
    Ok(PolicyDigest::new()
        .pcr(selection, pcr_digest)?
        .as_bytes()
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{HashAlg, CC_NV_INCREMENT};
    use crate::test_hex::unhex as hex;

    // Golden digests from tpm2-tools 5.4 on swtpm (trial sessions):
    // tpm2_policycommandcode TPM2_CC_NV_Increment; tpm2_policypcr -l sha256:15
    // (PCR 15 at zero); tpm2_policynv -i <5 as 8 bytes> 0x01800e70 ule.
    #[test]
    fn command_code_then_pcr_matches_tpm2_tools() {
        let cc = PolicyDigest::new().command_code(CC_NV_INCREMENT).unwrap();
        assert_eq!(
            cc.as_bytes(),
            &hex("e8c02d3c5e701670cbaa327db1a2e9f3f41b2c22793e5c669a6e7f44b912f6c0")[..]
        );
        let sel = PcrSelection::new(HashAlg::Sha256, &[15]).unwrap();
        let pcr15 = HashAlg::Sha256.digest(&[&[0u8; 32]]).unwrap();
        assert_eq!(
            cc.pcr(&sel, &pcr15).unwrap().as_bytes(),
            &hex("7754fcac28ec620e9435d8c1ead02e58903b9b053e322d668aae8bbe02289c60")[..]
        );
    }

    #[test]
    fn policy_nv_matches_tpm2_tools() {
        // The Name of 0x01800e70 (counter, the policy above) once written.
        let name = hex("000ba9f493fd4864aaf797d2e270d88683245c967a3ab240fbec9d62773f388fba21");
        let d = PolicyDigest::new()
            .nv(&name, &5u64.to_be_bytes(), 0, NvCompare::UnsignedLe)
            .unwrap();
        assert_eq!(
            d.as_bytes(),
            &hex("eb0e55b6e2ce3f14ab9ce314cba9d6ac29df1bdac672f059bf44e7ddc6df32bc")[..]
        );
        // Every input is in the digest: operand, offset, operation, Name.
        let other = [
            PolicyDigest::new().nv(&name, &6u64.to_be_bytes(), 0, NvCompare::UnsignedLe),
            PolicyDigest::new().nv(&name, &5u64.to_be_bytes(), 1, NvCompare::UnsignedLe),
            PolicyDigest::new().nv(&name, &5u64.to_be_bytes(), 0, NvCompare::UnsignedGe),
            PolicyDigest::new().nv(&name[..33], &5u64.to_be_bytes(), 0, NvCompare::UnsignedLe),
        ];
        for o in other {
            assert_ne!(o.unwrap(), d);
        }
    }

    #[test]
    fn policy_pcr_digest_is_the_first_step_of_a_policy() {
        let sel = PcrSelection::new(HashAlg::Sha256, &[11]).unwrap();
        let pcr = [7u8; 32];
        assert_eq!(
            policy_pcr_digest(&sel, &pcr).unwrap(),
            PolicyDigest::new().pcr(&sel, &pcr).unwrap().as_bytes()
        );
    }
}
