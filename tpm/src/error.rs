//! One error type for the crate: transport failures, malformed responses,
//! decoded TPM response codes, and (with `host`) verification failures.

use alloc::boxed::Box;
use core::fmt;
use tpm2_protocol::data::{TpmCc, TpmRc, TpmRcBase, TpmRcFmt1, TpmRcIndex};

pub type Result<T> = core::result::Result<T, Error>;

/// A TPM response code as the TPM sent it, decoded by `tpm2-protocol`
/// into its format (0, 1, warning), base code and the handle, session or
/// parameter it points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// The decoded code, or `None` for a vendor-specific or reserved value.
    pub fn decode(self) -> Option<TpmRc> {
        TpmRc::try_from(self.0).ok()
    }

    /// The base code with format-one index bits removed.
    pub fn base(self) -> Option<TpmRcBase> {
        self.decode().map(|rc| rc.base())
    }

    /// The handle, session or parameter number a format-one code points at.
    pub fn index(self) -> Option<TpmRcIndex> {
        match self.decode() {
            Some(TpmRc::Fmt1(f)) => f.index,
            _ => None,
        }
    }

    /// Warnings after which the same command should simply be sent again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self.decode(),
            Some(TpmRc::Warn(
                TpmRcBase::Retry | TpmRcBase::Yielded | TpmRcBase::Testing
            ))
        )
    }

    /// True when the base code equals `base` (any format, any index).
    pub fn is(self, base: TpmRcBase) -> bool {
        self.base() == Some(base)
    }
}

/// The base values of the response codes tpm2-protocol decodes, and their
/// TCG names without the `TPM_RC_` prefix (space-separated, same order).
/// tpm2-protocol's own Display spells each name out in a `match` (about
/// 3 KB of PID 1); a value table and one string hold the same names in
/// about 1.2 KB.
const RC_BASES: [u16; 102] = [
    0x000, 0x01e, 0x100, 0x101, 0x103, 0x10b, 0x119, 0x120, 0x121, 0x124, 0x125, 0x126, 0x127,
    0x128, 0x12d, 0x12e, 0x12f, 0x130, 0x131, 0x142, 0x143, 0x144, 0x145, 0x146, 0x147, 0x148,
    0x149, 0x14a, 0x14b, 0x14c, 0x150, 0x151, 0x152, 0x153, 0x154, 0x155, 0x156, 0x081, 0x082,
    0x083, 0x084, 0x085, 0x087, 0x088, 0x089, 0x08a, 0x08b, 0x08c, 0x08d, 0x08e, 0x08f, 0x090,
    0x092, 0x095, 0x096, 0x097, 0x098, 0x09a, 0x09b, 0x09c, 0x09d, 0x09f, 0x0a0, 0x0a1, 0x0a2,
    0x0a3, 0x0a4, 0x0a5, 0x0a6, 0x0a7, 0x0a8, 0x0a9, 0x0b0, 0x0b1, 0x901, 0x902, 0x903, 0x904,
    0x905, 0x906, 0x907, 0x908, 0x909, 0x90a, 0x910, 0x911, 0x912, 0x913, 0x914, 0x915, 0x916,
    0x918, 0x919, 0x91a, 0x91b, 0x91c, 0x91d, 0x91e, 0x920, 0x921, 0x922, 0x923,
];
const RC_NAMES: &str = concat!(
    "SUCCESS BAD_TAG INITIALIZE FAILURE SEQUENCE PRIVATE HMAC DISABLED ",
    "EXCLUSIVE AUTH_TYPE AUTH_MISSING POLICY PCR PCR_CHANGED UPGRADE ",
    "TOO_MANY_CONTEXTS AUTH_UNAVAILABLE REBOOT UNBALANCED COMMAND_SIZE ",
    "COMMAND_CODE AUTHSIZE AUTH_CONTEXT NV_RANGE NV_SIZE NV_LOCKED ",
    "NV_AUTHORIZATION NV_UNINITIALIZED NV_SPACE NV_DEFINED BAD_CONTEXT ",
    "CPHASH PARENT NEEDS_TEST NO_RESULT SENSITIVE READ_ONLY ASYMMETRIC ",
    "ATTRIBUTES HASH VALUE HIERARCHY KEY_SIZE MGF MODE TYPE HANDLE KDF ",
    "RANGE AUTH_FAIL NONCE PP SCHEME SIZE SYMMETRIC TAG SELECTOR ",
    "INSUFFICIENT SIGNATURE KEY POLICY_FAIL INTEGRITY TICKET ",
    "RESERVED_BITS BAD_AUTH EXPIRED POLICY_CC BINDING CURVE ECC_POINT ",
    "FW_LIMITED SVN_LIMITED CHANNEL CHANNEL_KEY CONTEXT_GAP ",
    "OBJECT_MEMORY SESSION_MEMORY MEMORY SESSION_HANDLES ",
    "OBJECT_HANDLES LOCALITY YIELDED CANCELED TESTING REFERENCE_H0 ",
    "REFERENCE_H1 REFERENCE_H2 REFERENCE_H3 REFERENCE_H4 REFERENCE_H5 ",
    "REFERENCE_H6 REFERENCE_S0 REFERENCE_S1 REFERENCE_S2 REFERENCE_S3 ",
    "REFERENCE_S4 REFERENCE_S5 REFERENCE_S6 NV_RATE LOCKOUT RETRY ",
    "NV_UNAVAILABLE",
);

