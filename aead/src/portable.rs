//! ChaCha20-Poly1305 (RFC 8439 section 2.8) with a portable, scalar
//! ChaCha20: what runs where the CPU has no AVX2.
//!
//! Why not chacha20's SSE2 backend there: the CPU without AVX2 that
//! matters most is QEMU's qemu64 under TCG (the lab, CI, the bench), and
//! TCG emulates SSE2 instructions one helper call at a time while it
//! translates 32-bit adds, xors and rotates into a host instruction or
//! two. Measured in `qemu-x86_64 -cpu qemu64`, 20 MiB opened in 64 KiB
//! chunks: SSE2 backend 633-682 ms, this scalar code's shape (chacha20's
//! own soft backend) 266-299 ms; natively the two are within 10% of each
//! other (book, Benchmarks, "Overlay pipeline"). Poly1305 is the poly1305 crate's,
//! which picks its AVX2 or 64-bit backend at run time itself.

use poly1305::universal_hash::{KeyInit, UniversalHash};
use poly1305::Poly1305;

use crate::{Error, Key, Nonce, Tag};

const CONSTANTS: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// ChaCha20 with a 96-bit nonce, from block `counter` on.
pub(crate) struct ChaCha20 {
    pub(crate) state: [u32; 16],
}

impl ChaCha20 {
    pub(crate) fn new(key: &Key, nonce: &Nonce, counter: u32) -> Self {
        let mut state = [0u32; 16];
        state[..4].copy_from_slice(&CONSTANTS);
        for (w, b) in state[4..12].iter_mut().zip(key.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        state[12] = counter;
        for (w, b) in state[13..].iter_mut().zip(nonce.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        ChaCha20 { state }
    }

    /// The next block of keystream, as sixteen little-endian words.
    fn words(&mut self) -> [u32; 16] {
        let mut x = self.state;
        for _ in 0..10 {
            quarter_round(&mut x, 0, 4, 8, 12);
            quarter_round(&mut x, 1, 5, 9, 13);
            quarter_round(&mut x, 2, 6, 10, 14);
            quarter_round(&mut x, 3, 7, 11, 15);
            quarter_round(&mut x, 0, 5, 10, 15);
            quarter_round(&mut x, 1, 6, 11, 12);
            quarter_round(&mut x, 2, 7, 8, 13);
            quarter_round(&mut x, 3, 4, 9, 14);
        }
        for (w, s) in x.iter_mut().zip(self.state) {
            *w = w.wrapping_add(s);
        }
        self.state[12] = self.state[12].wrapping_add(1);
        x
    }

    /// The next 64 bytes of keystream.
    fn block(&mut self) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (o, w) in out.chunks_exact_mut(4).zip(self.words()) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// XORs the keystream into `buf` a 32-bit word at a time: /init's last
    /// (LTO) pass runs at "z" without loop vectorization, so a byte loop
    /// would stay one, and TCG pays per guest instruction.
    fn apply_keystream(&mut self, buf: &mut [u8]) {
        let mut blocks = buf.chunks_exact_mut(64);
        for block in &mut blocks {
            for (b, k) in block.chunks_exact_mut(4).zip(self.words()) {
                let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) ^ k;
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        let tail = blocks.into_remainder();
        if !tail.is_empty() {
            for (b, k) in tail.iter_mut().zip(self.block()) {
                *b ^= k;
            }
        }
    }
}

#[inline(always)]
fn quarter_round(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

/// Poly1305 over the padded AAD and text (RFC 8439 2.8), fed so that the
/// poly1305 crate's AVX2 backend stays on its four-block path.
///
/// That backend caches single blocks until it has four, and once a
/// message has left it between multiples of four (the sealed format's
/// 48-byte header is three blocks), every later four-block batch goes
/// through its block-at-a-time fallback (`compute_block`, 30% of the
/// opener's time, measured with `perf`). Feeding just enough blocks alone
/// to fill its cache brings it back to the batch path.
pub(crate) struct Mac {
    mac: Poly1305,
    blocks: usize,
}

impl Mac {
    /// Absorbs `data`, zero-padded to a multiple of 16 bytes.
    pub(crate) fn update_padded(&mut self, data: &[u8]) {
        let whole = data.len() / 16;
        let head = ((4 - self.blocks % 4) % 4).min(whole);
        let (head, rest) = data.split_at(head * 16);
        // A multiple of 16 bytes: no padding is added here.
        self.mac.update_padded(head);
        self.mac.update_padded(rest);
        self.blocks += data.len().div_ceil(16);
    }

    /// The lengths block, then the tag.
    pub(crate) fn finalize(mut self, aad: usize, text: usize) -> Tag {
        let mut block = poly1305::Block::default();
        block[..8].copy_from_slice(&(aad as u64).to_le_bytes());
        block[8..].copy_from_slice(&(text as u64).to_le_bytes());
        self.update_padded(&block);
        self.mac.finalize()
    }

    /// Checks `tag` in constant time (UniversalHash::verify compares with
    /// subtle).
    pub(crate) fn verify(mut self, aad: usize, text: usize, tag: &Tag) -> Result<(), Error> {
        let mut block = poly1305::Block::default();
        block[..8].copy_from_slice(&(aad as u64).to_le_bytes());
        block[8..].copy_from_slice(&(text as u64).to_le_bytes());
        self.update_padded(&block);
        self.mac.verify(tag).map_err(|_| Error)
    }
}

/// The cipher from block 1 on, and the MAC keyed by block 0 (RFC 8439
/// 2.6), with the associated data already absorbed.
pub(crate) fn setup(
    key: &Key,
    nonce: &Nonce,
    aad: &[u8],
    len: usize,
) -> Result<(ChaCha20, Mac), Error> {
    // The block counter is 32 bits and block 0 is the MAC's key.
    if len / 64 >= u32::MAX as usize {
        return Err(Error);
    }
    let mut cipher = ChaCha20::new(key, nonce, 0);
    let otk = cipher.block();
    let mut mac = Mac {
        mac: Poly1305::new(poly1305::Key::from_slice(&otk[..32])),
        blocks: 0,
    };
    mac.update_padded(aad);
    Ok((cipher, mac))
}

pub fn seal(key: &Key, nonce: &Nonce, aad: &[u8], buffer: &mut [u8]) -> Result<Tag, Error> {
    let (mut cipher, mut mac) = setup(key, nonce, aad, buffer.len())?;
    cipher.apply_keystream(buffer);
    mac.update_padded(buffer);
    Ok(mac.finalize(aad.len(), buffer.len()))
}

pub fn open(
    key: &Key,
    nonce: &Nonce,
    aad: &[u8],
    buffer: &mut [u8],
    tag: &Tag,
) -> Result<(), Error> {
    let (mut cipher, mut mac) = setup(key, nonce, aad, buffer.len())?;
    mac.update_padded(buffer);
    mac.verify(aad.len(), buffer.len(), tag)?;
    cipher.apply_keystream(buffer);
    Ok(())
}
