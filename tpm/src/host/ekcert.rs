//! EK certificates: chain validation to configured manufacturer CAs and
//! comparison of the certified key with the TPM's EK public area.

use crate::consts::{ECC_NIST_P256, ECC_NIST_P384};
use crate::error::{Error, Result};
use crate::public::{PublicArea, PublicParams, Unique};
use crate::ErrorKind;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use der::{Decode, Encode};
use spki::ObjectIdentifier;
use x509_cert::Certificate;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// tcg-kp-EKCertificate: the extended key usage of an EK certificate.
const TCG_KP_EK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");
/// Extensions a chain may mark critical: those checked here and the ones
/// TCG EK profiles mark critical (subjectAltName holds the TPM's
/// manufacturer, model and version when the subject is empty).
const UNDERSTOOD_CRITICAL: [ObjectIdentifier; 6] = [
    BASIC_CONSTRAINTS,
    KEY_USAGE,
    EXT_KEY_USAGE,
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName
    ObjectIdentifier::new_unwrap("2.5.29.32"), // certificatePolicies
    ObjectIdentifier::new_unwrap("2.5.29.9"),  // subjectDirectoryAttributes
];
const MIN_RSA_BITS: usize = 2048;
const MAX_CHAIN: usize = 8;

/// `what` of the [`ErrorKind::Certificate`] each chain check returns, so a
/// verifier can tell the client which check failed.
pub const EKU_CHECK: &str = "extended key usage";
pub const CA_KEY_USAGE_CHECK: &str = "CA key usage";
pub const PATH_LEN_CHECK: &str = "path length";
pub const CRITICAL_EXTENSION_CHECK: &str = "critical extension";
pub const RSA_SIZE_CHECK: &str = "RSA key size";

/// The key an EK certificate certifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EkCertKey {
    Rsa { modulus: Vec<u8>, exponent: u32 },
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
}

/// A parsed EK certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EkCertificate {
    /// The certificate's DER, without NV padding.
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    pub key: EkCertKey,
}

fn cert_err(what: &'static str) -> impl Fn(der::Error) -> Error {
    move |e| {
        Error::new(ErrorKind::Certificate {
            what,
            detail: e.to_string().into(),
        })
    }
}

/// Drops bytes after the outer DER SEQUENCE (TPM NV indices are often
/// larger than the certificate and padded).
fn der_trim(der: &[u8]) -> &[u8] {
    if der.len() < 2 || der[0] != 0x30 {
        return der;
    }
    let (len, hdr) = match der[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 if der.len() >= 3 => (der[2] as usize, 3),
        0x82 if der.len() >= 4 => (((der[2] as usize) << 8) | der[3] as usize, 4),
        0x83 if der.len() >= 5 => (
            ((der[2] as usize) << 16) | ((der[3] as usize) << 8) | der[4] as usize,
            5,
        ),
        _ => return der,
    };
    der.get(..hdr + len).unwrap_or(der)
}

fn decode(der: &[u8]) -> Result<Certificate> {
    Certificate::from_der(der_trim(der)).map_err(cert_err("DER"))
}

/// Splits PEM text (one or more CERTIFICATE blocks) or passes DER through.
pub fn certificates_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    if bytes.first() == Some(&0x30) {
        return Ok(alloc::vec![der_trim(bytes).to_vec()]);
    }
    let certs = Certificate::load_pem_chain(bytes).map_err(cert_err("PEM"))?;
    certs
        .iter()
        .map(|c| c.to_der().map_err(cert_err("DER encode")))
        .collect()
}

fn key_of(cert: &Certificate) -> Result<EkCertKey> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let raw = spki.subject_public_key.raw_bytes();
    if spki.algorithm.oid == RSA_ENCRYPTION {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::traits::PublicKeyParts;
        let k = rsa::RsaPublicKey::from_pkcs1_der(raw).map_err(|e| {
            Error::new(ErrorKind::Certificate {
                what: "RSA key",
                detail: e.to_string().into(),
            })
        })?;
        let e = k.e().to_bytes_be();
        if e.len() > 4 {
            return Err(Error::new(ErrorKind::Unsupported {
                what: "RSA exponent length",
                value: e.len() as u32,
            }));
        }
        let exponent = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        return Ok(EkCertKey::Rsa {
            modulus: k.n().to_bytes_be(),
            exponent,
        });
    }
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let curve_oid: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or(Error::new(ErrorKind::Certificate {
                what: "EC key",
                detail: "no curve parameter".into(),
            }))?
            .decode_as()
            .map_err(cert_err("EC curve"))?;
        let (curve, len) = if curve_oid == SECP256R1 {
            (ECC_NIST_P256, 32)
        } else if curve_oid == SECP384R1 {
            (ECC_NIST_P384, 48)
        } else {
            return Err(Error::new(ErrorKind::Certificate {
                what: "EC curve",
                detail: curve_oid.to_string().into(),
            }));
        };
        if raw.len() != 1 + 2 * len || raw[0] != 4 {
            return Err(Error::new(ErrorKind::Certificate {
                what: "EC point",
                detail: "not an uncompressed point".into(),
            }));
        }
        return Ok(EkCertKey::Ecc {
            curve,
            x: raw[1..1 + len].to_vec(),
            y: raw[1 + len..].to_vec(),
        });
    }
    Err(Error::new(ErrorKind::Certificate {
        what: "key algorithm",
        detail: spki.algorithm.oid.to_string().into(),
    }))
}