/// A response code's base by its TCG name (`TPM_RC_POLICY_FAIL`).
struct BaseName(TpmRcBase);

impl fmt::Display for BaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0 as u32;
        let name = RC_BASES
            .iter()
            .position(|&v| u32::from(v) == value)
            .and_then(|i| RC_NAMES.split(' ').nth(i));
        match name {
            Some(name) => write!(f, "TPM_RC_{name}"),
            None => write!(f, "TPM_RC 0x{value:03x}"),
        }
    }
}

impl fmt::Display for ResponseCode {
    /// As tpm2-protocol formats a `TpmRc` (`TPM_RC_NV_DEFINED`,
    /// `[TPM_RC_VALUE, parameter[1]]`), then the raw code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0;
        match self.decode() {
            Some(TpmRc::Fmt1(TpmRcFmt1 {
                base,
                index: Some(index),
            })) => write!(f, "[{}, {index}] (0x{code:08x})", BaseName(base)),
            Some(rc) => write!(f, "{} (0x{code:08x})", BaseName(rc.base())),
            None => write!(f, "unknown response code 0x{code:08x}"),
        }
    }
}

/// Formats a command code by its TCG name where known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandCode(pub u32);

/// The TCG names of the commands this crate sends: a `CommandCode` is only
/// ever made from one of them. Kept here rather than using tpm2-protocol's
/// Display for all ~120 commands, which costs PID 1 about 5.5 KB.
const COMMAND_NAMES: [(TpmCc, &str); 24] = [
    (TpmCc::ActivateCredential, "TPM_CC_ActivateCredential"),
    (TpmCc::Create, "TPM_CC_Create"),
    (TpmCc::CreatePrimary, "TPM_CC_CreatePrimary"),
    (TpmCc::FlushContext, "TPM_CC_FlushContext"),
    (TpmCc::GetCapability, "TPM_CC_GetCapability"),
    (TpmCc::GetRandom, "TPM_CC_GetRandom"),
    (TpmCc::Load, "TPM_CC_Load"),
    (TpmCc::NvDefineSpace, "TPM_CC_NV_DefineSpace"),
    (TpmCc::NvIncrement, "TPM_CC_NV_Increment"),
    (TpmCc::NvRead, "TPM_CC_NV_Read"),
    (TpmCc::NvReadPublic, "TPM_CC_NV_ReadPublic"),
    (TpmCc::NvUndefineSpace, "TPM_CC_NV_UndefineSpace"),
    (TpmCc::PcrExtend, "TPM_CC_PCR_Extend"),
    (TpmCc::PcrRead, "TPM_CC_PCR_Read"),
    (TpmCc::PolicyCommandCode, "TPM_CC_PolicyCommandCode"),
    (TpmCc::PolicyGetDigest, "TPM_CC_PolicyGetDigest"),
    (TpmCc::PolicyNv, "TPM_CC_PolicyNV"),
    (TpmCc::PolicyPcr, "TPM_CC_PolicyPCR"),
    (TpmCc::PolicySecret, "TPM_CC_PolicySecret"),
    (TpmCc::Quote, "TPM_CC_Quote"),
    (TpmCc::ReadPublic, "TPM_CC_ReadPublic"),
    (TpmCc::StartAuthSession, "TPM_CC_StartAuthSession"),
    (TpmCc::Startup, "TPM_CC_Startup"),
    (TpmCc::Unseal, "TPM_CC_Unseal"),
];

impl fmt::Display for CommandCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match COMMAND_NAMES.iter().find(|(cc, _)| cc.value() == self.0) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "command 0x{:08x}", self.0),
        }
    }
}

/// Every `?` in the crate moves the error, so it is one pointer:
/// `Result<(), Error>` comes back in a register (the kind inline was 32
/// bytes in /init).
#[derive(Debug, PartialEq, Eq)]
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(kind))
    }

    /// What failed.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

