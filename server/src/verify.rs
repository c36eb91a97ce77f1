//! The TPM-specific checks of attestation, delegated to `ember-tpm`'s host
//! side: EK identity and certificate chains, AK attributes, MakeCredential
//! and quote verification. This module only maps their results onto the
//! protocol's refusal reasons.

use std::path::Path;

use anyhow::{Context, Result};
use ember_proto::msg::PcrSelection;
use ember_tpm::host;
use ember_tpm::{attributes as a, HashAlg, PcrValue, PcrValues, PublicArea, PublicParams, Unique};

#[derive(Debug)]
pub enum VerifyError {
    Malformed(String),
    /// `reason` names the failed check (the client sees it).
    BadEkCertificate {
        reason: &'static str,
        detail: String,
    },
    EkMismatch,
    BadAkAttributes {
        reason: &'static str,
        detail: String,
    },
    BadSignature(String),
    /// The AK's Name is a SHA-1 digest (a second key could share it).
    Sha1AkName,
    /// The quote is signed over a SHA-1 digest.
    Sha1Quote,
    StaleNonce,
    PcrDigestMismatch(String),
    Internal(String),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Malformed(d) => write!(f, "malformed TPM structure: {d}"),
            VerifyError::BadEkCertificate { reason, detail } => {
                write!(f, "EK certificate not trusted ({reason}): {detail}")
            }
            VerifyError::EkMismatch => write!(f, "EK certificate does not certify this EK"),
            VerifyError::BadAkAttributes { reason, detail } => {
                write!(f, "AK refused ({reason}): {detail}")
            }
            VerifyError::Sha1AkName => write!(f, "AK refused: its Name algorithm is SHA-1"),
            VerifyError::Sha1Quote => write!(f, "quote refused: signed over a SHA-1 digest"),
            VerifyError::BadSignature(d) => write!(f, "quote signature does not verify: {d}"),
            VerifyError::StaleNonce => write!(f, "quote does not carry this session's nonce"),
            VerifyError::PcrDigestMismatch(d) => {
                write!(f, "PCR values do not match the quote: {d}")
            }
            VerifyError::Internal(d) => write!(f, "internal: {d}"),
        }
    }
}

/// Attributes an AK must have: a restricted signing key that cannot leave
/// this TPM and dies with this boot.
const AK_REQUIRED: u32 = a::FIXED_TPM
    | a::FIXED_PARENT
    | a::SENSITIVE_DATA_ORIGIN
    | a::RESTRICTED
    | a::SIGN
    | a::ST_CLEAR;

pub struct Verifier {
    manufacturer_cas: Vec<Vec<u8>>,
}

use ember_proto::keys::{
    ek_hash_ecc as key_hash_ecc, ek_hash_rsa as key_hash_rsa, strip_zeros as strip,
};

/// The EK's identity: SHA-256 over its public key (not its template), so an
/// EK enrolled from its certificate matches the public area the node sends.
pub fn ek_hash_of_public(ek: &PublicArea) -> Result<[u8; 32], VerifyError> {
    match (&ek.params, &ek.unique) {
        (PublicParams::Rsa { .. }, Unique::Rsa(n)) if !strip(n).is_empty() => {
            Ok(key_hash_rsa(n, ek.rsa_exponent().unwrap_or(65537)))
        }
        (PublicParams::Ecc { curve, .. }, Unique::Ecc(p)) if !strip(&p.x).is_empty() => {
            Ok(key_hash_ecc(*curve, &p.x, &p.y))
        }
        _ => Err(VerifyError::Malformed("EK public area has no key".into())),
    }
}

pub fn ek_hash_of_cert(der: &[u8]) -> Result<[u8; 32], VerifyError> {
    let cert = host::parse_ek_certificate(der).map_err(ek_cert_error)?;
    Ok(match &cert.key {
        host::EkCertKey::Rsa { modulus, exponent } => key_hash_rsa(modulus, *exponent),
        host::EkCertKey::Ecc { curve, x, y } => key_hash_ecc(*curve, x, y),
    })
}

