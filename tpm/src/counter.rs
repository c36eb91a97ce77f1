//! Ember's rollback counter: one monotonic TPM NV counter at a fixed index
//! that holds the last-known-good floor, and the policy terms built on it.
//! The definition lives here, once, so the node (which defines, reads and
//! increments it) and the tests (which check it against tpm2-tools and
//! attack it) use the same bytes.
//!
//! * Only a boot phase can increment it: its authPolicy is
//!   PolicyCommandCode(NV_Increment) ∧ PolicyPCR(sha256:15 = zero). PCR 15
//!   is zero after a TPM reset and the init extends it at "leave initrd",
//!   so nothing running after that (the runtime, anything it starts) can
//!   satisfy the policy until the next reboot.
//! * A sealed key made [`not_past`] `n` unseals only while the counter is
//!   at most `n`: once the counter moves on, the TPM itself refuses it.
//! * A counter only goes up, one step per NV_Increment. Deleting the index
//!   (the owner can) and defining it again does not lower it: a TPM starts
//!   a re-defined counter at the highest count any counter reached. An
//!   index with other attributes or another authPolicy has another Name, so
//!   no policy made with [`not_past`] is satisfied through it.

use crate::consts::{HashAlg, ALG_SHA256, CC_NV_INCREMENT};
use crate::error::{Error, Result};
use crate::nv::attributes as a;
use crate::pcr::PcrSelection;
use crate::session::{NvCompare, PolicyDigest, PolicySession, SessionKind};
use crate::tpm::{Auth, NvPublic, SealedObject, Tpm};
use crate::transport::Transport;
use crate::ErrorKind;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// The index, in the owner range (0x01800000–0x01BFFFFF).
pub const INDEX: u32 = 0x0180_0e70;

/// The PCR the init extends when it leaves the initrd; zero before that.
pub const BOOT_PHASE_PCR: u8 = 15;

/// Why each attribute:
/// * `TYPE_COUNTER`: the TPM allows only +1 steps, never a lower value.
/// * `POLICYWRITE` (no AUTHWRITE/OWNERWRITE): NV_Increment needs the
///   boot-phase policy; the index's authValue or the owner's do not do.
/// * `AUTHREAD` with an empty authValue: anyone may read the floor (it is
///   not a secret), and PolicyNV authorizes its read of the index this way.
/// * `NO_DA`: the empty authValue needs no dictionary-attack protection,
///   and the runtime cannot push the TPM into lockout through this index.
/// * not `ORDERLY`: an orderly counter may jump ahead after an unclean
///   shutdown, which would revoke the newest slot as well.
/// * not `POLICY_DELETE`/`PLATFORMCREATE`: the owner can delete it, which
///   is a denial of last-known-good, never a rollback (see the module doc).
/// * no `WRITEDEFINE`/`WRITE_STCLEAR`: nothing can write-lock it.
pub const ATTRIBUTES: u32 = a::TYPE_COUNTER | a::POLICYWRITE | a::AUTHREAD | a::NO_DA;

fn boot_phase_selection() -> Result<PcrSelection> {
    PcrSelection::new(HashAlg::Sha256, &[BOOT_PHASE_PCR])
}

/// The authPolicy: PolicyCommandCode(NV_Increment), then PolicyPCR(PCR 15
/// all zero). The command code pins the session to NV_Increment, so the
/// same policy cannot authorize anything else on the index. A constant
/// (PID 1 need not compute it); [`write_policy`] computes it and the tests
/// check both against tpm2-tools.
pub const WRITE_POLICY: [u8; 32] = [
    0x77, 0x54, 0xfc, 0xac, 0x28, 0xec, 0x62, 0x0e, 0x94, 0x35, 0xd8, 0xc1, 0xea, 0xd0, 0x2e, 0x58,
    0x90, 0x3b, 0x9b, 0x05, 0x3e, 0x32, 0x2d, 0x66, 0x8a, 0xae, 0x8b, 0xbe, 0x02, 0x28, 0x9c, 0x60,
];

