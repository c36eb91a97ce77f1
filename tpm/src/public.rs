//! TPMT_PUBLIC: parse, emit, Name, and the templates Ember creates keys from.
//!
//! Public areas travel between node and server as their TPMT_PUBLIC wire
//! bytes ([`PublicArea::to_bytes`] / [`PublicArea::from_bytes`]); the Name is
//! computed over exactly those bytes.

use crate::consts::*;
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};
use crate::ErrorKind;
use alloc::vec::Vec;

/// TPMA_OBJECT bits (Part 2 §8.3).
pub mod attributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}
use attributes as a;

/// TPMT_SYM_DEF_OBJECT when not TPM_ALG_NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymDef {
    pub alg: u16,
    pub key_bits: u16,
    pub mode: u16,
}

/// A scheme: algorithm plus hash (TPM_ALG_NULL has no hash). ECDAA's count
/// and XOR's KDF are carried in `extra`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    pub alg: u16,
    pub hash: u16,
    pub extra: u16,
}

impl Scheme {
    pub const NULL: Scheme = Scheme {
        alg: ALG_NULL,
        hash: 0,
        extra: 0,
    };
    pub fn with_hash(alg: u16, hash: HashAlg) -> Self {
        Scheme {
            alg,
            hash: hash.alg_id(),
            extra: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicParams {
    Rsa {
        symmetric: Option<SymDef>,
        scheme: Scheme,
        key_bits: u16,
        exponent: u32,
    },
    Ecc {
        symmetric: Option<SymDef>,
        scheme: Scheme,
        curve: u16,
        kdf: Scheme,
    },
    KeyedHash {
        scheme: Scheme,
    },
    SymCipher {
        symmetric: SymDef,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EccPoint {
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unique {
    /// RSA modulus.
    Rsa(Vec<u8>),
    Ecc(EccPoint),
    /// KEYEDHASH and SYMCIPHER: a digest.
    Digest(Vec<u8>),
}

/// A TPMT_PUBLIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicArea {
    pub name_alg: HashAlg,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub params: PublicParams,
    pub unique: Unique,
}

fn read_sym(r: &mut Reader<'_>) -> Result<Option<SymDef>> {
    let alg = r.u16("symmetric algorithm")?;
    if alg == ALG_NULL {
        return Ok(None);
    }
    let key_bits = r.u16("symmetric key bits")?;
    let mode = r.u16("symmetric mode")?;
    Ok(Some(SymDef {
        alg,
        key_bits,
        mode,
    }))
}

fn write_sym(w: &mut Writer<'_>, s: &Option<SymDef>) {
    match s {
        None => w.u16(ALG_NULL),
        Some(s) => {
            w.u16(s.alg);
            w.u16(s.key_bits);
            w.u16(s.mode);
        }
    }
}

fn read_scheme(r: &mut Reader<'_>) -> Result<Scheme> {
    let alg = r.u16("scheme")?;
    if alg == ALG_NULL {
        return Ok(Scheme::NULL);
    }
    let hash = r.u16("scheme hash")?;
    let extra = if alg == ALG_ECDAA || alg == ALG_XOR {
        r.u16("scheme count/kdf")?
    } else {
        0
    };
    Ok(Scheme { alg, hash, extra })
}

fn write_scheme(w: &mut Writer<'_>, s: &Scheme) {
    w.u16(s.alg);
    if s.alg != ALG_NULL {
        w.u16(s.hash);
        if s.alg == ALG_ECDAA || s.alg == ALG_XOR {
            w.u16(s.extra);
        }
    }
}

impl PublicArea {
    /// Parses TPMT_PUBLIC bytes; the whole slice must be consumed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let p = Self::read(&mut r)?;
        r.finish("trailing bytes after TPMT_PUBLIC")?;
        Ok(p)
    }

    /// Parses a TPM2B_PUBLIC (u16 size, then TPMT_PUBLIC).
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b("TPM2B_PUBLIC")?;
        r.finish("trailing bytes after TPM2B_PUBLIC")?;
        Self::from_bytes(inner)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let kind = r.u16("public type")?;
        let name_alg = HashAlg::from_alg_id(r.u16("nameAlg")?)?;
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b("authPolicy")?.to_vec();
        let (params, unique) = match kind {
            ALG_RSA => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r)?;
                let key_bits = r.u16("RSA keyBits")?;
                let exponent = r.u32("RSA exponent")?;
                let n = r.tpm2b("RSA modulus")?.to_vec();
                (
                    PublicParams::Rsa {
                        symmetric,
                        scheme,
                        key_bits,
                        exponent,
                    },
                    Unique::Rsa(n),
                )
            }
            ALG_ECC => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r)?;
                let curve = r.u16("ECC curve")?;
                let kdf = read_scheme(r)?;
                let x = r.tpm2b("ECC x")?.to_vec();
                let y = r.tpm2b("ECC y")?.to_vec();
                (
                    PublicParams::Ecc {
                        symmetric,
                        scheme,
                        curve,
                        kdf,
                    },
                    Unique::Ecc(EccPoint { x, y }),
                )
            }
            ALG_KEYEDHASH => {
                let scheme = read_scheme(r)?;
                let d = r.tpm2b("keyedHash unique")?.to_vec();
                (PublicParams::KeyedHash { scheme }, Unique::Digest(d))
            }
            ALG_SYMCIPHER => {
                let symmetric = read_sym(r)?.ok_or(Error::new(ErrorKind::Malformed {
                    what: "symcipher without cipher",
                    offset: r.position(),
                }))?;
                let d = r.tpm2b("symcipher unique")?.to_vec();
                (PublicParams::SymCipher { symmetric }, Unique::Digest(d))
            }
            other => {
                return Err(Error::new(ErrorKind::Unsupported {
                    what: "public area type",
                    value: other as u32,
                }))
            }
        };
        Ok(PublicArea {
            name_alg,
            attributes,
            auth_policy,
            params,
            unique,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        let kind = match self.params {
            PublicParams::Rsa { .. } => ALG_RSA,
            PublicParams::Ecc { .. } => ALG_ECC,
            PublicParams::KeyedHash { .. } => ALG_KEYEDHASH,
            PublicParams::SymCipher { .. } => ALG_SYMCIPHER,
        };
        w.u16(kind);
        w.u16(self.name_alg.alg_id());
        w.u32(self.attributes);
        w.tpm2b(&self.auth_policy)?;
        match &self.params {
            PublicParams::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
            } => {
                write_sym(w, symmetric);
                write_scheme(w, scheme);
                w.u16(*key_bits);
                w.u32(*exponent);
            }
            PublicParams::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
            } => {
                write_sym(w, symmetric);
                write_scheme(w, scheme);
                w.u16(*curve);
                write_scheme(w, kdf);
            }
            PublicParams::KeyedHash { scheme } => write_scheme(w, scheme),
            PublicParams::SymCipher { symmetric } => write_sym(w, &Some(*symmetric)),
        }
        match (&self.params, &self.unique) {
            (PublicParams::Rsa { .. }, Unique::Rsa(n)) => w.tpm2b(n)?,
            (PublicParams::Ecc { .. }, Unique::Ecc(p)) => {
                w.tpm2b(&p.x)?;
                w.tpm2b(&p.y)?;
            }
            (
                PublicParams::KeyedHash { .. } | PublicParams::SymCipher { .. },
                Unique::Digest(d),
            ) => w.tpm2b(d)?,
            _ => {
                return Err(Error::new(ErrorKind::InvalidArgument {
                    what: "unique field does not match the key type",
                }))
            }
        }
        Ok(())
    }

    /// The TPMT_PUBLIC wire bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut w = Writer::unbounded(&mut out);
        self.write(&mut w)?;
        w.finish()?;
        Ok(out)
    }

    /// The object's Name: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Result<Vec<u8>> {
        name_of(&self.to_bytes()?)
    }

    /// The RSA public exponent with 0 meaning the default 65537.
    pub fn rsa_exponent(&self) -> Option<u32> {
        match self.params {
            PublicParams::Rsa { exponent: 0, .. } => Some(65537),
            PublicParams::Rsa { exponent, .. } => Some(exponent),
            _ => None,
        }
    }
}