pub fn parse_public(what: &str, bytes: &[u8]) -> Result<PublicArea, VerifyError> {
    PublicArea::from_bytes(bytes).map_err(|e| VerifyError::Malformed(format!("{what}: {e}")))
}

/// Reads manufacturer CA certificates (PEM bundles or DER files).
pub fn load_cas(files: &[impl AsRef<Path>]) -> Result<Vec<Vec<u8>>> {
    let mut cas = Vec::new();
    for f in files {
        let f = f.as_ref();
        let bytes =
            std::fs::read(f).with_context(|| format!("read manufacturer CA {}", f.display()))?;
        let certs = host::certificates_from_pem_or_der(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate found", f.display());
        cas.extend(certs);
    }
    Ok(cas)
}

/// The hash algorithm a TPMT_SIGNATURE names (sigAlg, then hashAlg for the
/// RSASSA, RSAPSS and ECDSA schemes).
fn signature_hash(sig: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(sig.get(2..4)?.try_into().ok()?))
}

/// Maps the TPM library's certificate error onto the check that failed.
fn ek_cert_error(e: ember_tpm::Error) -> VerifyError {
    let reason = match e.kind() {
        ember_tpm::ErrorKind::Certificate { what, .. } => match *what {
            host::EKU_CHECK => "ek-cert-eku",
            host::CA_KEY_USAGE_CHECK => "ek-cert-ca-key-usage",
            host::PATH_LEN_CHECK => "ek-cert-path-len",
            host::CRITICAL_EXTENSION_CHECK => "ek-cert-critical-extension",
            host::RSA_SIZE_CHECK => "ek-cert-rsa-too-small",
            "signature algorithm" => "ek-cert-signature-algorithm",
            _ => "ek-cert-malformed",
        },
        ember_tpm::ErrorKind::CertificateExpired { .. } => "ek-cert-expired",
        ember_tpm::ErrorKind::UntrustedChain { .. } => "ek-cert-untrusted",
        ember_tpm::ErrorKind::BadSignature { .. } => "ek-cert-signature",
        _ => "ek-cert-malformed",
    };
    VerifyError::BadEkCertificate {
        reason,
        detail: e.to_string(),
    }
}

/// What a verified quote says.
pub struct QuoteInfo {
    pub pcrs: PcrSelection,
}

impl Verifier {
    pub fn new(manufacturer_cas: Vec<Vec<u8>>) -> Self {
        Verifier { manufacturer_cas }
    }

    pub fn ek_hash_from_public(&self, ek_public: &[u8]) -> Result<[u8; 32], VerifyError> {
        ek_hash_of_public(&parse_public("EK", ek_public)?)
    }

    /// The EK certificate chains to a manufacturer CA and certifies this EK.
    pub fn verify_ek_certificate(&self, cert: &[u8], ek_public: &[u8]) -> Result<(), VerifyError> {
        if self.manufacturer_cas.is_empty() {
            return Err(VerifyError::BadEkCertificate {
                reason: "ek-cert-no-manufacturer-ca",
                detail: "no manufacturer CA configured".into(),
            });
        }
        let cert =
            host::verify_ek_certificate(cert, &self.manufacturer_cas).map_err(ek_cert_error)?;
        let ek = parse_public("EK", ek_public)?;
        host::ek_certificate_matches(&cert, &ek).map_err(|_| VerifyError::EkMismatch)
    }

    /// Checks the AK's attributes; returns its Name for MakeCredential.
    pub fn check_ak(&self, ak_public: &[u8]) -> Result<Vec<u8>, VerifyError> {
        let ak = parse_public("AK", ak_public)?;
        // The AK's Name binds it in MakeCredential: a SHA-1 Name could be
        // matched by a second key.
        if ak.name_alg == HashAlg::Sha1 {
            return Err(VerifyError::Sha1AkName);
        }
        let missing = AK_REQUIRED & !ak.attributes;
        if missing != 0 {
            return Err(VerifyError::BadAkAttributes {
                reason: "ak-attributes",
                detail: format!(
                    "attributes {:#010x} lack {:#010x} (need restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin, stClear)",
                    ak.attributes, missing
                ),
            });
        }
        if ak.attributes & a::DECRYPT != 0 {
            return Err(VerifyError::BadAkAttributes {
                reason: "ak-decrypt",
                detail: "AK must not be a decryption key".into(),
            });
        }
        ak.name()
            .map_err(|e| VerifyError::Malformed(format!("AK name: {e}")))
    }

