//! The TPM, command by command. Each method marshals its command into the
//! one command buffer, sends it, checks the response frame and decodes the
//! parameters with bounds-checked reads.
//!
//! One `impl Tpm` block per command family, one file each:
//! - `mod.rs`: the [`Tpm`] and the values its commands take and return, and
//!   the channel every command goes through (header and authorization
//!   area, bounded resends, response frame checks); FlushContext;
//! - `capability.rs`: Startup, GetCapability (properties, algorithms,
//!   handles, PCR banks), GetRandom;
//! - `pcr.rs`: PCR_Read, PCR_Extend and Quote;
//! - `nv.rs`: NV indices: ReadPublic, DefineSpace, UndefineSpace,
//!   Increment, Read (counters and EK certificates);
//! - `policy.rs`: policy sessions: StartAuthSession, PolicySecret,
//!   PolicyPCR, PolicyNV, PolicyCommandCode, PolicyGetDigest;
//! - `object.rs`: keys: CreatePrimary (EK, SRK), Create, Load, ReadPublic,
//!   the attestation key, ActivateCredential;
//! - `seal.rs`: sealed data objects: sealing under a policy, Unseal.

mod capability;
mod nv;
mod object;
mod pcr;
mod policy;
mod seal;

use crate::consts::*;
use crate::error::{CommandCode, Error, ResponseCode, Result};
use crate::pcr::PcrSelection;
use crate::public::PublicArea;
use crate::session::PolicySession;
use crate::transport::{Transport, MAX_RESPONSE_SIZE};
use crate::wire::{Reader, Writer};
use crate::ErrorKind;
use alloc::vec::Vec;
use tpm2_protocol::data::TpmCc;
use tpm2_protocol::frame::TpmResponse;

/// How many times a command is resent after TPM_RC_RETRY, TPM_RC_YIELDED or
/// TPM_RC_TESTING before giving up with [`ErrorKind::RetriesExhausted`].
pub const MAX_RETRIES: u32 = 8;

/// The command buffer: TPM_PT_MAX_COMMAND_SIZE of PC Client TPMs.
const COMMAND_BUFFER: usize = 4096;

/// Authorization for one handle of a command.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// The password session (TPM_RS_PW) with this authValue.
    Password(&'a [u8]),
    /// A policy session whose policy the object's authPolicy requires.
    Policy(PolicySession),
}

/// A hierarchy to create primary objects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    Owner,
    Endorsement,
    Platform,
    Null,
}

impl Hierarchy {
    /// The permanent handle (TPM_RH_OWNER, ...).
    pub fn handle(self) -> u32 {
        match self {
            Hierarchy::Owner => RH_OWNER,
            Hierarchy::Endorsement => RH_ENDORSEMENT,
            Hierarchy::Platform => RH_PLATFORM,
            Hierarchy::Null => RH_NULL,
        }
    }
}

/// An object loaded in the TPM: its transient handle, public area and Name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedObject {
    pub handle: u32,
    pub public: PublicArea,
    pub name: Vec<u8>,
}

/// The output of Create: the TPM-wrapped private part (TPM2B_PRIVATE
/// buffer, opaque) and the public area. Load both to use the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedKey {
    pub private: Vec<u8>,
    pub public: PublicArea,
}

/// A sealed data object as stored on disk (same shape as [`CreatedKey`]).
pub type SealedObject = CreatedKey;

/// A quote: TPMS_ATTEST bytes and the TPMT_SIGNATURE over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteResult {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
}

/// TPMS_NV_PUBLIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    pub name_alg: u16,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub data_size: u16,
    pub name: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpmProperty {
    pub property: u32,
    pub value: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgProperty {
    pub alg: u16,
    pub attributes: u32,
}

/// What `ember tpm info` prints: who made the TPM and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub family: u32,
    pub revision: u32,
    pub manufacturer: u32,
    pub vendor: alloc::string::String,
    pub firmware_version: (u32, u32),
    pub max_command_size: u32,
    pub max_response_size: u32,
    pub nv_buffer_max: u32,
    pub pcr_banks: PcrSelection,
    pub algorithms: Vec<AlgProperty>,
}

