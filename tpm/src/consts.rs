//! TCG constants Ember uses (TPM 2.0 Part 2), by name.

use crate::error::{Error, Result};
use crate::ErrorKind;

pub const ALG_RSA: u16 = 0x0001;
pub const ALG_SHA1: u16 = 0x0004;
pub const ALG_HMAC: u16 = 0x0005;
pub const ALG_AES: u16 = 0x0006;
pub const ALG_KEYEDHASH: u16 = 0x0008;
pub const ALG_XOR: u16 = 0x000A;
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_SHA384: u16 = 0x000C;
pub const ALG_SHA512: u16 = 0x000D;
pub const ALG_NULL: u16 = 0x0010;
pub const ALG_RSASSA: u16 = 0x0014;
pub const ALG_RSAES: u16 = 0x0015;
pub const ALG_RSAPSS: u16 = 0x0016;
pub const ALG_OAEP: u16 = 0x0017;
pub const ALG_ECDSA: u16 = 0x0018;
pub const ALG_ECDH: u16 = 0x0019;
pub const ALG_ECDAA: u16 = 0x001A;
pub const ALG_ECSCHNORR: u16 = 0x001C;
pub const ALG_ECC: u16 = 0x0023;
pub const ALG_SYMCIPHER: u16 = 0x0025;
pub const ALG_CFB: u16 = 0x0043;

pub const ECC_NIST_P256: u16 = 0x0003;
pub const ECC_NIST_P384: u16 = 0x0004;

pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
pub const GENERATED_VALUE: u32 = 0xff54_4347;

/// TPM_CC_NV_Increment, the command a counter's PolicyCommandCode names.
pub const CC_NV_INCREMENT: u32 = 0x0000_0134;

pub const RH_OWNER: u32 = 0x4000_0001;
pub const RH_NULL: u32 = 0x4000_0007;
pub const RS_PW: u32 = 0x4000_0009;
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
pub const RH_PLATFORM: u32 = 0x4000_000C;

pub const SU_CLEAR: u16 = 0x0000;
pub const SU_STATE: u16 = 0x0001;

pub const SE_POLICY: u8 = 0x01;
pub const SE_TRIAL: u8 = 0x03;

pub const CAP_ALGS: u32 = 0;
pub const CAP_HANDLES: u32 = 1;
pub const CAP_PCRS: u32 = 5;
pub const CAP_TPM_PROPERTIES: u32 = 6;

pub const PT_FIXED: u32 = 0x100;
pub const PT_FAMILY_INDICATOR: u32 = PT_FIXED;
pub const PT_REVISION: u32 = PT_FIXED + 2;
pub const PT_MANUFACTURER: u32 = PT_FIXED + 5;
pub const PT_VENDOR_STRING_1: u32 = PT_FIXED + 6;
pub const PT_FIRMWARE_VERSION_1: u32 = PT_FIXED + 11;
pub const PT_FIRMWARE_VERSION_2: u32 = PT_FIXED + 12;
pub const PT_MAX_COMMAND_SIZE: u32 = PT_FIXED + 30;
pub const PT_MAX_RESPONSE_SIZE: u32 = PT_FIXED + 31;
pub const PT_NV_BUFFER_MAX: u32 = PT_FIXED + 44;

/// TCG EK Credential Profile NV indices of the EK certificates.
pub const EK_CERT_RSA_NV_INDEX: u32 = 0x01c0_0002;
pub const EK_CERT_ECC_NV_INDEX: u32 = 0x01c0_000a;
/// High range, ECC NIST P-384 (template H-3), written by swtpm_setup.
pub const EK_CERT_ECC_P384_NV_INDEX: u32 = 0x01c0_0016;

/// Handle ranges (the top byte of a handle) for GetCapability(HANDLES).
pub const HR_TRANSIENT: u32 = 0x8000_0000;
pub const HR_PERSISTENT: u32 = 0x8100_0000;
pub const HR_NV_INDEX: u32 = 0x0100_0000;

/// A hash algorithm the TPM and Ember both know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn from_alg_id(id: u16) -> Result<Self> {
        match id {
            ALG_SHA1 => Ok(HashAlg::Sha1),
            ALG_SHA256 => Ok(HashAlg::Sha256),
            ALG_SHA384 => Ok(HashAlg::Sha384),
            ALG_SHA512 => Ok(HashAlg::Sha512),
            other => Err(Error::new(ErrorKind::Unsupported {
                what: "hash algorithm",
                value: other as u32,
            })),
        }
    }

    pub fn alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => ALG_SHA1,
            HashAlg::Sha256 => ALG_SHA256,
            HashAlg::Sha384 => ALG_SHA384,
            HashAlg::Sha512 => ALG_SHA512,
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name tpm2-tools uses ("sha256").
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sha1" => Some(HashAlg::Sha1),
            "sha256" => Some(HashAlg::Sha256),
            "sha384" => Some(HashAlg::Sha384),
            "sha512" => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Hashes the concatenation of `parts`. SHA-1 is only a PCR bank here,
    /// never hashed by Ember, so it is refused.
    pub fn digest(self, parts: &[&[u8]]) -> Result<alloc::vec::Vec<u8>> {
        use sha2::Digest;
        fn run<D: Digest>(parts: &[&[u8]]) -> alloc::vec::Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            HashAlg::Sha256 => Ok(run::<sha2::Sha256>(parts)),
            HashAlg::Sha384 => Ok(run::<sha2::Sha384>(parts)),
            HashAlg::Sha512 => Ok(run::<sha2::Sha512>(parts)),
            HashAlg::Sha1 => Err(Error::new(ErrorKind::Unsupported {
                what: "hash for digest",
                value: ALG_SHA1 as u32,
            })),
        }
    }
}

/// The TCG name of an algorithm identifier ("TPM_ALG_SHA256"), if known.
pub fn alg_name(id: u16) -> Option<impl core::fmt::Display> {
    tpm2_protocol::data::TpmAlgId::try_from(id).ok()
}