/// The Name PolicyNV binds to: nameAlg || SHA-256 of the definition once
/// written (the TPM sets TPMA_NV_WRITTEN on the first increment, and the
/// Name covers it). A constant, as [`WRITE_POLICY`]; [`name`] computes it.
pub const NAME: [u8; 34] = [
    0x00, 0x0b, 0xa9, 0xf4, 0x93, 0xfd, 0x48, 0x64, 0xaa, 0xf7, 0x97, 0xd2, 0xe2, 0x70, 0xd8, 0x86,
    0x83, 0x24, 0x5c, 0x96, 0x7a, 0x3a, 0xb2, 0x40, 0xfb, 0xec, 0x9d, 0x62, 0x77, 0x3f, 0x38, 0x8f,
    0xba, 0x21,
];

/// [`WRITE_POLICY`], computed step by step.
pub fn write_policy() -> Result<PolicyDigest> {
    let zero: [u8; 32] = Sha256::digest([0u8; 32]).into();
    PolicyDigest::new()
        .command_code(CC_NV_INCREMENT)?
        .pcr(&boot_phase_selection()?, &zero)
}

/// The definition the node creates (an 8-byte counter).
pub fn definition() -> NvPublic {
    NvPublic::define(INDEX, ATTRIBUTES, &WRITE_POLICY, 8)
}

/// [`NAME`], computed from [`definition`].
pub fn name() -> Result<Vec<u8>> {
    let mut d = definition();
    d.attributes |= a::WRITTEN;
    d.compute_name()
}

/// Extends a sealing policy with PolicyNV(counter ≤ `limit`).
pub fn not_past(policy: PolicyDigest, limit: u64) -> Result<PolicyDigest> {
    policy.nv(&NAME, &limit.to_be_bytes(), 0, NvCompare::UnsignedLe)
}

/// What [`Tpm::rollback_counter`] found at [`INDEX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Ember's counter, written, at this value.
    Counter(u64),
    /// Ember's counter, defined but never incremented (no value yet).
    Unwritten,
    /// Nothing: the index is free.
    Absent,
}

impl<T: Transport> Tpm<T> {
    /// Reads [`INDEX`] and checks it is Ember's counter: the same nameAlg,
    /// attributes (TPMA_NV_WRITTEN aside), authPolicy and size. Anything
    /// else there is [`ErrorKind::ForeignNvIndex`], naming what differs.
    pub fn rollback_counter(&mut self) -> Result<Found> {
        let public = match self.nv_read_public(INDEX) {
            Ok(p) => p,
            Err(e) if e.is_tpm(tpm2_protocol::data::TpmRcBase::Handle) => return Ok(Found::Absent),
            Err(e) => return Err(e),
        };
        let foreign = |what| {
            Error::new(ErrorKind::ForeignNvIndex {
                index: INDEX,
                attributes: public.attributes,
                what,
            })
        };
        if public.attributes & !a::WRITTEN != ATTRIBUTES {
            return Err(foreign("its attributes differ"));
        }
        if public.auth_policy != WRITE_POLICY || public.name_alg != ALG_SHA256 {
            return Err(foreign("its authPolicy differs"));
        }
        if public.data_size != 8 {
            return Err(foreign("its size differs"));
        }
        if public.attributes & a::WRITTEN == 0 {
            return Ok(Found::Unwritten);
        }
        Ok(Found::Counter(self.nv_read_counter(INDEX)?))
    }

    /// Defines the counter in the owner hierarchy (`owner_auth`, empty on
    /// most machines), with an empty authValue.
    pub fn define_rollback_counter(&mut self, owner_auth: &[u8]) -> Result<()> {
        self.nv_define_space(owner_auth, &[], &definition())
    }

    /// Runs the counter's write policy in `session`.
    pub fn policy_rollback_write(&mut self, session: &PolicySession) -> Result<()> {
        self.policy_command_code(session, CC_NV_INCREMENT)?;
        self.policy_pcr(session, &boot_phase_selection()?, &[])
    }

    /// NV_Increment under the boot-phase policy. After "leave initrd"
    /// (PCR 15 extended) the TPM refuses it with TPM_RC_POLICY_FAIL.
    pub fn increment_rollback_counter(&mut self) -> Result<()> {
        let session = self.start_policy_session(SessionKind::Policy)?;
        let result = self
            .policy_rollback_write(&session)
            .and_then(|_| self.nv_increment(INDEX, Auth::Policy(session)));
        let flushed = self.flush_context(session.handle);
        result?;
        flushed
    }