/// Where a successful response's parameters are in the response buffer.
struct Reply {
    handle: u32,
    params: core::ops::Range<usize>,
}

/// A TPM reached over one transport. Holds one command and one response
/// buffer, allocated once.
pub struct Tpm<T: Transport> {
    transport: T,
    cmd: Vec<u8>,
    resp: Vec<u8>,
    nv_buffer_max: Option<u16>,
}

fn tpm_err(cc: TpmCc, raw: u32) -> Error {
    Error::new(ErrorKind::Tpm {
        cc: CommandCode(cc.value()),
        rc: ResponseCode(raw),
    })
}

/// A command's header and authorization area, up to its parameters; returns
/// where the command's size field is, for [`Writer::end_size32`].
#[inline(never)]
fn write_header(
    w: &mut Writer<'_>,
    cc: TpmCc,
    handles: &[u32],
    auths: &[Auth<'_>],
) -> Result<usize> {
    w.u16(if auths.is_empty() {
        ST_NO_SESSIONS
    } else {
        ST_SESSIONS
    });
    let size_at = w.begin_size32();
    w.u32(cc.value());
    for h in handles {
        w.u32(*h);
    }
    if !auths.is_empty() {
        let at = w.begin_size32();
        let from = w.len();
        for a in auths {
            match a {
                Auth::Password(pw) => {
                    w.u32(RS_PW);
                    w.u16(0);
                    w.u8(0);
                    w.tpm2b(pw)?;
                }
                Auth::Policy(s) => {
                    w.u32(s.handle);
                    w.u16(0);
                    w.u8(1); // continueSession: the caller flushes it
                    w.u16(0);
                }
            }
        }
        w.end_size32(at, from);
    }
    Ok(size_at)
}

impl<T: Transport> Tpm<T> {
    /// Wraps a transport. Allocates the command buffer (4 KiB) and the
    /// response buffer ([`MAX_RESPONSE_SIZE`]) once; commands reuse them.
    pub fn new(transport: T) -> Self {
        Tpm {
            transport,
            cmd: Vec::with_capacity(COMMAND_BUFFER),
            resp: alloc::vec![0; MAX_RESPONSE_SIZE],
            nv_buffer_max: None,
        }
    }

    /// The transport, e.g. to inspect a `FakeTransport` (the `test-hooks` feature) in tests.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Marshals and runs one command, retrying bounded times on RC_RETRY,
    /// RC_YIELDED and RC_TESTING, and validates the response frame.
    ///
    /// Only the parameters are per command: the header and sessions are
    /// written, and the command sent and its answer checked, by the
    /// non-generic [`write_header`] and [`Tpm::transact`], so each of the
    /// ~20 commands does not carry its own copy of them (about 1.2 KB each
    /// in /init).
    fn execute(
        &mut self,
        cc: TpmCc,
        handles: &[u32],
        auths: &[Auth<'_>],
        resp_handles: usize,
        params: impl FnOnce(&mut Writer<'_>) -> Result<()>,
    ) -> Result<Reply> {
        let mut params = Some(params);
        self.execute_dyn(cc, handles, auths, resp_handles, &mut |w| {
            params.take().map_or(Ok(()), |p| p(w))
        })
    }

    /// [`Tpm::execute`]'s body behind a `dyn` parameter writer: one copy
    /// in PID 1 instead of one per command (each ~1 KB).
    fn execute_dyn(
        &mut self,
        cc: TpmCc,
        handles: &[u32],
        auths: &[Auth<'_>],
        resp_handles: usize,
        params: &mut dyn FnMut(&mut Writer<'_>) -> Result<()>,
    ) -> Result<Reply> {
        let mut w = Writer::new(&mut self.cmd, COMMAND_BUFFER);
        let size_at = write_header(&mut w, cc, handles, auths)?;
        params(&mut w)?;
        w.end_size32(size_at, 0);
        w.finish()?;
        self.transact(cc, !auths.is_empty(), resp_handles)
    }

    /// Sends the marshalled command in `self.cmd` and checks the answer:
    /// the second half of [`Tpm::execute`].
    #[inline(never)]
    fn transact(&mut self, cc: TpmCc, sessions: bool, resp_handles: usize) -> Result<Reply> {
        let mut attempt = 0;
        let n = loop {
            let n = self.transport.transact(&self.cmd, &mut self.resp)?;
            let rc = check_header(&self.resp[..n])?;
            if rc == 0 {
                break n;
            }
            let code = ResponseCode(rc);
            if code.is_retryable() {
                attempt += 1;
                if attempt > MAX_RETRIES {
                    return Err(Error::new(ErrorKind::RetriesExhausted {
                        cc: CommandCode(cc.value()),
                        rc: code,
                    }));
                }
                self.transport.before_retry(attempt);
                continue;
            }
            return Err(tpm_err(cc, rc));
        };
        let frame = &self.resp[..n];
        TpmResponse::cast(frame)
            .and_then(|r| r.validate(cc))
            .map_err(|e| {
                Error::new(ErrorKind::BadFrame {
                    cc: CommandCode(cc.value()),
                    detail: alloc::format!("{e}").into(),
                })
            })?;
        let tag = u16::from_be_bytes([frame[0], frame[1]]);
        if (tag == ST_SESSIONS) != sessions {
            return Err(Error::new(ErrorKind::BadResponseTag { tag }));
        }
        let mut r = Reader::new(&frame[10..]);
        let mut handle = 0;
        for _ in 0..resp_handles {
            handle = r.u32("response handle")?;
        }
        let start = 10 + r.position();
        let params = if tag == ST_SESSIONS {
            let len = r.u32("parameterSize")? as usize;
            if len > r.remaining() {
                return Err(Error::new(ErrorKind::Malformed {
                    what: "parameterSize beyond response",
                    offset: start,
                }));
            }
            start + 4..start + 4 + len
        } else {
            start..n
        };
        Ok(Reply { handle, params })
    }

    fn params(&self, reply: &Reply) -> Reader<'_> {
        Reader::new(self.response(reply.params.clone()))
    }

    /// Bytes `range` of the last response: the one place the command
    /// families slice it (their ranges come from [`Reply`] and readers over
    /// it, so they are in bounds), which keeps /init's panic locations to
    /// this file.
    fn response(&self, range: core::ops::Range<usize>) -> &[u8] {
        &self.resp[range]
    }

    /// TPM2_FlushContext of a transient object or session.
    pub fn flush_context(&mut self, handle: u32) -> Result<()> {
        self.execute(TpmCc::FlushContext, &[], &[], 0, |w| {
            w.u32(handle);
            Ok(())
        })?;
        Ok(())
    }
}

/// Checks the 10-byte header and returns the response code.
fn check_header(frame: &[u8]) -> Result<u32> {
    if frame.len() < 10 {
        return Err(Error::new(ErrorKind::ResponseTooShort { len: frame.len() }));
    }
    let tag = u16::from_be_bytes([frame[0], frame[1]]);
    let declared = crate::transport::declared_size(frame);
    if declared != frame.len() {
        return Err(Error::new(ErrorKind::ResponseSizeMismatch {
            declared,
            received: frame.len(),
        }));
    }
    if tag != ST_NO_SESSIONS && tag != ST_SESSIONS {
        return Err(Error::new(ErrorKind::BadResponseTag { tag }));
    }
    let rc = u32::from_be_bytes([frame[6], frame[7], frame[8], frame[9]]);
    if rc != 0 && (tag != ST_NO_SESSIONS || frame.len() != 10) {
        return Err(Error::new(ErrorKind::BadResponseTag { tag }));
    }
    Ok(rc)
}