/// What an [`Error`] is: one variant per cause. Texts are `Box<str>`, and
/// the variants that pair a `&'static str` with a text exist only with the
/// features that produce them (`std`'s socket transport, `host`'s EK
/// certificate checks).
#[derive(Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Neither /dev/tpmrm0 nor /dev/tpm0 could be opened.
    DeviceOpen { path: &'static str, errno: i32 },
    /// A read or write on the TPM device failed.
    DeviceIo { op: &'static str, errno: i32 },
    /// A socket transport failed (connect, write, read).
    #[cfg(feature = "std")]
    Socket {
        op: &'static str,
        detail: alloc::boxed::Box<str>,
    },
    /// The peer closed or the read ended before the whole response arrived.
    ShortRead { received: usize, expected: usize },
    /// The response header claims more bytes than the response buffer holds.
    ResponseTooLarge { declared: usize, limit: usize },
    /// Fewer than the 10 header bytes arrived.
    ResponseTooShort { len: usize },
    /// The header's size field disagrees with the number of bytes that arrived.
    ResponseSizeMismatch { declared: usize, received: usize },
    /// The response tag is neither TPM_ST_NO_SESSIONS nor TPM_ST_SESSIONS
    /// (or the wrong one of the two).
    BadResponseTag { tag: u16 },
    /// The response frame failed `tpm2-protocol`'s structural validation.
    BadFrame {
        cc: CommandCode,
        detail: alloc::boxed::Box<str>,
    },
    /// A response parameter ran past the end of the response or held an
    /// impossible value.
    Malformed { what: &'static str, offset: usize },
    /// The command would not fit in the command buffer.
    CommandTooLarge { needed: usize, limit: usize },
    /// The TPM answered with an error or warning code.
    Tpm { cc: CommandCode, rc: ResponseCode },
    /// A retryable warning came back more than [`crate::MAX_RETRIES`] times.
    RetriesExhausted { cc: CommandCode, rc: ResponseCode },
    /// An argument the caller passed cannot be encoded (too long, unknown).
    InvalidArgument { what: &'static str },
    /// An algorithm or key type this crate does not handle.
    Unsupported { what: &'static str, value: u32 },
    /// An NV index holds no data or is larger than an EK certificate can be.
    NvSize { index: u32, size: usize },
    /// An NV index Ember owns holds something it did not define (another
    /// attributes value, authPolicy or size): someone defined it first.
    ForeignNvIndex {
        index: u32,
        attributes: u32,
        what: &'static str,
    },
    /// Quote: the attestation structure is not a TPM-generated quote.
    NotAQuote { magic: u32, kind: u16 },
    /// Quote: the nonce in the quote is not the one the verifier sent.
    NonceMismatch,
    /// Quote: the PCR digest does not match the supplied PCR values.
    PcrDigestMismatch,
    /// Quote: a selected PCR has no supplied value.
    PcrValueMissing { bank: u16, index: u8 },
    /// Quote or certificate: the signature does not verify.
    BadSignature { what: &'static str },
    /// EK certificate: DER or X.509 structure is invalid.
    #[cfg(feature = "host")]
    Certificate {
        what: &'static str,
        detail: alloc::boxed::Box<str>,
    },
    /// EK certificate: no configured CA issued a certificate in the chain.
    #[cfg(feature = "host")]
    UntrustedChain { subject: alloc::boxed::Box<str> },
    /// EK certificate: a certificate in the chain is outside its validity period.
    #[cfg(feature = "host")]
    CertificateExpired { subject: alloc::boxed::Box<str> },
    /// EK certificate: its key is not the TPM's EK public key.
    EkKeyMismatch,
    /// Host crypto failure (RSA encryption, ECDH with an invalid point).
    Crypto { what: &'static str },
}

impl Error {
    /// The TPM response code when the TPM refused the command.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self.kind() {
            ErrorKind::Tpm { rc, .. } | ErrorKind::RetriesExhausted { rc, .. } => Some(*rc),
            _ => None,
        }
    }

    /// True when the TPM refused the command with `base`.
    pub fn is_tpm(&self, base: TpmRcBase) -> bool {
        self.response_code().is_some_and(|rc| rc.is(base))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            ErrorKind::DeviceOpen { path, errno } => write!(f, "cannot open {path}: errno {errno}"),
            ErrorKind::DeviceIo { op, errno } => write!(f, "TPM device {op} failed: errno {errno}"),
            #[cfg(feature = "std")]
            ErrorKind::Socket { op, detail } => write!(f, "TPM socket {op} failed: {detail}"),
            ErrorKind::ShortRead { received, expected } => {
                write!(f, "TPM response cut short: {received} of {expected} bytes")
            }
            ErrorKind::ResponseTooLarge { declared, limit } => {
                write!(
                    f,
                    "TPM response of {declared} bytes exceeds the {limit}-byte buffer"
                )
            }
            ErrorKind::ResponseTooShort { len } => {
                write!(f, "TPM response of {len} bytes is shorter than a header")
            }
            ErrorKind::ResponseSizeMismatch { declared, received } => write!(
                f,
                "TPM response header says {declared} bytes but {received} arrived"
            ),
            ErrorKind::BadResponseTag { tag } => write!(f, "TPM response has bad tag 0x{tag:04x}"),
            ErrorKind::BadFrame { cc, detail } => write!(f, "malformed response to {cc}: {detail}"),
            ErrorKind::Malformed { what, offset } => {
                write!(f, "malformed TPM data: {what} at offset {offset}")
            }
            ErrorKind::CommandTooLarge { needed, limit } => {
                write!(f, "command needs {needed} bytes, buffer holds {limit}")
            }
            ErrorKind::Tpm { cc, rc } => write!(f, "{cc} failed: {rc}"),
            ErrorKind::RetriesExhausted { cc, rc } => {
                write!(
                    f,
                    "{cc} still answered {rc} after {} retries",
                    crate::MAX_RETRIES
                )
            }
            ErrorKind::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            ErrorKind::Unsupported { what, value } => write!(f, "unsupported {what} 0x{value:x}"),
            ErrorKind::NvSize { index, size } => {
                write!(f, "NV index 0x{index:08x} has unusable size {size}")
            }
            ErrorKind::ForeignNvIndex {
                index,
                attributes,
                what,
            } => write!(
                f,
                "NV index 0x{index:08x} (attributes 0x{attributes:08x}) is not Ember's rollback counter: {what}"
            ),
            ErrorKind::NotAQuote { magic, kind } => {
                write!(
                    f,
                    "attestation is not a TPM quote (magic 0x{magic:08x}, type 0x{kind:04x})"
                )
            }
            ErrorKind::NonceMismatch => write!(f, "quote nonce differs from the expected nonce"),
            ErrorKind::PcrDigestMismatch => {
                write!(f, "quote PCR digest does not match the supplied PCR values")
            }
            ErrorKind::PcrValueMissing { bank, index } => {
                write!(f, "no value supplied for PCR {index} of bank 0x{bank:04x}")
            }
            ErrorKind::BadSignature { what } => write!(f, "{what} signature does not verify"),
            #[cfg(feature = "host")]
            ErrorKind::Certificate { what, detail } => write!(f, "certificate {what}: {detail}"),
            #[cfg(feature = "host")]
            ErrorKind::UntrustedChain { subject } => {
                write!(f, "no configured CA vouches for certificate '{subject}'")
            }
            #[cfg(feature = "host")]
            ErrorKind::CertificateExpired { subject } => {
                write!(f, "certificate '{subject}' is outside its validity period")
            }
            ErrorKind::EkKeyMismatch => {
                write!(f, "EK certificate key differs from the TPM's EK public key")
            }
            ErrorKind::Crypto { what } => write!(f, "crypto failure: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn response_codes_read_as_tpm2_protocol_formats_them() {
        // Every format-zero, warning and format-one code (all indices).
        let mut decoded = 0;
        for code in 0..0x1000u32 {
            let Ok(rc) = TpmRc::try_from(code) else {
                continue;
            };
            decoded += 1;
            assert_eq!(
                format!("{}", ResponseCode(code)),
                format!("{rc} (0x{code:08x})"),
                "code 0x{code:x}"
            );
        }
        assert!(decoded > 1000, "only {decoded} codes decoded");
        assert_eq!(
            format!("{}", ResponseCode(0x98e)),
            "[TPM_RC_AUTH_FAIL, session[1]] (0x0000098e)"
        );
    }

    #[test]
    fn command_names_are_the_tcg_names() {
        for (cc, name) in COMMAND_NAMES {
            assert_eq!(format!("{cc}"), name);
            assert_eq!(format!("{}", CommandCode(cc.value())), name);
        }
    }

    #[test]
    fn a_command_this_crate_never_sends_shows_its_code() {
        let clear = TpmCc::Clear.value();
        assert_eq!(
            format!("{}", CommandCode(clear)),
            format!("command 0x{clear:08x}")
        );
    }

    #[test]
    fn every_command_the_crate_sends_has_a_name() {
        // Every file of the `tpm` module (one per command family).
        let sources = [
            include_str!("tpm/mod.rs"),
            include_str!("tpm/capability.rs"),
            include_str!("tpm/nv.rs"),
            include_str!("tpm/object.rs"),
            include_str!("tpm/pcr.rs"),
            include_str!("tpm/policy.rs"),
            include_str!("tpm/seal.rs"),
        ];
        for sent in sources.iter().flat_map(|s| s.split("TpmCc::").skip(1)) {
            let variant: alloc::string::String = sent
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let cc = COMMAND_NAMES
                .iter()
                .find(|(cc, _)| format!("{cc:?}") == variant);
            assert!(
                cc.is_some(),
                "TpmCc::{variant} is sent but has no name in COMMAND_NAMES"
            );
        }
    }
}
