//! ChaCha20-Poly1305 behind one seam, so that its code is compiled in this
//! crate and at this crate's opt-level (3, in the workspace's release
//! profile) whichever crate calls it.
//!
//! Why a crate of its own: Rust compiles generic code in the crate that
//! instantiates it, with that crate's optimization level. The AEAD was all
//! generics (`ChaChaPoly1305<C, N>`, the stream cipher's core and its
//! SIMD backends): called from `ember_proto::sealed::Opener::open_chunk<S>`
//! (generic over the sink), it was compiled in `ember-init` (and in the
//! bench binaries) at opt-level "z", and the opener ran at about 0.4 GB/s
//! on a core where OpenSSL does 3.7 GB/s (issue 28). Here [`open`] and
//! [`seal`] are not generic and never inlined, so they, and everything
//! generic under them, are emitted once, in this crate.
//!
//! Opt-level 3 alone was not enough: /init links with fat LTO at "z", and
//! the last optimization runs at the binary's level with loop
//! vectorization off, so chacha20's keystream XOR (left to the vectorizer)
//! stayed a byte loop and the opener stopped at 0.62 GB/s. ChaCha20 is now
//! this crate's own, in two shapes chosen at run time:
//! - `avx2` where the CPU has AVX2 (real nodes): eight blocks per pass,
//!   every per-byte step an explicit intrinsic;
//! - `portable` elsewhere (QEMU's qemu64 under TCG), a scalar ChaCha20,
//!   which TCG runs 2.3x faster than SSE2 code (see there).
//!
//! Poly1305 is the poly1305 crate's (its AVX2 or 64-bit backend). Both
//! paths are checked against chacha20poly1305 in the tests below.

#![no_std]

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;

#[cfg(test)]
extern crate alloc;

pub use aead::{self, AeadCore, AeadInPlace, Error, KeyInit, KeySizeUser};

use aead::consts::{U0, U12, U16, U32};
use aead::generic_array::GenericArray;

/// A ChaCha20-Poly1305 key.
pub type Key = GenericArray<u8, U32>;
/// A ChaCha20-Poly1305 nonce (96 bits, RFC 8439).
pub type Nonce = GenericArray<u8, U12>;
/// A Poly1305 tag.
pub type Tag = GenericArray<u8, U16>;

/// Tag bytes appended to (or sent beside) every sealed message.
pub const TAG_LEN: usize = 16;

/// ChaCha20-Poly1305 (RFC 8439) whose every use goes through [`open`] and
/// [`seal`]. A drop-in for `chacha20poly1305::ChaCha20Poly1305` where a type
/// implementing the `aead` traits is wanted (embedded-tls's cipher suite).
#[derive(Clone)]
pub struct ChaCha20Poly1305 {
    key: Key,
}

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(avx2_cpuid, "avx2");

/// Whether [`avx2`] may run here (detected once, then cached).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    avx2_cpuid::get()
}

impl KeySizeUser for ChaCha20Poly1305 {
    type KeySize = U32;
}

impl KeyInit for ChaCha20Poly1305 {
    fn new(key: &Key) -> Self {
        ChaCha20Poly1305 { key: *key }
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (cpuid, checked just above).
        return unsafe { avx2::seal(&cipher.key, nonce, aad, buffer) };
    }
    portable::seal(&cipher.key, nonce, aad, buffer)
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (cpuid, checked just above).
        return unsafe { avx2::open(&cipher.key, nonce, aad, buffer, tag) };
    }
    portable::open(&cipher.key, nonce, aad, buffer, tag)
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

    type SealFn = fn(&Key, &Nonce, &[u8], &mut [u8]) -> Result<Tag, Error>;
    type OpenFn = fn(&Key, &Nonce, &[u8], &mut [u8], &Tag) -> Result<(), Error>;

    /// Seals and opens with one path and checks it against the upstream
    /// type: lengths around the 16-byte MAC block, the 64-byte ChaCha20
    /// block, the AVX2 path's 512-byte pass and 4 KiB piece, and the
    /// sealed format's 64 KiB chunk; six AAD lengths.
    fn matches_upstream_and_refuses_what_it_refuses(seal: SealFn, open: OpenFn) {
        let upstream = chacha20poly1305::ChaCha20Poly1305::new(Key::from_slice(&KEY));
        let key = Key::from_slice(&KEY);
        let lens = (0..300).chain([
            447, 448, 511, 512, 513, 575, 1000, 1024, 4095, 4096, 4097, 4607, 8191, 8192, 12345,
            65536, 65537,
        ]);
        for len in lens {
            for aad_len in [0usize, 1, 15, 16, 17, 48] {
                let mut nonce = NONCE;
                nonce[0] = len as u8;
                let nonce = Nonce::from_slice(&nonce);
                let aad: Vec<u8> = (0..aad_len).map(|i| i as u8 ^ 0xa5).collect();
                let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                let mut a = plain.clone();
                let mut b = plain.clone();
                let ta = seal(key, nonce, &aad, &mut a).unwrap();
                let tb = upstream
                    .encrypt_in_place_detached(nonce, &aad, &mut b)
                    .unwrap();
                assert_eq!((&a, ta), (&b, tb), "len {len} aad {aad_len}");
                if len > 0 {
                    let mut bad = a.clone();
                    bad[len - 1] ^= 0x80;
                    assert!(open(key, nonce, &aad, &mut bad, &ta).is_err());
                    // A refused message is left as it came: still ciphertext.
                    bad[len - 1] ^= 0x80;
                    assert_eq!(bad, a, "len {len} aad {aad_len}");
                }
                let mut bad_tag = ta;
                bad_tag[15] ^= 1;
                assert!(open(key, nonce, &aad, &mut a.clone(), &bad_tag).is_err());
                open(key, nonce, &aad, &mut a, &ta).unwrap();
                assert_eq!(a, plain);
            }
        }
    }

    #[test]
    fn portable_path_matches_the_upstream_type_and_refuses_what_it_refuses() {
        matches_upstream_and_refuses_what_it_refuses(portable::seal, portable::open);
    }

    /// Skipped on a CPU without AVX2 would be a silent pass: the test says
    /// so in its failure instead, since every host that builds Ember here
    /// (and every real node) has AVX2.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_path_matches_the_upstream_type_and_refuses_what_it_refuses() {
        assert!(has_avx2(), "this test needs a CPU with AVX2");
        matches_upstream_and_refuses_what_it_refuses(
            // SAFETY: the CPU has AVX2 (asserted above).
            |k, n, a, b| unsafe { avx2::seal(k, n, a, b) },
            // SAFETY: as above.
            |k, n, a, b, t| unsafe { avx2::open(k, n, a, b, t) },
        );
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
