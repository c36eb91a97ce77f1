//! MakeCredential in software (TPM 2.0 Part 1 §24): wraps a secret so that
//! only the TPM holding `ek` can recover it, and only for the key named
//! `ak_name`.

use super::kdf::{hmac, kdf_a, kdf_e};
use crate::consts::{HashAlg, ECC_NIST_P256, ECC_NIST_P384};
use crate::error::{Error, Result};
use crate::public::{PublicArea, PublicParams, Unique};
use crate::ErrorKind;
use alloc::vec::Vec;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use rand_core::{OsRng, RngCore};

/// The two buffers TPM2_ActivateCredential takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT buffer: TPM2B(integrity HMAC) || encrypted TPM2B(secret).
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET buffer: the RSA-OAEP ciphertext of the seed, or
    /// the ephemeral ECC point (TPMS_ECC_POINT) for an ECC EK.
    pub encrypted_secret: Vec<u8>,
}

/// Wraps `secret` (1 to 64 bytes, at most the EK nameAlg's digest size) for
/// the TPM whose endorsement key is `ek` (its public area, as read from the
/// TPM or sent by the node), bound to the AK whose Name is `ak_name`
/// ([`PublicArea::name`] of the AK). RSA EKs: OAEP with label "IDENTITY";
/// ECC EKs (P-256, P-384): ephemeral ECDH and KDFe.
pub fn make_credential(ek: &PublicArea, ak_name: &[u8], secret: &[u8]) -> Result<Credential> {
    let (seed, encrypted_secret) = make_seed(ek)?;
    make_credential_with_seed(ek, ak_name, secret, &seed, encrypted_secret)
}

