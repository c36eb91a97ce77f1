//! ChaCha20-Poly1305 behind one seam, so that its code is compiled in this
//! crate and at this crate's opt-level (3, in the workspace's release
//! profile) whichever crate calls it.
//!
//! Why a crate of its own: Rust compiles generic code in the crate that
//! instantiates it, with that crate's optimization level. The AEAD is all
//! generics (`ChaChaPoly1305<C, N>`, the stream cipher's core and its
//! SIMD backends): called from `ember_proto::sealed::Opener::open_chunk<S>`
//! (generic over the sink), it was compiled in `ember-init` (and in the
//! bench binaries) at opt-level "z", where the AVX2/SSE2 backends' small
//! `#[inline]` helpers (`add_xor_rot`, `rounds`, `inner`) stayed separate
//! calls, and the opener ran at about 0.4 GB/s on a core where OpenSSL
//! does 3.7 GB/s (issue 28). Here [`open`] and [`seal`] are not generic and
//! never inlined, so they, and everything generic under them, are emitted
//! once, in this crate, at opt-level 3; callers at "z" link to them.
//!
//! The backend is chosen at run time: where the CPU has AVX2 (real
//! nodes), chacha20poly1305 with chacha20's and poly1305's AVX2 backends;
//! elsewhere (QEMU's qemu64 under TCG) [`portable`], a scalar ChaCha20,
//! which TCG runs 2.3x faster than chacha20's SSE2 backend (see there).

#![no_std]

mod portable;

#[cfg(test)]
extern crate alloc;

pub use chacha20poly1305::aead::{self, AeadCore, AeadInPlace, Error, KeyInit, KeySizeUser};
pub use chacha20poly1305::{Key, Nonce, Tag};

use chacha20poly1305::consts::{U0, U12, U16, U32};

/// Tag bytes appended to (or sent beside) every sealed message.
pub const TAG_LEN: usize = 16;

/// ChaCha20-Poly1305 (RFC 8439) whose every use goes through [`open`] and
/// [`seal`]. A drop-in for `chacha20poly1305::ChaCha20Poly1305` where a type
/// implementing the `aead` traits is wanted (embedded-tls's cipher suite).
#[derive(Clone)]
pub struct ChaCha20Poly1305 {
    simd: chacha20poly1305::ChaCha20Poly1305,
    key: Key,
}

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx2, "avx2");

/// Whether chacha20poly1305's AVX2 backends run here (detected once).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    avx2::get()
}

/// Elsewhere the crate's own choice of backend stands.
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    true
}

impl KeySizeUser for ChaCha20Poly1305 {
    type KeySize = U32;
}

impl KeyInit for ChaCha20Poly1305 {
    fn new(key: &Key) -> Self {
        ChaCha20Poly1305 {
            simd: chacha20poly1305::ChaCha20Poly1305::new(key),
            key: *key,
        }
    }
}

impl AeadCore for ChaCha20Poly1305 {
    type NonceSize = U12;
    type TagSize = U16;
    type CiphertextOverhead = U0;
}

impl AeadInPlace for ChaCha20Poly1305 {
    fn encrypt_in_place_detached(
        &self,
        nonce: &Nonce,
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, Error> {
        seal(self, nonce, aad, buffer)
    }

    fn decrypt_in_place_detached(
        &self,
        nonce: &Nonce,
        aad: &[u8],
        buffer: &mut [u8],
        tag: &Tag,
    ) -> Result<(), Error> {
        open(self, nonce, aad, buffer, tag)
    }
}

/// Encrypts `buffer` in place and returns its tag.
#[inline(never)]
pub fn seal(
    cipher: &ChaCha20Poly1305,
    nonce: &Nonce,
    aad: &[u8],
    buffer: &mut [u8],
) -> Result<Tag, Error> {
    if has_avx2() {
        cipher.simd.encrypt_in_place_detached(nonce, aad, buffer)
    } else {
        portable::seal(&cipher.key, nonce, aad, buffer)
    }
}

/// Checks `tag` over `aad` and the ciphertext in `buffer`, then decrypts
/// `buffer` in place. On a wrong tag `buffer` is left as it was (still
/// ciphertext) and [`Error`] is returned.
#[inline(never)]
pub fn open(
    cipher: &ChaCha20Poly1305,
    nonce: &Nonce,
    aad: &[u8],
    buffer: &mut [u8],
    tag: &Tag,
) -> Result<(), Error> {
    if has_avx2() {
        cipher
            .simd
            .decrypt_in_place_detached(nonce, aad, buffer, tag)
    } else {
        portable::open(&cipher.key, nonce, aad, buffer, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// RFC 8439 section 2.8.2's example.
    const KEY: [u8; 32] = [
        0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e,
        0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d,
        0x9e, 0x9f,
    ];
    const NONCE: [u8; 12] = [
        0x07, 0x00, 0x00, 0x00, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    ];
    const AAD: [u8; 12] = [
        0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    ];
    const PLAIN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    const CIPHER_HEAD: [u8; 16] = [
        0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86, 0xaf, 0xbc, 0x53, 0xef, 0x7e,
        0xc2,
    ];
    const CIPHER_TAIL: [u8; 2] = [0x61, 0x16];
    const TAG: [u8; 16] = [
        0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06,
        0x91,
    ];

    fn cipher() -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&KEY))
    }