    /// PolicyNV(counter ≤ `limit`) in `session`, the term [`not_past`]
    /// adds; fails with TPM_RC_POLICY once the counter is past `limit`.
    pub fn policy_rollback_not_past(&mut self, session: &PolicySession, limit: u64) -> Result<()> {
        self.policy_nv(
            session,
            INDEX,
            &limit.to_be_bytes(),
            0,
            NvCompare::UnsignedLe,
        )
    }

    /// Unseals an object sealed to PolicyPCR(`selection`) ∧ [`not_past`]
    /// `limit`, a last-known-good slot key: the PCRs as they are now, then
    /// PolicyNV on the counter, in the order the digest was built. The TPM
    /// refuses with TPM_RC_POLICY_FAIL when a PCR differs from the sealed
    /// value (another boot chain, or after leave-initrd) and with
    /// TPM_RC_POLICY once the counter is past `limit`.
    pub fn unseal_not_past(
        &mut self,
        parent: u32,
        sealed: &SealedObject,
        selection: &PcrSelection,
        limit: u64,
    ) -> Result<Vec<u8>> {
        self.unseal_with_policy(parent, sealed, |t, s| {
            t.policy_pcr(s, selection, &[])?;
            t.policy_rollback_not_past(s, limit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    // tpm2_policycommandcode + tpm2_policypcr -l sha256:15 (trial), then
    // tpm2_nvdefine 0x01800e70 -a "nt=counter|policywrite|authread|no_da"
    // and one tpm2_nvincrement, on swtpm: tpm2_nvreadpublic's Name.
    #[test]
    fn the_constants_are_what_the_definition_computes() {
        assert_eq!(write_policy().unwrap().as_bytes(), WRITE_POLICY);
        assert_eq!(name().unwrap(), NAME);
        assert_eq!(definition().compute_name().unwrap()[..2], NAME[..2]);
    }

    #[test]
    fn the_write_policy_and_name_are_the_ones_tpm2_tools_computed() {
        assert_eq!(
            hex(write_policy().unwrap().as_bytes()),
            "7754fcac28ec620e9435d8c1ead02e58903b9b053e322d668aae8bbe02289c60"
        );
        assert_eq!(
            hex(&name().unwrap()),
            "000ba9f493fd4864aaf797d2e270d88683245c967a3ab240fbec9d62773f388fba21"
        );
    }

    use crate::transport::FakeTransport;

    fn frame(tag: u16, body: &[u8]) -> Vec<u8> {
        let mut f = tag.to_be_bytes().to_vec();
        f.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
        f.extend_from_slice(&[0; 4]); // TPM_RC_SUCCESS
        f.extend_from_slice(body);
        f
    }

    const OK: [u8; 10] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];
    /// An empty response auth area: nonce, continueSession, hmac.
    const AUTH_OK: [u8; 5] = [0, 0, 1, 0, 0];

    fn with_session(params: &[u8]) -> Vec<u8> {
        let mut b = (params.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(params);
        b.extend_from_slice(&AUTH_OK);
        frame(0x8002, &b)
    }

    fn nv_read_public_reply(attributes: u32, policy: &[u8]) -> Vec<u8> {
        let mut public = INDEX.to_be_bytes().to_vec();
        public.extend_from_slice(&ALG_SHA256.to_be_bytes());
        public.extend_from_slice(&attributes.to_be_bytes());
        public.extend_from_slice(&(policy.len() as u16).to_be_bytes());
        public.extend_from_slice(policy);
        public.extend_from_slice(&8u16.to_be_bytes());
        let mut body = (public.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&public);
        body.extend_from_slice(&34u16.to_be_bytes());
        body.extend_from_slice(&NAME);
        frame(0x8001, &body)
    }

    // Part 3 §31.8 NV_Increment, §23.11 PolicyCommandCode, §23.9 PolicyNV,
    // byte by byte, with the session handle the fake TPM hands out.
    #[test]
    fn increment_and_policy_nv_marshal_as_part_3_lays_them_out() {
        let mut t = FakeTransport::new();
        t.push(&frame(0x8001, &[&[0, 16][..], &[7; 16]].concat())) // GetRandom
            .push(&frame(
                0x8001,
                &[&[3, 0, 0, 0, 0, 16][..], &[9; 16]].concat(),
            )) // StartAuthSession
            .push(&OK) // PolicyCommandCode
            .push(&OK) // PolicyPCR
            .push(&with_session(&[])) // NV_Increment
            .push(&OK); // FlushContext
        let mut tpm = Tpm::new(t);
        tpm.increment_rollback_counter().unwrap();
        let sent = &tpm.transport_mut().commands;
        assert_eq!(
            sent[2],
            [0x80, 0x01, 0, 0, 0, 18, 0, 0, 0x01, 0x6c, 3, 0, 0, 0, 0, 0, 0x01, 0x34]
        );
        assert_eq!(
            sent[4],
            [
                0x80, 0x02, 0, 0, 0, 31, 0, 0, 0x01, 0x34, 0x01, 0x80, 0x0e, 0x70, 0x01, 0x80,
                0x0e, 0x70, 0, 0, 0, 9, 3, 0, 0, 0, 0, 0, 1, 0, 0
            ]
        );

        let mut t = FakeTransport::new();
        t.push(&with_session(&[]));
        let mut tpm = Tpm::new(t);
        let session = PolicySession {
            handle: 0x0300_0000,
            kind: SessionKind::Policy,
        };
        tpm.policy_rollback_not_past(&session, 5).unwrap();
        assert_eq!(
            tpm.transport_mut().commands[0],
            [
                0x80, 0x02, 0, 0, 0, 49, 0, 0, 0x01, 0x49, 0x01, 0x80, 0x0e, 0x70, 0x01, 0x80,
                0x0e, 0x70, 3, 0, 0, 0, 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0,
                0, 0, 0, 5, 0, 0, 0, 9
            ]
        );
    }

    #[test]
    fn a_written_counter_reads_back_and_a_look_alike_is_named() {
        let mut t = FakeTransport::new();
        t.push(&nv_read_public_reply(
            ATTRIBUTES | a::WRITTEN,
            &WRITE_POLICY,
        ))
        .push(&with_session(&[0, 8, 0, 0, 0, 0, 0, 0, 1, 2]));
        assert_eq!(
            Tpm::new(t).rollback_counter().unwrap(),
            Found::Counter(0x102)
        );

        let mut t = FakeTransport::new();
        t.push(&nv_read_public_reply(ATTRIBUTES, &WRITE_POLICY));
        assert_eq!(Tpm::new(t).rollback_counter().unwrap(), Found::Unwritten);

        for (attributes, policy, what) in [
            (
                ATTRIBUTES | a::AUTHWRITE,
                &WRITE_POLICY[..],
                "its attributes differ",
            ),
            (
                ATTRIBUTES | a::ORDERLY,
                &WRITE_POLICY[..],
                "its attributes differ",
            ),
            (ATTRIBUTES, &[0u8; 32][..], "its authPolicy differs"),
            (ATTRIBUTES, &[][..], "its authPolicy differs"),
        ] {
            let mut t = FakeTransport::new();
            t.push(&nv_read_public_reply(attributes, policy));
            assert_eq!(
                Tpm::new(t).rollback_counter(),
                Err(Error::new(ErrorKind::ForeignNvIndex {
                    index: INDEX,
                    attributes,
                    what
                }))
            );
        }

        // No index there: TPM_RC_HANDLE (format one, handle 1).
        let mut t = FakeTransport::new();
        t.push(&[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8b]);
        assert_eq!(Tpm::new(t).rollback_counter().unwrap(), Found::Absent);

        // A counter answer of the wrong length is an error, not a value.
        let mut t = FakeTransport::new();
        t.push(&nv_read_public_reply(
            ATTRIBUTES | a::WRITTEN,
            &WRITE_POLICY,
        ))
        .push(&with_session(&[0, 4, 0, 0, 0, 1]));
        assert!(Tpm::new(t).rollback_counter().is_err());
    }
}