/// Parses an EK certificate (no chain validation).
pub fn parse_ek_certificate(der: &[u8]) -> Result<EkCertificate> {
    let cert = decode(der)?;
    Ok(EkCertificate {
        der: der_trim(der).to_vec(),
        subject: cert.tbs_certificate.subject.to_string(),
        issuer: cert.tbs_certificate.issuer.to_string(),
        key: key_of(&cert)?,
    })
}

/// Checks that `issuer`'s key made `cert`'s signature.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> Result<()> {
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(cert_err("TBS encode"))?;
    let sig = cert.signature.raw_bytes();
    let alg = cert.signature_algorithm.oid;
    let bad = Error::new(ErrorKind::BadSignature {
        what: "certificate",
    });
    match key_of(issuer)? {
        EkCertKey::Rsa { modulus, exponent } => {
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&modulus),
                rsa::BigUint::from(exponent),
            )
            .map_err(|_| {
                Error::new(ErrorKind::Crypto {
                    what: "issuer RSA key",
                })
            })?;
            let (scheme, digest) = if alg == SHA256_WITH_RSA {
                (
                    rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    crate::HashAlg::Sha256.digest(&[&tbs])?,
                )
            } else if alg == SHA384_WITH_RSA {
                (
                    rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    crate::HashAlg::Sha384.digest(&[&tbs])?,
                )
            } else {
                return Err(Error::new(ErrorKind::Certificate {
                    what: "signature algorithm",
                    detail: alg.to_string().into(),
                }));
            };
            key.verify(scheme, &digest, sig).map_err(|_| bad)
        }
        EkCertKey::Ecc { curve, x, y } => {
            use ecdsa::signature::hazmat::PrehashVerifier;
            let digest = if alg == ECDSA_SHA256 {
                crate::HashAlg::Sha256.digest(&[&tbs])?
            } else if alg == ECDSA_SHA384 {
                crate::HashAlg::Sha384.digest(&[&tbs])?
            } else {
                return Err(Error::new(ErrorKind::Certificate {
                    what: "signature algorithm",
                    detail: alg.to_string().into(),
                }));
            };
            let mut sec1 = alloc::vec![4u8];
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            match curve {
                ECC_NIST_P256 => {
                    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| {
                        Error::new(ErrorKind::Crypto {
                            what: "issuer EC key",
                        })
                    })?;
                    let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad.clone_sig())?;
                    vk.verify_prehash(&digest, &s).map_err(|_| bad)
                }
                _ => {
                    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| {
                        Error::new(ErrorKind::Crypto {
                            what: "issuer EC key",
                        })
                    })?;
                    let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad.clone_sig())?;
                    vk.verify_prehash(&digest, &s).map_err(|_| bad)
                }
            }
        }
    }
}

impl Error {
    fn clone_sig(&self) -> Error {
        Error::new(ErrorKind::BadSignature {
            what: "certificate",
        })
    }
}

fn is_ca(cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::BasicConstraints;
    cert.tbs_certificate.extensions.iter().flatten().any(|e| {
        e.extn_id == BASIC_CONSTRAINTS
            && BasicConstraints::from_der(e.extn_value.as_bytes())
                .map(|b| b.ca)
                .unwrap_or(false)
    })
}

fn extension(cert: &Certificate, oid: ObjectIdentifier) -> Option<&x509_cert::ext::Extension> {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid)
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

/// No critical extension this verifier does not understand (RFC 5280 4.2).
fn check_critical(cert: &Certificate) -> Result<()> {
    match cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.critical && !UNDERSTOOD_CRITICAL.contains(&e.extn_id))
    {
        Some(e) => Err(Error::new(ErrorKind::Certificate {
            what: CRITICAL_EXTENSION_CHECK,
            detail: alloc::format!(
                "{}: unknown critical extension {}",
                subject(cert),
                e.extn_id
            )
            .into(),
        })),
        None => Ok(()),
    }
}

/// RSA keys of at least 2048 bits anywhere in the chain.
fn check_key_size(cert: &Certificate) -> Result<()> {
    if let EkCertKey::Rsa { modulus, .. } = key_of(cert)? {
        let bits = modulus
            .iter()
            .position(|b| *b != 0)
            .map(|i| (modulus.len() - i) * 8 - modulus[i].leading_zeros() as usize)
            .unwrap_or(0);
        if bits < MIN_RSA_BITS {
            return Err(Error::new(ErrorKind::Certificate {
                what: RSA_SIZE_CHECK,
                detail: alloc::format!(
                    "{}: RSA key of {bits} bits (at least {MIN_RSA_BITS})",
                    subject(cert)
                )
                .into(),
            }));
        }
    }
    Ok(())
}

