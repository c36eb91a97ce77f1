//! The TPM, command by command. Each method marshals its command into the
//! one command buffer, sends it, checks the response frame and decodes the
//! parameters with bounds-checked reads.

use crate::consts::*;
use crate::error::{CommandCode, Error, ResponseCode, Result};
use crate::pcr::{PcrSelection, PcrValue, PcrValues};
use crate::public::{
    ak_template, ek_template, sealed_object_template, srk_template, AkKind, EkTemplate, PublicArea,
};
use crate::session::{NvCompare, PolicySession, SessionKind};
use crate::transport::{Transport, MAX_RESPONSE_SIZE};
use crate::wire::{Reader, Writer};
use crate::ErrorKind;
use alloc::vec::Vec;
use tpm2_protocol::data::{TpmCc, TpmRcBase};
use tpm2_protocol::frame::TpmResponse;

/// How many times a command is resent after TPM_RC_RETRY, TPM_RC_YIELDED or
/// TPM_RC_TESTING before giving up with [`ErrorKind::RetriesExhausted`].
pub const MAX_RETRIES: u32 = 8;

/// TCG EK Credential Profile NV indices of the EK certificates.
pub const EK_CERT_RSA_NV_INDEX: u32 = 0x01c0_0002;
pub const EK_CERT_ECC_NV_INDEX: u32 = 0x01c0_000a;
/// High range, ECC NIST P-384 (template H-3), written by swtpm_setup.
pub const EK_CERT_ECC_P384_NV_INDEX: u32 = 0x01c0_0016;

