//! Sealed data objects: a secret created under a parent with a policy,
//! and Unseal once a session satisfies it.

use crate::error::{Error, Result};
use crate::pcr::PcrSelection;
use crate::public::sealed_object_template;
use crate::session::{PolicySession, SessionKind};
use crate::transport::Transport;
use crate::ErrorKind;
use alloc::vec::Vec;
use tpm2_protocol::data::TpmCc;

use super::{Auth, SealedObject, Tpm};

impl<T: Transport> Tpm<T> {
    /// Seals `data` under `parent` so that only a session satisfying
    /// `policy` (e.g. [`crate::policy_pcr_digest`]) can unseal it.
    pub fn seal(&mut self, parent: u32, data: &[u8], policy: &[u8]) -> Result<SealedObject> {
        if data.is_empty() || data.len() > 128 {
            return Err(Error::new(ErrorKind::InvalidArgument {
                what: "sealed data must be 1..=128 bytes",
            }));
        }
        self.create(parent, &[], &sealed_object_template(policy), data)
    }

    /// TPM2_Unseal of a loaded object.
    pub fn unseal(&mut self, handle: u32, auth: Auth<'_>) -> Result<Vec<u8>> {
        let reply = self.execute(TpmCc::Unseal, &[handle], &[auth], 0, |_| Ok(()))?;
        let mut r = self.params(&reply);
        Ok(r.tpm2b("outData")?.to_vec())
    }

    /// Loads `sealed` under `parent`, satisfies its PolicyPCR with the
    /// current values of `selection` and unseals it. The TPM refuses with
    /// TPM_RC_POLICY_FAIL when the PCRs changed since sealing. Flushes the
    /// session and object either way.
    pub fn unseal_with_pcr_policy(
        &mut self,
        parent: u32,
        sealed: &SealedObject,
        selection: &PcrSelection,
    ) -> Result<Vec<u8>> {
        self.unseal_with_policy(parent, sealed, |tpm, s| tpm.policy_pcr(s, selection, &[]))
    }

    /// Loads `sealed` under `parent`, runs `policy` (the policy commands,
    /// in the order the sealed policy digest was built) in a fresh policy
    /// session and unseals. Flushes the session and object either way.
    pub fn unseal_with_policy(
        &mut self,
        parent: u32,
        sealed: &SealedObject,
        policy: impl FnOnce(&mut Self, &PolicySession) -> Result<()>,
    ) -> Result<Vec<u8>> {
        let obj = self.load(parent, &[], sealed)?;
        let session = match self.start_policy_session(SessionKind::Policy) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.flush_context(obj.handle);
                return Err(e);
            }
        };
        let result =
            policy(self, &session).and_then(|_| self.unseal(obj.handle, Auth::Policy(session)));
        let f1 = self.flush_context(session.handle);
        let f2 = self.flush_context(obj.handle);
        let data = result?;
        f1?;
        f2?;
        Ok(data)
    }
}
