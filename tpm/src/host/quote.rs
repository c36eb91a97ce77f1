//! Verifying a quote: signature by the AK, nonce, and PCR digest.

use crate::attest::{Attest, Signature};
use crate::consts::{HashAlg, ALG_RSAPSS, ALG_RSASSA, ECC_NIST_P256, ECC_NIST_P384};
use crate::error::{Error, Result};
use crate::pcr::{pcr_composite_digest, PcrValues};
use crate::public::{attributes as a, PublicArea, PublicParams, Unique};
use crate::ErrorKind;
use alloc::vec::Vec;

/// A verified quote's content.
pub type QuoteInfo = Attest;

/// Verifies a quote made by [`crate::Tpm::quote`]:
/// * `ak_public`: the AK's TPMT_PUBLIC bytes; it must be a restricted
///   signing key (only such a key guarantees the TPM made the attestation);
/// * `attest`: the TPMS_ATTEST bytes; `signature`: the TPMT_SIGNATURE bytes;
/// * `expected_nonce`: the nonce the verifier issued (compared exactly);
/// * `pcr_values`: the PCR values the verifier expects (or the node
///   reported); the quote's PCR digest must equal their composite digest
///   over the quoted selection.
///
/// Returns the parsed attestation (clock, reset counts, firmware, selection).
pub fn verify_quote(
    ak_public: &[u8],
    attest: &[u8],
    signature: &[u8],
    expected_nonce: &[u8],
    pcr_values: &PcrValues,
) -> Result<QuoteInfo> {
    let ak = PublicArea::from_bytes(ak_public)?;
    let need = a::RESTRICTED | a::SIGN | a::FIXED_TPM;
    if ak.attributes & need != need {
        return Err(Error::new(ErrorKind::InvalidArgument {
            what: "AK is not a fixedTPM restricted signing key",
        }));
    }
    let sig = Signature::from_bytes(signature)?;
    let hash = match &sig {
        Signature::Rsa { hash, .. } | Signature::Ecdsa { hash, .. } => *hash,
    };
    let digest = hash.digest(&[attest])?;
    verify_signature(&ak, &sig, hash, &digest)?;
    let info = Attest::parse(attest)?;
    if info.extra_data != expected_nonce {
        return Err(ErrorKind::NonceMismatch.into());
    }
    let expected = pcr_composite_digest(hash, &info.quote.pcr_select, pcr_values)?;
    if expected != info.quote.pcr_digest {
        return Err(ErrorKind::PcrDigestMismatch.into());
    }
    Ok(info)
}

fn verify_signature(ak: &PublicArea, sig: &Signature, hash: HashAlg, digest: &[u8]) -> Result<()> {
    let bad = Error::new(ErrorKind::BadSignature { what: "quote" });
    match (&ak.params, &ak.unique, sig) {
        (PublicParams::Rsa { .. }, Unique::Rsa(n), Signature::Rsa { alg, sig, .. }) => {
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(n),
                rsa::BigUint::from(ak.rsa_exponent().unwrap_or(65537)),
            )
            .map_err(|_| {
                Error::new(ErrorKind::Crypto {
                    what: "AK RSA public key",
                })
            })?;
            let ok = match (*alg, hash) {
                (ALG_RSASSA, HashAlg::Sha256) => {
                    key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, sig)
                }
                (ALG_RSASSA, HashAlg::Sha384) => {
                    key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), digest, sig)
                }
                (ALG_RSAPSS, HashAlg::Sha256) => {
                    key.verify(rsa::Pss::new::<sha2::Sha256>(), digest, sig)
                }
                (ALG_RSAPSS, HashAlg::Sha384) => {
                    key.verify(rsa::Pss::new::<sha2::Sha384>(), digest, sig)
                }
                _ => {
                    return Err(Error::new(ErrorKind::Unsupported {
                        what: "RSA signature scheme",
                        value: u32::from(*alg),
                    }))
                }
            };
            ok.map_err(|_| bad)
        }
        (PublicParams::Ecc { curve, .. }, Unique::Ecc(p), Signature::Ecdsa { r, s, .. }) => {
            use ecdsa::signature::hazmat::PrehashVerifier;
            macro_rules! check {
                ($c:ident, $len:expr) => {{
                    let pad = |v: &[u8]| super::credential::pad(v, $len);
                    let mut sec1 = alloc::vec![4u8];
                    sec1.extend_from_slice(&pad(&p.x)?);
                    sec1.extend_from_slice(&pad(&p.y)?);
                    let vk = $c::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| {
                        Error::new(ErrorKind::Crypto {
                            what: "AK point is not on the curve",
                        })
                    })?;
                    let mut rs: Vec<u8> = pad(r)
                        .map_err(|_| Error::new(ErrorKind::BadSignature { what: "quote" }))?;
                    rs.extend_from_slice(
                        &pad(s)
                            .map_err(|_| Error::new(ErrorKind::BadSignature { what: "quote" }))?,
                    );
                    let sig = $c::ecdsa::Signature::from_slice(&rs)
                        .map_err(|_| Error::new(ErrorKind::BadSignature { what: "quote" }))?;
                    vk.verify_prehash(digest, &sig).map_err(|_| bad)
                }};
            }
            match *curve {
                ECC_NIST_P256 => check!(p256, 32),
                ECC_NIST_P384 => check!(p384, 48),
                other => Err(Error::new(ErrorKind::Unsupported {
                    what: "AK curve",
                    value: u32::from(other),
                })),
            }
        }
        _ => Err(Error::new(ErrorKind::InvalidArgument {
            what: "signature type does not match the AK",
        })),
    }
}