    pub fn make_credential(
        &self,
        ek_public: &[u8],
        ak_name: &[u8],
        secret: &[u8; 32],
    ) -> Result<(Vec<u8>, Vec<u8>), VerifyError> {
        let ek = parse_public("EK", ek_public)?;
        if ek.attributes & (a::RESTRICTED | a::DECRYPT) != (a::RESTRICTED | a::DECRYPT) {
            return Err(VerifyError::Malformed(
                "EK is not a restricted decryption key".into(),
            ));
        }
        let c = host::make_credential(&ek, ak_name, secret).map_err(|e| match e.kind() {
            ember_tpm::ErrorKind::InvalidArgument { .. }
            | ember_tpm::ErrorKind::Unsupported { .. }
            | ember_tpm::ErrorKind::Crypto { .. } => {
                VerifyError::Malformed(format!("MakeCredential: {e}"))
            }
            _ => VerifyError::Internal(format!("MakeCredential: {e}")),
        })?;
        Ok((c.credential_blob, c.encrypted_secret))
    }

    /// Verifies the AK's signature over the quote, the nonce, and that
    /// `values` (of the PCRs in `pcrs`, ascending) hash to the quoted digest.
    pub fn verify_quote(
        &self,
        ak_public: &[u8],
        attest: &[u8],
        signature: &[u8],
        nonce: &[u8],
        pcrs: &PcrSelection,
        values: &[Vec<u8>],
    ) -> Result<QuoteInfo, VerifyError> {
        if signature_hash(signature) == Some(HashAlg::Sha1.alg_id()) {
            return Err(VerifyError::Sha1Quote);
        }
        let bank = HashAlg::from_alg_id(pcrs.hash_alg)
            .map_err(|e| VerifyError::Internal(format!("session bank: {e}")))?;
        if values.len() != pcrs.count() {
            return Err(VerifyError::PcrDigestMismatch(format!(
                "{} values for {} PCRs",
                values.len(),
                pcrs.count()
            )));
        }
        let supplied = PcrValues {
            values: pcrs
                .indices()
                .zip(values)
                .map(|(index, v)| PcrValue {
                    bank,
                    index,
                    digest: v.clone(),
                })
                .collect(),
        };
        let info = host::verify_quote(ak_public, attest, signature, nonce, &supplied)
            .map_err(quote_error)?;
        let quoted = match info.quote.pcr_select.banks.as_slice() {
            [(b, mask)] => PcrSelection {
                hash_alg: b.alg_id(),
                mask: *mask,
            },
            _ => {
                return Err(VerifyError::PcrDigestMismatch(
                    "quote covers other banks than the session's".into(),
                ))
            }
        };
        Ok(QuoteInfo { pcrs: quoted })
    }
}

/// What a quote that does not verify says, as the refusal's cause.
fn quote_error(e: ember_tpm::Error) -> VerifyError {
    match e.kind() {
        ember_tpm::ErrorKind::BadSignature { .. }
        | ember_tpm::ErrorKind::InvalidArgument { .. } => VerifyError::BadSignature(e.to_string()),
        ember_tpm::ErrorKind::NonceMismatch => VerifyError::StaleNonce,
        ember_tpm::ErrorKind::PcrDigestMismatch | ember_tpm::ErrorKind::PcrValueMissing { .. } => {
            VerifyError::PcrDigestMismatch(e.to_string())
        }
        _ => VerifyError::Malformed(format!("quote: {e}")),
    }
}