    #[test]
    fn seals_rfc8439_example() {
        let mut buf = PLAIN.to_vec();
        let tag = seal(&cipher(), Nonce::from_slice(&NONCE), &AAD, &mut buf).unwrap();
        assert_eq!(buf[..16], CIPHER_HEAD);
        assert_eq!(buf[buf.len() - 2..], CIPHER_TAIL);
        assert_eq!(tag[..], TAG);
    }

    #[test]
    fn opens_rfc8439_example_and_refuses_a_flipped_bit() {
        let mut buf = PLAIN.to_vec();
        let tag = seal(&cipher(), Nonce::from_slice(&NONCE), &AAD, &mut buf).unwrap();
        let sealed = buf.clone();
        buf[7] ^= 1;
        assert!(open(&cipher(), Nonce::from_slice(&NONCE), &AAD, &mut buf, &tag).is_err());
        assert_eq!(buf[7], sealed[7] ^ 1, "a refused message is not decrypted");
        buf[7] ^= 1;
        open(&cipher(), Nonce::from_slice(&NONCE), &AAD, &mut buf, &tag).unwrap();
        assert_eq!(buf, PLAIN);
    }

    #[test]
    fn portable_path_matches_the_upstream_type_and_refuses_what_it_refuses() {
        let upstream = chacha20poly1305::ChaCha20Poly1305::new(Key::from_slice(&KEY));
        let key = Key::from_slice(&KEY);
        // Lengths around the 16-byte MAC and 64-byte ChaCha20 blocks.
        for len in (0..300).chain([4095, 4096, 65536, 65537]) {
            for aad_len in [0usize, 1, 15, 16, 17, 48] {
                let mut nonce = NONCE;
                nonce[0] = len as u8;
                let nonce = Nonce::from_slice(&nonce);
                let aad: Vec<u8> = (0..aad_len).map(|i| i as u8 ^ 0xa5).collect();
                let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                let mut a = plain.clone();
                let mut b = plain.clone();
                let ta = portable::seal(key, nonce, &aad, &mut a).unwrap();
                let tb = upstream
                    .encrypt_in_place_detached(nonce, &aad, &mut b)
                    .unwrap();
                assert_eq!((&a, ta), (&b, tb), "len {len} aad {aad_len}");
                if len > 0 {
                    let mut bad = a.clone();
                    bad[len - 1] ^= 0x80;
                    assert!(portable::open(key, nonce, &aad, &mut bad, &ta).is_err());
                }
                let mut bad_tag = ta;
                bad_tag[15] ^= 1;
                assert!(portable::open(key, nonce, &aad, &mut a.clone(), &bad_tag).is_err());
                portable::open(key, nonce, &aad, &mut a, &ta).unwrap();
                assert_eq!(a, plain);
            }
        }
    }

    #[test]
    fn portable_path_seals_rfc8439_example() {
        let mut buf = PLAIN.to_vec();
        let tag = portable::seal(
            Key::from_slice(&KEY),
            Nonce::from_slice(&NONCE),
            &AAD,
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf[..16], CIPHER_HEAD);
        assert_eq!(buf[buf.len() - 2..], CIPHER_TAIL);
        assert_eq!(tag[..], TAG);
    }

    #[test]
    fn matches_the_upstream_type_through_the_aead_traits() {
        let upstream = chacha20poly1305::ChaCha20Poly1305::new(Key::from_slice(&KEY));
        let nonce = Nonce::from_slice(&NONCE);
        let mut a = [0x5au8; 1000];
        let mut b = a;
        let ta = cipher()
            .encrypt_in_place_detached(nonce, b"aad", &mut a)
            .unwrap();
        let tb = upstream
            .encrypt_in_place_detached(nonce, b"aad", &mut b)
            .unwrap();
        assert_eq!((a, ta), (b, tb));
    }
}
