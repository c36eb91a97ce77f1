//! ChaCha20-Poly1305 (RFC 8439 section 2.8) with an AVX2 ChaCha20 of this
//! crate's own: eight blocks at a time, one block per 32-bit lane, and the
//! keystream XORed into the buffer with AVX2 loads and stores.
//!
//! Why not chacha20's AVX2 backend: measured on the bench host (issue 28),
//! `chacha20::backends::avx2::inner` took 65% of the opener's time, and
//! most of that in a byte-at-a-time loop, the keystream XOR (`inout`'s
//! `xor_in2out`), which is left to LLVM's loop vectorizer. /init and the
//! other binaries link with fat LTO at opt-level "z", and the last, LTO
//! optimization runs at the binary's level, where rustc turns loop
//! vectorization off: whatever opt-level ember-aead has, that loop stays
//! scalar. Here every per-byte step is an explicit intrinsic, so the speed
//! does not depend on the caller's profile. The eight-lane layout is also
//! the one OpenSSL and Linux use (chacha20's backend does four blocks, two
//! per register, and shuffles rows between rounds).
//!
//! Poly1305 is the poly1305 crate's (its own AVX2 backend), run over the
//! same 4 KiB piece just before (open) or after (seal) it is XORed, while
//! the piece is in L1.

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

use crate::portable::setup;
use crate::{Error, Key, Nonce, Tag};

/// Bytes of keystream one pass of the rounds makes (eight 64-byte blocks).
const WIDE: usize = 512;
/// Bytes MACed and XORed together: a multiple of 16 (Poly1305's block,
/// so `update_padded` on a piece adds no padding) and of [`WIDE`].
const PIECE: usize = 4096;

/// Eight ChaCha20 blocks per call, block `counter + i` in lane `i`.
struct Wide {
    /// The input words 0..16 (word 12, the counter, is per lane).
    state: [__m256i; 16],
}

impl Wide {
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn new(state: &[u32; 16]) -> Self {
        let mut s = [_mm256_setzero_si256(); 16];
        for (v, &w) in s.iter_mut().zip(state) {
            *v = _mm256_set1_epi32(w as i32);
        }
        s[12] = _mm256_add_epi32(s[12], _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        Wide { state: s }
    }

    /// The next eight blocks of keystream, XORed into `data` (512 bytes,
    /// or fewer for the message's tail, then through a stack buffer).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn xor(&mut self, data: &mut [u8]) {
        let rot16 = _mm256_setr_epi8(
            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11,
            8, 9, 14, 15, 12, 13,
        );
        let rot8 = _mm256_setr_epi8(
            3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9,
            10, 15, 12, 13, 14,
        );
        let mut x = self.state;
        for _ in 0..10 {
            quarter(&mut x, [0, 4, 8, 12], rot16, rot8);
            quarter(&mut x, [1, 5, 9, 13], rot16, rot8);
            quarter(&mut x, [2, 6, 10, 14], rot16, rot8);
            quarter(&mut x, [3, 7, 11, 15], rot16, rot8);
            quarter(&mut x, [0, 5, 10, 15], rot16, rot8);
            quarter(&mut x, [1, 6, 11, 12], rot16, rot8);
            quarter(&mut x, [2, 7, 8, 13], rot16, rot8);
            quarter(&mut x, [3, 4, 9, 14], rot16, rot8);
        }
        for (v, s) in x.iter_mut().zip(self.state) {
            *v = _mm256_add_epi32(*v, s);
        }
        self.state[12] = _mm256_add_epi32(self.state[12], _mm256_set1_epi32(8));

        // Transpose: lane i of x[w] is word w of block i. Four words of four
        // blocks per 128-bit half after the 32- and 64-bit interleaves,
        // then the halves are paired up into rows of eight words.
        let quad = |a: __m256i, b: __m256i, c: __m256i, d: __m256i| {
            let ab_lo = _mm256_unpacklo_epi32(a, b);
            let ab_hi = _mm256_unpackhi_epi32(a, b);
            let cd_lo = _mm256_unpacklo_epi32(c, d);
            let cd_hi = _mm256_unpackhi_epi32(c, d);
            // Block i (low half) and block i + 4 (high half), words 0..4.
            [
                _mm256_unpacklo_epi64(ab_lo, cd_lo),
                _mm256_unpackhi_epi64(ab_lo, cd_lo),
                _mm256_unpacklo_epi64(ab_hi, cd_hi),
                _mm256_unpackhi_epi64(ab_hi, cd_hi),
            ]
        };
        let w0 = quad(x[0], x[1], x[2], x[3]);
        let w4 = quad(x[4], x[5], x[6], x[7]);
        let w8 = quad(x[8], x[9], x[10], x[11]);
        let w12 = quad(x[12], x[13], x[14], x[15]);
        let mut rows = [_mm256_setzero_si256(); 16];
        for i in 0..4 {
            rows[2 * i] = _mm256_permute2x128_si256::<0x20>(w0[i], w4[i]);
            rows[2 * i + 1] = _mm256_permute2x128_si256::<0x20>(w8[i], w12[i]);
            rows[8 + 2 * i] = _mm256_permute2x128_si256::<0x31>(w0[i], w4[i]);
            rows[8 + 2 * i + 1] = _mm256_permute2x128_si256::<0x31>(w8[i], w12[i]);
        }
        if data.len() == WIDE {
            let p = data.as_mut_ptr() as *mut __m256i;
            for (i, row) in rows.iter().enumerate() {
                // SAFETY: data is 512 bytes, 16 rows of 32; unaligned
                // loads and stores.
                unsafe {
                    let d = _mm256_loadu_si256(p.add(i));
                    _mm256_storeu_si256(p.add(i), _mm256_xor_si256(d, *row));
                }
            }
        } else {
            let mut ks = [0u8; WIDE];
            let p = ks.as_mut_ptr() as *mut __m256i;
            for (i, row) in rows.iter().enumerate() {
                // SAFETY: ks is 512 bytes, 16 rows of 32.
                unsafe { _mm256_storeu_si256(p.add(i), *row) };
            }
            for (b, k) in data.iter_mut().zip(ks) {
                *b ^= k;
            }
        }
    }
}

