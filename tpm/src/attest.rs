//! TPMS_ATTEST (for quotes) and TPMT_SIGNATURE.

use crate::consts::*;
use crate::error::{Error, Result};
use crate::pcr::PcrSelection;
use crate::wire::{Reader, Writer};
use crate::ErrorKind;
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// TPMS_QUOTE_INFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteAttest {
    pub pcr_select: PcrSelection,
    pub pcr_digest: Vec<u8>,
}

/// A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attest {
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub quote: QuoteAttest,
}

impl Attest {
    /// Parses TPMS_ATTEST bytes (the buffer of a TPM2B_ATTEST). Anything but
    /// a TPM-generated quote is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("attest magic")?;
        let kind = r.u16("attest type")?;
        if magic != GENERATED_VALUE || kind != ST_ATTEST_QUOTE {
            return Err(Error::new(ErrorKind::NotAQuote { magic, kind }));
        }
        let qualified_signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock_info = ClockInfo {
            clock: r.u64("clock")?,
            reset_count: r.u32("resetCount")?,
            restart_count: r.u32("restartCount")?,
            safe: r.u8("safe")? != 0,
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let pcr_select = PcrSelection::read(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest")?.to_vec();
        r.finish("trailing bytes after TPMS_ATTEST")?;
        Ok(Attest {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            quote: QuoteAttest {
                pcr_select,
                pcr_digest,
            },
        })
    }
}

/// TPMT_SIGNATURE for the schemes an AK can have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5 or RSA-PSS (`alg`), with the signature bytes.
    Rsa {
        alg: u16,
        hash: HashAlg,
        sig: Vec<u8>,
    },
    /// ECDSA with r and s.
    Ecdsa {
        hash: HashAlg,
        r: Vec<u8>,
        s: Vec<u8>,
    },
}

impl Signature {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let s = Self::read(&mut r)?;
        r.finish("trailing bytes after TPMT_SIGNATURE")?;
        Ok(s)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let alg = r.u16("signature algorithm")?;
        match alg {
            ALG_RSASSA | ALG_RSAPSS => {
                let hash = HashAlg::from_alg_id(r.u16("signature hash")?)?;
                let sig = r.tpm2b("RSA signature")?.to_vec();
                Ok(Signature::Rsa { alg, hash, sig })
            }
            ALG_ECDSA => {
                let hash = HashAlg::from_alg_id(r.u16("signature hash")?)?;
                let rr = r.tpm2b("ECDSA r")?.to_vec();
                let s = r.tpm2b("ECDSA s")?.to_vec();
                Ok(Signature::Ecdsa { hash, r: rr, s })
            }
            other => Err(Error::new(ErrorKind::Unsupported {
                what: "signature algorithm",
                value: other as u32,
            })),
        }
    }

    /// The TPMT_SIGNATURE wire bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut w = Writer::unbounded(&mut out);
        match self {
            Signature::Rsa { alg, hash, sig } => {
                w.u16(*alg);
                w.u16(hash.alg_id());
                w.tpm2b(sig)?;
            }
            Signature::Ecdsa { hash, r, s } => {
                w.u16(ALG_ECDSA);
                w.u16(hash.alg_id());
                w.tpm2b(r)?;
                w.tpm2b(s)?;
            }
        }
        w.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A quote TPMS_ATTEST captured from swtpm 0.7.1 (sha256:0,1 with nonce 0x0102).
    pub(crate) fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&[0xff, 0x54, 0x43, 0x47, 0x80, 0x18]);
        v.extend_from_slice(&[0x00, 0x22, 0x00, 0x0b]);
        v.extend_from_slice(&[0xab; 32]);
        v.extend_from_slice(&[0x00, 0x02, 0x01, 0x02]);
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
        v.extend_from_slice(&[0x20, 0x19, 0x10, 0x23, 0x00, 0x16, 0x36, 0x36]);
        v.extend_from_slice(&[0, 0, 0, 1, 0, 0x0b, 3, 3, 0, 0]);
        v.extend_from_slice(&[0x00, 0x20]);
        v.extend_from_slice(&[0xcd; 32]);
        v
    }

    #[test]
    fn quote_attest_fields_decode() {
        let a = Attest::parse(&sample()).unwrap();
        assert_eq!(a.extra_data, [1, 2]);
        assert_eq!(a.clock_info.clock, 0x1000);
        assert_eq!(a.clock_info.reset_count, 1);
        assert!(a.clock_info.safe);
        assert_eq!(
            a.quote.pcr_select,
            PcrSelection::parse("sha256:0,1").unwrap()
        );
        assert_eq!(a.quote.pcr_digest, [0xcd; 32]);
    }

    #[test]
    fn every_truncation_of_an_attest_is_an_error() {
        let s = sample();
        for n in 0..s.len() {
            assert!(Attest::parse(&s[..n]).is_err());
        }
    }

    #[test]
    fn non_quote_attest_is_refused() {
        let mut s = sample();
        s[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        assert_eq!(
            Attest::parse(&s),
            Err(Error::new(ErrorKind::NotAQuote {
                magic: GENERATED_VALUE,
                kind: 0x8017
            }))
        );
    }
}