/// The EK certificate's extended key usage must name tcg-kp-EKCertificate.
fn check_ek_usage(cert: &Certificate) -> Result<()> {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    let ok = extension(cert, EXT_KEY_USAGE)
        .and_then(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|eku| eku.0.contains(&TCG_KP_EK_CERTIFICATE));
    if ok {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Certificate {
            what: EKU_CHECK,
            detail: alloc::format!(
                "{}: extended key usage lacks tcg-kp-EKCertificate (2.23.133.8.1)",
                subject(cert)
            )
            .into(),
        }))
    }
}

/// An issuer must be allowed to sign certificates (keyUsage keyCertSign)
/// and its path length constraint must allow the `below` CA certificates
/// between it and the EK certificate.
fn check_issuer(ca: &Certificate, below: usize) -> Result<()> {
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
    let sign = extension(ca, KEY_USAGE)
        .and_then(|e| KeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|ku| ku.0.contains(KeyUsages::KeyCertSign));
    if !sign {
        return Err(Error::new(ErrorKind::Certificate {
            what: CA_KEY_USAGE_CHECK,
            detail: alloc::format!("{}: CA without keyUsage keyCertSign", subject(ca)).into(),
        }));
    }
    let path_len = extension(ca, BASIC_CONSTRAINTS)
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|b| b.path_len_constraint);
    if let Some(max) = path_len {
        if below > max as usize {
            return Err(Error::new(ErrorKind::Certificate {
                what: PATH_LEN_CHECK,
                detail: alloc::format!(
                    "{}: pathLenConstraint {max}, {below} CA certificates below it",
                    subject(ca)
                )
                .into(),
            }));
        }
    }
    Ok(())
}

fn check_validity(cert: &Certificate, now: core::time::Duration) -> Result<()> {
    let v = &cert.tbs_certificate.validity;
    if now < v.not_before.to_unix_duration() || now > v.not_after.to_unix_duration() {
        return Err(Error::new(ErrorKind::CertificateExpired {
            subject: cert.tbs_certificate.subject.to_string().into(),
        }));
    }
    Ok(())
}

/// Validates `cert_der` (an EK certificate as read from NV) up to a
/// self-signed root among `ca_ders` (DER certificates: the manufacturer's
/// roots and intermediates, e.g. swtpm's /var/lib/swtpm-localca/issuercert.pem
/// and swtpm-localca-rootca-cert.pem). Every issuer must be a CA allowed to
/// sign certificates within its path length, every signature must verify,
/// every certificate must be within its validity period now, have no
/// critical extension this code does not understand and no RSA key under
/// 2048 bits; the EK certificate's extended key usage must be
/// tcg-kp-EKCertificate. Returns the parsed EK certificate.
pub fn verify_ek_certificate(cert_der: &[u8], ca_ders: &[Vec<u8>]) -> Result<EkCertificate> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let leaf = decode(cert_der)?;
    let cas: Vec<Certificate> = ca_ders.iter().map(|d| decode(d)).collect::<Result<_>>()?;
    check_validity(&leaf, now)?;
    check_critical(&leaf)?;
    check_key_size(&leaf)?;
    check_ek_usage(&leaf)?;
    let mut current = leaf.clone();
    for below in 0..MAX_CHAIN {
        let issuer_name = current
            .tbs_certificate
            .issuer
            .to_der()
            .map_err(cert_err("issuer"))?;
        let issuer = cas.iter().find(|c| {
            c.tbs_certificate
                .subject
                .to_der()
                .map(|s| s == issuer_name)
                .unwrap_or(false)
                && is_ca(c)
                && signed_by(&current, c).is_ok()
        });
        let Some(issuer) = issuer else {
            return Err(Error::new(ErrorKind::UntrustedChain {
                subject: current.tbs_certificate.subject.to_string().into(),
            }));
        };
        check_validity(issuer, now)?;
        check_critical(issuer)?;
        check_key_size(issuer)?;
        check_issuer(issuer, below)?;
        if issuer.tbs_certificate.subject == issuer.tbs_certificate.issuer {
            signed_by(issuer, issuer)?;
            return parse_ek_certificate(cert_der);
        }
        current = issuer.clone();
    }
    Err(Error::new(ErrorKind::UntrustedChain {
        subject: leaf.tbs_certificate.subject.to_string().into(),
    }))
}

/// Checks that the certificate certifies exactly the TPM's EK `ek`.
pub fn ek_certificate_matches(cert: &EkCertificate, ek: &PublicArea) -> Result<()> {
    let strip = |v: &[u8]| -> Vec<u8> { v.iter().skip_while(|b| **b == 0).copied().collect() };
    let same = match (&cert.key, &ek.params, &ek.unique) {
        (EkCertKey::Rsa { modulus, exponent }, PublicParams::Rsa { .. }, Unique::Rsa(n)) => {
            strip(modulus) == strip(n) && Some(*exponent) == ek.rsa_exponent()
        }
        (EkCertKey::Ecc { curve, x, y }, PublicParams::Ecc { curve: c, .. }, Unique::Ecc(p)) => {
            curve == c && strip(x) == strip(&p.x) && strip(y) == strip(&p.y)
        }
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(ErrorKind::EkKeyMismatch.into())
    }
}