/// One ChaCha quarter round on the words `[a, b, c, d]` of all eight blocks.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quarter(x: &mut [__m256i; 16], [a, b, c, d]: [usize; 4], rot16: __m256i, rot8: __m256i) {
    x[a] = _mm256_add_epi32(x[a], x[b]);
    x[d] = _mm256_shuffle_epi8(_mm256_xor_si256(x[d], x[a]), rot16);
    x[c] = _mm256_add_epi32(x[c], x[d]);
    x[b] = rotl::<12, 20>(_mm256_xor_si256(x[b], x[c]));
    x[a] = _mm256_add_epi32(x[a], x[b]);
    x[d] = _mm256_shuffle_epi8(_mm256_xor_si256(x[d], x[a]), rot8);
    x[c] = _mm256_add_epi32(x[c], x[d]);
    x[b] = rotl::<7, 25>(_mm256_xor_si256(x[b], x[c]));
}

/// Rotates each 32-bit lane left by `L` (`R` is 32 - `L`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn rotl<const L: i32, const R: i32>(v: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<L>(v), _mm256_srli_epi32::<R>(v))
}

/// The stream from block 1 on (block 0 keyed the MAC).
fn stream(key: &Key, nonce: &Nonce) -> [u32; 16] {
    crate::portable::ChaCha20::new(key, nonce, 1).state
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn seal(key: &Key, nonce: &Nonce, aad: &[u8], buffer: &mut [u8]) -> Result<Tag, Error> {
    let mut mac = setup(key, nonce, aad, buffer.len())?.1;
    // SAFETY: the caller checked AVX2.
    let mut wide = unsafe { Wide::new(&stream(key, nonce)) };
    for piece in buffer.chunks_mut(PIECE) {
        for part in piece.chunks_mut(WIDE) {
            // SAFETY: the caller checked AVX2.
            unsafe { wide.xor(part) };
        }
        mac.update_padded(piece);
    }
    Ok(mac.finalize(aad.len(), buffer.len()))
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn open(
    key: &Key,
    nonce: &Nonce,
    aad: &[u8],
    buffer: &mut [u8],
    tag: &Tag,
) -> Result<(), Error> {
    let mut mac = setup(key, nonce, aad, buffer.len())?.1;
    // The tag is checked over the whole ciphertext before any byte is
    // decrypted (a refused chunk stays ciphertext): MAC first, then XOR.
    mac.update_padded(buffer);
    mac.verify(aad.len(), buffer.len(), tag)?;
    // SAFETY: the caller checked AVX2.
    let mut wide = unsafe { Wide::new(&stream(key, nonce)) };
    for part in buffer.chunks_mut(WIDE) {
        // SAFETY: the caller checked AVX2.
        unsafe { wide.xor(part) };
    }
    Ok(())
}