/// Name of an object from its TPMT_PUBLIC bytes (Part 1 §16).
pub fn name_of(public_bytes: &[u8]) -> Result<Vec<u8>> {
    let mut r = Reader::new(public_bytes);
    r.u16("public type")?;
    let alg = HashAlg::from_alg_id(r.u16("nameAlg")?)?;
    let digest = alg.digest(&[public_bytes])?;
    let mut name = Vec::with_capacity(2 + digest.len());
    name.extend_from_slice(&alg.alg_id().to_be_bytes());
    name.extend_from_slice(&digest);
    Ok(name)
}

/// The TCG EK Credential Profile templates (v2.5, Appendix B). Each yields the
/// same key the manufacturer certified, so its public key matches the EK
/// certificate at the template's NV index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EkTemplate {
    /// Template L-1: RSA 2048, SHA-256, AES-128-CFB; certificate at 0x01c00002.
    Rsa2048,
    /// Template L-2: ECC NIST P-256, SHA-256, AES-128-CFB; certificate at 0x01c0000a.
    EccP256,
    /// Template H-3: ECC NIST P-384, SHA-384, AES-256-CFB; certificate at
    /// 0x01c00016 (what `swtpm_setup --create-ek-cert` writes for ECC).
    EccP384,
}

/// PolicyA (SHA-256): PolicySecret(TPM_RH_ENDORSEMENT).
const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];
/// PolicyB (SHA-384): PolicyOR of PolicySecret(endorsement) and an NV-based
/// branch; used by the high-range templates.
const POLICY_B_SHA384: [u8; 48] = [
    0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC, 0xF5, 0xFD, 0x3A, 0x1A,
    0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4, 0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA,
    0xCB, 0x47, 0xBA, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
];

