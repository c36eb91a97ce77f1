//! Policy sessions: started unbound and unsalted, then narrowed by
//! PolicySecret, PolicyPCR, PolicyNV and PolicyCommandCode.

use crate::consts::*;
use crate::error::Result;
use crate::pcr::PcrSelection;
use crate::session::{NvCompare, PolicySession, SessionKind};
use crate::transport::Transport;
use alloc::vec::Vec;
use tpm2_protocol::data::TpmCc;

use super::{Auth, Tpm};

impl<T: Transport> Tpm<T> {
    /// TPM2_StartAuthSession: an unbound, unsalted SHA-256 policy (or trial)
    /// session. Flush it when done.
    pub fn start_policy_session(&mut self, kind: SessionKind) -> Result<PolicySession> {
        let nonce = self.get_random(16)?;
        let ty = match kind {
            SessionKind::Policy => SE_POLICY,
            SessionKind::Trial => SE_TRIAL,
        };
        let reply = self.execute(TpmCc::StartAuthSession, &[RH_NULL, RH_NULL], &[], 1, |w| {
            w.tpm2b(&nonce)?;
            w.u16(0); // no salt
            w.u8(ty);
            w.u16(ALG_NULL); // no parameter encryption
            w.u16(ALG_SHA256);
            Ok(())
        })?;
        let handle = reply.handle;
        let mut r = self.params(&reply);
        r.tpm2b("nonceTPM")?;
        Ok(PolicySession { handle, kind })
    }

    /// TPM2_PolicySecret: proves knowledge of `auth_handle`'s authValue
    /// (`auth`) to `session`; with TPM_RH_ENDORSEMENT this satisfies the
    /// low-range EK policy.
    pub fn policy_secret(
        &mut self,
        session: &PolicySession,
        auth_handle: u32,
        auth: &[u8],
    ) -> Result<()> {
        self.execute(
            TpmCc::PolicySecret,
            &[auth_handle, session.handle],
            &[Auth::Password(auth)],
            0,
            |w| {
                w.u16(0); // nonceTPM
                w.u16(0); // cpHashA
                w.u16(0); // policyRef
                w.u32(0); // expiration
                Ok(())
            },
        )?;
        Ok(())
    }

    /// TPM2_PolicyPCR: binds `session` to the selected PCRs. An empty
    /// `pcr_digest` means "their current values"; the later command fails
    /// with TPM_RC_POLICY_FAIL when those differ from the sealed policy.
    pub fn policy_pcr(
        &mut self,
        session: &PolicySession,
        selection: &PcrSelection,
        pcr_digest: &[u8],
    ) -> Result<()> {
        self.execute(TpmCc::PolicyPcr, &[session.handle], &[], 0, |w| {
            w.tpm2b(pcr_digest)?;
            selection.write(w);
            Ok(())
        })?;
        Ok(())
    }

    /// TPM2_PolicyGetDigest.
    pub fn policy_get_digest(&mut self, session: &PolicySession) -> Result<Vec<u8>> {
        let reply = self.execute(
            TpmCc::PolicyGetDigest,
            &[session.handle],
            &[],
            0,
            |_| Ok(()),
        )?;
        let mut r = self.params(&reply);
        Ok(r.tpm2b("policyDigest")?.to_vec())
    }

    /// TPM2_PolicyNV: the session's later command succeeds only if NV
    /// index `index` (read with its empty authValue) compares to
    /// `operand_b` as `op` says. A failed comparison is TPM_RC_POLICY.
    pub fn policy_nv(
        &mut self,
        session: &PolicySession,
        index: u32,
        operand_b: &[u8],
        offset: u16,
        op: NvCompare,
    ) -> Result<()> {
        self.execute(
            TpmCc::PolicyNv,
            &[index, index, session.handle],
            &[Auth::Password(&[])],
            0,
            |w| {
                w.tpm2b(operand_b)?;
                w.u16(offset);
                w.u16(op as u16);
                Ok(())
            },
        )?;
        Ok(())
    }

    /// TPM2_PolicyCommandCode: the session authorizes only `code`.
    pub fn policy_command_code(&mut self, session: &PolicySession, code: u32) -> Result<()> {
        self.execute(TpmCc::PolicyCommandCode, &[session.handle], &[], 0, |w| {
            w.u32(code);
            Ok(())
        })?;
        Ok(())
    }
}