/// The command buffer: TPM_PT_MAX_COMMAND_SIZE of PC Client TPMs.
const COMMAND_BUFFER: usize = 4096;
/// EK certificates are a few KiB; refuse NV indices claiming more.
const MAX_NV_CERT: usize = 16 * 1024;

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

    /// The transport, e.g. to inspect a [`crate::FakeTransport`] in tests.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back (closing nothing on the TPM side).
    pub fn into_transport(self) -> T {
        self.transport
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
        Reader::new(&self.resp[reply.params.clone()])
    }

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
            let mut r = Reader::new(&self.resp[range]);
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
        let mut r = Reader::new(&self.resp[range]);
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
            let mut r = Reader::new(&self.resp[r]);
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
        let resp = &self.resp[range];
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

    /// Reads the selected PCRs (several PCR_Read calls: a TPM returns at most
    /// eight digests per call). PCRs of a bank the TPM has not allocated are
    /// absent from the result.
    pub fn pcr_read(&mut self, selection: &PcrSelection) -> Result<PcrValues> {
        let mut pending = selection.clone();
        let mut out = PcrValues::default();
        for _ in 0..32 {
            if pending.is_empty() {
                break;
            }
            let reply = self.execute(TpmCc::PcrRead, &[], &[], 0, |w| {
                pending.write(w);
                Ok(())
            })?;
            let mut r = self.params(&reply);
            r.u32("pcrUpdateCounter")?;
            let got = PcrSelection::read(&mut r)?;
            let count = r.u32("digest count")?;
            let mut returned = Vec::new();
            for (bank, index) in got.iter() {
                returned.push((bank, index));
            }
            if count as usize != returned.len() {
                return Err(Error::new(ErrorKind::Malformed {
                    what: "PCR digest count differs from selection",
                    offset: r.position(),
                }));
            }
            if returned.is_empty() {
                break;
            }
            for (bank, index) in returned {
                let d = r.tpm2b("PCR digest")?;
                if d.len() != bank.digest_len() {
                    return Err(Error::new(ErrorKind::Malformed {
                        what: "PCR digest length",
                        offset: r.position(),
                    }));
                }
                let asked = pending.banks.iter_mut().find(|(b, _)| *b == bank);
                match asked {
                    Some((_, m)) if *m & (1 << index) != 0 => *m &= !(1 << index),
                    _ => {
                        return Err(Error::new(ErrorKind::Malformed {
                            what: "PCR returned that was not asked for",
                            offset: r.position(),
                        }))
                    }
                }
                out.values.push(PcrValue {
                    bank,
                    index,
                    digest: d.to_vec(),
                });
            }
            r.finish("trailing PCR_Read data")?;
        }
        Ok(out)
    }

    /// Extends PCR `index` in each given bank (TPM2_PCR_Extend, empty auth).
    pub fn pcr_extend(&mut self, index: u8, digests: &[(HashAlg, &[u8])]) -> Result<()> {
        for (bank, d) in digests {
            if d.len() != bank.digest_len() {
                return Err(Error::new(ErrorKind::InvalidArgument {
                    what: "digest length does not match its bank",
                }));
            }
        }
        self.execute(
            TpmCc::PcrExtend,
            &[u32::from(index)],
            &[Auth::Password(&[])],
            0,
            |w| {
                w.u32(digests.len() as u32);
                for (bank, d) in digests {
                    w.u16(bank.alg_id());
                    w.bytes(d);
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// The public area and Name of a loaded or persistent object.
    pub fn read_public(&mut self, handle: u32) -> Result<LoadedObject> {
        let reply = self.execute(TpmCc::ReadPublic, &[handle], &[], 0, |_| Ok(()))?;
        let mut r = self.params(&reply);
        let public = PublicArea::from_bytes(r.tpm2b("outPublic")?)?;
        let name = r.tpm2b("name")?.to_vec();
        r.tpm2b("qualifiedName")?;
        Ok(LoadedObject {
            handle,
            public,
            name,
        })
    }

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

    /// TPM2_CreatePrimary with an empty authValue for the new object.
    pub fn create_primary(
        &mut self,
        hierarchy: Hierarchy,
        hierarchy_auth: &[u8],
        template: &PublicArea,
    ) -> Result<LoadedObject> {
        let reply = self.execute(
            TpmCc::CreatePrimary,
            &[hierarchy.handle()],
            &[Auth::Password(hierarchy_auth)],
            1,
            |w| {
                write_sensitive_create(w, &[], &[])?;
                write_tpm2b_public(w, template)?;
                w.u16(0); // outsideInfo
                w.u32(0); // creationPCR: none
                Ok(())
            },
        )?;
        let handle = reply.handle;
        let mut r = self.params(&reply);
        let public = PublicArea::from_bytes(r.tpm2b("outPublic")?)?;
        r.tpm2b("creationData")?;
        r.tpm2b("creationHash")?;
        skip_ticket(&mut r)?;
        let name = r.tpm2b("name")?.to_vec();
        Ok(LoadedObject {
            handle,
            public,
            name,
        })
    }

    /// Creates the endorsement key from a TCG template; its public key is the
    /// one in the manufacturer's EK certificate for that template.
    pub fn create_ek(&mut self, template: EkTemplate) -> Result<LoadedObject> {
        self.create_primary(Hierarchy::Endorsement, &[], &ek_template(template))
    }

    /// Creates the storage root key (owner hierarchy, [`srk_template`]).
    pub fn create_srk(&mut self) -> Result<LoadedObject> {
        self.create_primary(Hierarchy::Owner, &[], &srk_template())
    }

    /// TPM2_Create under `parent` (authorized with `parent_auth`), with an
    /// empty authValue and `data` as sensitive data (for sealed objects).
    pub fn create(
        &mut self,
        parent: u32,
        parent_auth: &[u8],
        template: &PublicArea,
        data: &[u8],
    ) -> Result<CreatedKey> {
        let reply = self.execute(
            TpmCc::Create,
            &[parent],
            &[Auth::Password(parent_auth)],
            0,
            |w| {
                write_sensitive_create(w, &[], data)?;
                write_tpm2b_public(w, template)?;
                w.u16(0);
                w.u32(0);
                Ok(())
            },
        )?;
        let mut r = self.params(&reply);
        let private = r.tpm2b("outPrivate")?.to_vec();
        let public = PublicArea::from_bytes(r.tpm2b("outPublic")?)?;
        r.tpm2b("creationData")?;
        r.tpm2b("creationHash")?;
        skip_ticket(&mut r)?;
        Ok(CreatedKey { private, public })
    }

    /// TPM2_Load of a key made by [`Tpm::create`] under the same parent.
    pub fn load(
        &mut self,
        parent: u32,
        parent_auth: &[u8],
        key: &CreatedKey,
    ) -> Result<LoadedObject> {
        let reply = self.execute(
            TpmCc::Load,
            &[parent],
            &[Auth::Password(parent_auth)],
            1,
            |w| {
                w.tpm2b(&key.private)?;
                write_tpm2b_public(w, &key.public)
            },
        )?;
        let handle = reply.handle;
        let mut r = self.params(&reply);
        let name = r.tpm2b("name")?.to_vec();
        Ok(LoadedObject {
            handle,
            public: key.public.clone(),
            name,
        })
    }

    /// Creates and loads an attestation key under `parent` (normally the SRK).
    /// Keep the [`CreatedKey`] to load the same AK again after a reboot.
    pub fn create_ak(&mut self, parent: u32, kind: AkKind) -> Result<(CreatedKey, LoadedObject)> {
        let key = self.create(parent, &[], &ak_template(kind), &[])?;
        let loaded = self.load(parent, &[], &key)?;
        Ok((key, loaded))
    }

    /// TPM2_Quote: signs the selected PCRs' digest and `nonce` with the AK
    /// (empty authValue, the AK's own signing scheme).
    pub fn quote(
        &mut self,
        ak: u32,
        nonce: &[u8],
        selection: &PcrSelection,
    ) -> Result<QuoteResult> {
        let reply = self.execute(TpmCc::Quote, &[ak], &[Auth::Password(&[])], 0, |w| {
            w.tpm2b(nonce)?;
            w.u16(ALG_NULL);
            selection.write(w);
            Ok(())
        })?;
        let mut r = self.params(&reply);
        let attest = r.tpm2b("quoted")?.to_vec();
        let start = r.position();
        crate::attest::Signature::read(&mut r)?;
        let end = r.position();
        let sig_bytes = self.resp[reply.params.start + start..reply.params.start + end].to_vec();
        Ok(QuoteResult {
            attest,
            signature: sig_bytes,
        })
    }

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

    /// TPM2_ActivateCredential with explicit authorizations for the AK and EK.
    pub fn activate_credential_with(
        &mut self,
        ak: u32,
        ak_auth: Auth<'_>,
        ek: u32,
        ek_auth: Auth<'_>,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        let reply = self.execute(
            TpmCc::ActivateCredential,
            &[ak, ek],
            &[ak_auth, ek_auth],
            0,
            |w| {
                w.tpm2b(credential_blob)?;
                w.tpm2b(encrypted_secret)
            },
        )?;
        let mut r = self.params(&reply);
        Ok(r.tpm2b("certInfo")?.to_vec())
    }

    /// Recovers the secret the server wrapped with MakeCredential for this
    /// EK and AK Name. An EK without userWithAuth (low-range templates) is
    /// authorized by a PolicySecret(TPM_RH_ENDORSEMENT) session, flushed
    /// afterwards. `credential_blob` is the TPM2B_ID_OBJECT buffer and
    /// `encrypted_secret` the TPM2B_ENCRYPTED_SECRET buffer.
    pub fn activate_credential(
        &mut self,
        ak: &LoadedObject,
        ek: &LoadedObject,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        if ek.public.attributes & crate::public::attributes::USER_WITH_AUTH != 0 {
            return self.activate_credential_with(
                ak.handle,
                Auth::Password(&[]),
                ek.handle,
                Auth::Password(&[]),
                credential_blob,
                encrypted_secret,
            );
        }
        let session = self.start_policy_session(SessionKind::Policy)?;
        let result = self
            .policy_secret(&session, RH_ENDORSEMENT, &[])
            .and_then(|_| {
                self.activate_credential_with(
                    ak.handle,
                    Auth::Password(&[]),
                    ek.handle,
                    Auth::Policy(session),
                    credential_blob,
                    encrypted_secret,
                )
            });
        let flushed = self.flush_context(session.handle);
        let secret = result?;
        flushed?;
        Ok(secret)
    }

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

fn write_sensitive_create(w: &mut Writer<'_>, user_auth: &[u8], data: &[u8]) -> Result<()> {
    let at = w.begin_size16();
    w.tpm2b(user_auth)?;
    w.tpm2b(data)?;
    w.end_size16(at)
}

fn write_tpm2b_public(w: &mut Writer<'_>, p: &PublicArea) -> Result<()> {
    let at = w.begin_size16();
    p.write(w)?;
    w.end_size16(at)
}

fn skip_ticket(r: &mut Reader<'_>) -> Result<()> {
    r.u16("ticket tag")?;
    r.u32("ticket hierarchy")?;
    r.tpm2b("ticket digest")?;
    Ok(())
}