impl EkTemplate {
    /// NV index of the manufacturer's certificate for this template's key.
    pub fn certificate_nv_index(self) -> u32 {
        match self {
            EkTemplate::Rsa2048 => EK_CERT_RSA_NV_INDEX,
            EkTemplate::EccP256 => EK_CERT_ECC_NV_INDEX,
            EkTemplate::EccP384 => EK_CERT_ECC_P384_NV_INDEX,
        }
    }
}

/// The public template for an EK.
pub fn ek_template(t: EkTemplate) -> PublicArea {
    let low = a::FIXED_TPM
        | a::FIXED_PARENT
        | a::SENSITIVE_DATA_ORIGIN
        | a::ADMIN_WITH_POLICY
        | a::RESTRICTED
        | a::DECRYPT;
    let aes128 = Some(SymDef {
        alg: ALG_AES,
        key_bits: 128,
        mode: ALG_CFB,
    });
    match t {
        EkTemplate::Rsa2048 => PublicArea {
            name_alg: HashAlg::Sha256,
            attributes: low,
            auth_policy: POLICY_A_SHA256.to_vec(),
            params: PublicParams::Rsa {
                symmetric: aes128,
                scheme: Scheme::NULL,
                key_bits: 2048,
                exponent: 0,
            },
            unique: Unique::Rsa(alloc::vec![0u8; 256]),
        },
        EkTemplate::EccP256 => PublicArea {
            name_alg: HashAlg::Sha256,
            attributes: low,
            auth_policy: POLICY_A_SHA256.to_vec(),
            params: PublicParams::Ecc {
                symmetric: aes128,
                scheme: Scheme::NULL,
                curve: ECC_NIST_P256,
                kdf: Scheme::NULL,
            },
            unique: Unique::Ecc(EccPoint {
                x: alloc::vec![0u8; 32],
                y: alloc::vec![0u8; 32],
            }),
        },
        EkTemplate::EccP384 => PublicArea {
            name_alg: HashAlg::Sha384,
            attributes: low | a::USER_WITH_AUTH,
            auth_policy: POLICY_B_SHA384.to_vec(),
            params: PublicParams::Ecc {
                symmetric: Some(SymDef {
                    alg: ALG_AES,
                    key_bits: 256,
                    mode: ALG_CFB,
                }),
                scheme: Scheme::NULL,
                curve: ECC_NIST_P384,
                kdf: Scheme::NULL,
            },
            unique: Unique::Ecc(EccPoint::default()),
        },
    }
}

/// Attestation key kinds Ember creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AkKind {
    /// RSA 2048, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048,
    /// ECC P-256, ECDSA with SHA-256 (fast to create).
    EccP256,
}

