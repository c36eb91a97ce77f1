//! Policy sessions and the policy digests they accumulate.

use crate::consts::HashAlg;
use crate::error::Result;
use crate::pcr::PcrSelection;
use alloc::vec::Vec;

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

const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;

/// The policy digest of a fresh SHA-256 session after one PolicyPCR with
/// `selection` whose composite PCR digest is `pcr_digest`
/// (Part 3 §23.7: H(0…0 || TPM_CC_PolicyPCR || pcrs || pcrDigest)).
pub fn policy_pcr_digest(selection: &PcrSelection, pcr_digest: &[u8]) -> Result<Vec<u8>> {
    let zero = [0u8; 32];
    HashAlg::Sha256.digest(&[
        &zero,
        &TPM_CC_POLICY_PCR.to_be_bytes(),
        &selection.to_bytes(),
        pcr_digest,
    ])
}