/// The deterministic half of [`make_credential`], for tests with known
/// vectors: wraps `secret` with an already-chosen `seed` whose encryption
/// to the EK is `encrypted_secret`.
pub fn make_credential_with_seed(
    ek: &PublicArea,
    ak_name: &[u8],
    secret: &[u8],
    seed: &[u8],
    encrypted_secret: Vec<u8>,
) -> Result<Credential> {
    let alg = ek.name_alg;
    if secret.is_empty() || secret.len() > alg.digest_len() {
        return Err(Error::new(ErrorKind::InvalidArgument {
            what: "credential secret must be 1..=digest-size bytes",
        }));
    }
    let sym = match &ek.params {
        PublicParams::Rsa {
            symmetric: Some(s), ..
        }
        | PublicParams::Ecc {
            symmetric: Some(s), ..
        } => *s,
        _ => {
            return Err(Error::new(ErrorKind::InvalidArgument {
                what: "EK is not a storage key with a symmetric cipher",
            }))
        }
    };
    if sym.alg != crate::consts::ALG_AES || sym.mode != crate::consts::ALG_CFB {
        return Err(Error::new(ErrorKind::Unsupported {
            what: "EK symmetric cipher",
            value: u32::from(sym.alg),
        }));
    }
    let sym_key = kdf_a(alg, seed, "STORAGE", ak_name, &[], u32::from(sym.key_bits))?;
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    enc_identity.extend_from_slice(&(secret.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(secret);
    let iv = [0u8; 16];
    match sym.key_bits {
        128 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
            .map_err(|_| {
                Error::new(ErrorKind::Crypto {
                    what: "AES-128 key",
                })
            })?
            .encrypt(&mut enc_identity),
        256 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(&sym_key, &iv)
            .map_err(|_| {
                Error::new(ErrorKind::Crypto {
                    what: "AES-256 key",
                })
            })?
            .encrypt(&mut enc_identity),
        other => {
            return Err(Error::new(ErrorKind::Unsupported {
                what: "AES key size",
                value: u32::from(other),
            }))
        }
    }
    let hmac_key = kdf_a(
        alg,
        seed,
        "INTEGRITY",
        &[],
        &[],
        (alg.digest_len() * 8) as u32,
    )?;
    let outer = hmac(alg, &hmac_key, &[&enc_identity, ak_name])?;
    let mut blob = Vec::with_capacity(2 + outer.len() + enc_identity.len());
    blob.extend_from_slice(&(outer.len() as u16).to_be_bytes());
    blob.extend_from_slice(&outer);
    blob.extend_from_slice(&enc_identity);
    Ok(Credential {
        credential_blob: blob,
        encrypted_secret,
    })
}

/// A fresh seed and its encryption to the EK.
fn make_seed(ek: &PublicArea) -> Result<(Vec<u8>, Vec<u8>)> {
    let alg = ek.name_alg;
    match (&ek.params, &ek.unique) {
        (PublicParams::Rsa { .. }, Unique::Rsa(n)) => {
            let mut seed = alloc::vec![0u8; alg.digest_len()];
            OsRng.fill_bytes(&mut seed);
            let e = ek.rsa_exponent().unwrap_or(65537);
            let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from(e))
                .map_err(|_| {
                    Error::new(ErrorKind::Crypto {
                        what: "EK RSA public key",
                    })
                })?;
            let label = "IDENTITY\0";
            let padding = match alg {
                HashAlg::Sha256 => rsa::Oaep::new_with_label::<sha2::Sha256, _>(label),
                HashAlg::Sha384 => rsa::Oaep::new_with_label::<sha2::Sha384, _>(label),
                HashAlg::Sha512 => rsa::Oaep::new_with_label::<sha2::Sha512, _>(label),
                HashAlg::Sha1 => {
                    return Err(Error::new(ErrorKind::Unsupported {
                        what: "EK nameAlg",
                        value: 4,
                    }))
                }
            };
            let ct = key.encrypt(&mut OsRng, padding, &seed).map_err(|_| {
                Error::new(ErrorKind::Crypto {
                    what: "RSA-OAEP encryption",
                })
            })?;
            Ok((seed, ct))
        }
        (PublicParams::Ecc { curve, .. }, Unique::Ecc(p)) => {
            let (z, ex, ey, ek_x) = match *curve {
                ECC_NIST_P256 => ecdh_p256(&p.x, &p.y)?,
                ECC_NIST_P384 => ecdh_p384(&p.x, &p.y)?,
                other => {
                    return Err(Error::new(ErrorKind::Unsupported {
                        what: "EK curve",
                        value: u32::from(other),
                    }))
                }
            };
            let seed = kdf_e(
                alg,
                &z,
                "IDENTITY",
                &ex,
                &ek_x,
                (alg.digest_len() * 8) as u32,
            )?;
            let mut point = Vec::with_capacity(4 + ex.len() + ey.len());
            point.extend_from_slice(&(ex.len() as u16).to_be_bytes());
            point.extend_from_slice(&ex);
            point.extend_from_slice(&(ey.len() as u16).to_be_bytes());
            point.extend_from_slice(&ey);
            Ok((seed, point))
        }
        _ => Err(Error::new(ErrorKind::InvalidArgument {
            what: "EK public area is neither RSA nor ECC",
        })),
    }
}

/// Left-pads a coordinate to the field size; longer values are invalid.
pub(crate) fn pad(v: &[u8], len: usize) -> Result<Vec<u8>> {
    let v = {
        let skip = v
            .iter()
            .take_while(|b| **b == 0)
            .count()
            .min(v.len().saturating_sub(len));
        &v[skip..]
    };
    if v.len() > len {
        return Err(Error::new(ErrorKind::Crypto {
            what: "ECC coordinate longer than the field",
        }));
    }
    let mut out = alloc::vec![0u8; len - v.len()];
    out.extend_from_slice(v);
    Ok(out)
}

macro_rules! ecdh_fn {
    ($name:ident, $curve:ident, $len:expr) => {
        /// (Z, ephemeral x, ephemeral y, EK x) for an EK point (x, y).
        fn $name(x: &[u8], y: &[u8]) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)> {
            use $curve::elliptic_curve::sec1::ToEncodedPoint;
            let x = pad(x, $len)?;
            let y = pad(y, $len)?;
            let mut sec1 = alloc::vec![4u8];
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let ek = $curve::PublicKey::from_sec1_bytes(&sec1).map_err(|_| {
                Error::new(ErrorKind::Crypto {
                    what: "EK point is not on the curve",
                })
            })?;
            let eph = $curve::ecdh::EphemeralSecret::random(&mut OsRng);
            let z = eph.diffie_hellman(&ek);
            let ep = eph.public_key().to_encoded_point(false);
            let ex = ep
                .x()
                .ok_or(Error::new(ErrorKind::Crypto {
                    what: "ephemeral point",
                }))?
                .to_vec();
            let ey = ep
                .y()
                .ok_or(Error::new(ErrorKind::Crypto {
                    what: "ephemeral point",
                }))?
                .to_vec();
            Ok((z.raw_secret_bytes().to_vec(), ex, ey, x))
        }
    };
}
ecdh_fn!(ecdh_p256, p256, 32);
ecdh_fn!(ecdh_p384, p384, 48);