/// A restricted signing key: fixedTPM, fixedParent, sensitiveDataOrigin,
/// userWithAuth, restricted, sign; it can only sign TPM-generated data
/// (quotes), which is what makes its quotes trustworthy.
pub fn ak_template(kind: AkKind) -> PublicArea {
    let attrs = a::FIXED_TPM
        | a::FIXED_PARENT
        | a::SENSITIVE_DATA_ORIGIN
        | a::USER_WITH_AUTH
        | a::RESTRICTED
        | a::SIGN;
    match kind {
        AkKind::Rsa2048 => PublicArea {
            name_alg: HashAlg::Sha256,
            attributes: attrs,
            auth_policy: Vec::new(),
            params: PublicParams::Rsa {
                symmetric: None,
                scheme: Scheme::with_hash(ALG_RSASSA, HashAlg::Sha256),
                key_bits: 2048,
                exponent: 0,
            },
            unique: Unique::Rsa(Vec::new()),
        },
        AkKind::EccP256 => PublicArea {
            name_alg: HashAlg::Sha256,
            attributes: attrs,
            auth_policy: Vec::new(),
            params: PublicParams::Ecc {
                symmetric: None,
                scheme: Scheme::with_hash(ALG_ECDSA, HashAlg::Sha256),
                curve: ECC_NIST_P256,
                kdf: Scheme::NULL,
            },
            unique: Unique::Ecc(EccPoint::default()),
        },
    }
}

/// A primary storage key (ECC P-256, AES-128-CFB, noDA) in the owner
/// hierarchy, parent of AKs and sealed objects. Same template as
/// `tpm2_createprimary -C o -G ecc`, so both tools derive the same key.
pub fn srk_template() -> PublicArea {
    PublicArea {
        name_alg: HashAlg::Sha256,
        attributes: a::FIXED_TPM
            | a::FIXED_PARENT
            | a::SENSITIVE_DATA_ORIGIN
            | a::USER_WITH_AUTH
            | a::NO_DA
            | a::RESTRICTED
            | a::DECRYPT,
        auth_policy: Vec::new(),
        params: PublicParams::Ecc {
            symmetric: Some(SymDef {
                alg: ALG_AES,
                key_bits: 128,
                mode: ALG_CFB,
            }),
            scheme: Scheme::NULL,
            curve: ECC_NIST_P256,
            kdf: Scheme::NULL,
        },
        unique: Unique::Ecc(EccPoint::default()),
    }
}

/// A sealed data object usable only through `policy` (no userWithAuth):
/// KEYEDHASH with a NULL scheme, fixedTPM and fixedParent.
pub fn sealed_object_template(policy: &[u8]) -> PublicArea {
    PublicArea {
        name_alg: HashAlg::Sha256,
        attributes: a::FIXED_TPM | a::FIXED_PARENT,
        auth_policy: policy.to_vec(),
        params: PublicParams::KeyedHash {
            scheme: Scheme::NULL,
        },
        unique: Unique::Digest(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_round_trip_through_wire_bytes() {
        for p in [
            ek_template(EkTemplate::Rsa2048),
            ek_template(EkTemplate::EccP256),
            ek_template(EkTemplate::EccP384),
            ak_template(AkKind::Rsa2048),
            ak_template(AkKind::EccP256),
            srk_template(),
            sealed_object_template(&[7; 32]),
        ] {
            let bytes = p.to_bytes().unwrap();
            assert_eq!(PublicArea::from_bytes(&bytes).unwrap(), p);
        }
    }

    #[test]
    fn rsa_ek_template_encodes_as_the_profile_lists_it() {
        let b = ek_template(EkTemplate::Rsa2048).to_bytes().unwrap();
        // type RSA, nameAlg SHA256, attributes 0x000300b2, 32-byte policy.
        assert_eq!(
            &b[..10],
            &[0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x00, 0xb2, 0x00, 0x20]
        );
        // AES 128 CFB, NULL scheme, 2048 bits, exponent 0, 256-byte unique.
        assert_eq!(
            &b[42..58],
            &[0, 6, 0, 0x80, 0, 0x43, 0, 0x10, 0x08, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(b.len(), 58 + 256);
    }

    #[test]
    fn name_is_name_alg_then_digest_of_public_bytes() {
        let p = ak_template(AkKind::EccP256);
        let bytes = p.to_bytes().unwrap();
        let name = p.name().unwrap();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(
            &name[2..],
            HashAlg::Sha256.digest(&[&bytes]).unwrap().as_slice()
        );
    }

    #[test]
    fn truncated_public_area_is_an_error() {
        let b = ek_template(EkTemplate::EccP256).to_bytes().unwrap();
        for n in 0..b.len() {
            assert!(
                PublicArea::from_bytes(&b[..n]).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
    }
}
