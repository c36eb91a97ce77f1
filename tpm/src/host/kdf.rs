//! The TPM's key derivation functions (Part 1 §11.4.10) and HMAC by name.

use crate::consts::HashAlg;
use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec::Vec;
use hmac::{Hmac, Mac};

pub(crate) fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC takes keys of any length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        HashAlg::Sha256 => Ok(run::<Hmac<sha2::Sha256>>(key, parts)),
        HashAlg::Sha384 => Ok(run::<Hmac<sha2::Sha384>>(key, parts)),
        HashAlg::Sha512 => Ok(run::<Hmac<sha2::Sha512>>(key, parts)),
        HashAlg::Sha1 => Err(Error::new(ErrorKind::Unsupported {
            what: "HMAC hash",
            value: 4,
        })),
    }
}

/// KDFa (SP 800-108 counter mode with HMAC): `bits` of key from `key`,
/// `label` (a NUL is appended, as the TPM does), `context_u` and `context_v`.
pub fn kdf_a(
    alg: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + alg.digest_len());
    let mut counter = 1u32;
    while out.len() < bytes {
        let block = hmac(
            alg,
            key,
            &[
                &counter.to_be_bytes(),
                label.as_bytes(),
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        )?;
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(bytes);
    Ok(out)
}

/// KDFe (SP 800-56A concatenation KDF): `bits` of key from the ECDH
/// x-coordinate `z`, `label` (NUL appended), and the two parties' x values.
pub fn kdf_e(
    alg: HashAlg,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + alg.digest_len());
    let mut counter = 1u32;
    while out.len() < bytes {
        let block = alg.digest(&[
            &counter.to_be_bytes(),
            z,
            label.as_bytes(),
            &[0],
            party_u,
            party_v,
        ])?;
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_a_output_length_follows_bits_and_depends_on_every_input() {
        let a = kdf_a(HashAlg::Sha256, b"key", "STORAGE", b"name", b"", 128).unwrap();
        assert_eq!(a.len(), 16);
        let long = kdf_a(HashAlg::Sha256, b"key", "STORAGE", b"name", b"", 512).unwrap();
        assert_eq!(long.len(), 64);
        // A longer request changes the requested-bits field, so even the first block differs.
        assert_ne!(&long[..16], &a[..]);
        assert_ne!(
            kdf_a(HashAlg::Sha256, b"key", "INTEGRITY", b"name", b"", 128).unwrap(),
            a
        );
    }
}
