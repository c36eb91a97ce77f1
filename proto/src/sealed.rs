//! The sealed-overlay stream: a STREAM-style construction over
//! ChaCha20-Poly1305.
//!
//! ```text
//! header (48 bytes): magic "EMBSEAL2" | chunk_size u32 BE | 0u32 | key commitment
//! chunk i:           ChaCha20-Poly1305(key, nonce_i, aad = header, plaintext_i) || tag (16)
//! nonce_i:           i as u64 BE | 0 0 0 | last (1 for the final chunk, else 0)
//! ```
//!
//! Every chunk but the last holds exactly `chunk_size` plaintext bytes; the
//! last holds 0..=chunk_size and is sealed with the final flag. A chunk moved
//! to another position fails (the counter is in the nonce), a stream cut at
//! a chunk boundary fails (no chunk carries the final flag), and a header
//! edit fails every chunk (the header is the AAD). The opener hands
//! plaintext to its sink only after the chunk's tag verified.
//!
//! A blob is sealed once, under a data key drawn at random for it alone
//! ([`crate::manifest`] commits to that key; the header repeats the
//! commitment so another overlay's blob is named as such before any chunk
//! is tried). One key seals one plaintext, so a stream that opens under
//! the key, in order, up to the final flag, is that plaintext: the opener
//! needs no digest of its own (book, "Sealed overlay and manifest formats").

use crate::ErrorKind;
use alloc::format;
use alloc::vec::Vec;
use core::fmt;
use ember_aead::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};

use crate::ct::ct_eq;
use crate::manifest::{key_commitment, Envelope};
use crate::Error;

pub const MAGIC: [u8; 8] = *b"EMBSEAL2";
pub const HEADER_LEN: usize = 48;
pub const TAG_LEN: usize = 16;
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
pub const MIN_CHUNK: u32 = 16;
pub const MAX_CHUNK: u32 = 1024 * 1024;

/// Where opened plaintext goes (the overlay extractor).
pub trait Sink {
    type Error: fmt::Display;
    fn write(&mut self, plaintext: &[u8]) -> Result<(), Self::Error>;
    fn finish(&mut self) -> Result<(), Self::Error>;
}

/// A view over the fixed header.
pub struct Header<T: AsRef<[u8]>>(T);

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const CHUNK: Range<usize> = 8..12;
    pub const RESERVED: Range<usize> = 12..16;
    pub const COMMITMENT: Range<usize> = 16..48;
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Checks length, magic, reserved bits and the chunk size range once.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN || b[field::MAGIC] != MAGIC || b[field::RESERVED] != [0; 4] {
            return Err(Error::new(ErrorKind::SealedBadHeader));
        }
        let h = Header(buf);
        let size = h.chunk_size();
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&size) {
            return Err(Error::new(ErrorKind::SealedBadChunkSize { size }));
        }
        Ok(h)
    }

    pub fn chunk_size(&self) -> u32 {
        let b = self.0.as_ref();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    /// [`crate::manifest::key_commitment`] of the key the blob is sealed under.
    pub fn key_commitment(&self) -> [u8; 32] {
        let mut id = [0; 32];
        id.copy_from_slice(&self.0.as_ref()[field::COMMITMENT]);
        id
    }
}

pub fn emit_header(chunk_size: u32, key_commitment: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[field::MAGIC].copy_from_slice(&MAGIC);
    h[field::CHUNK].copy_from_slice(&chunk_size.to_be_bytes());
    h[field::COMMITMENT].copy_from_slice(key_commitment);
    h
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n.into()
}

/// Number of chunks for `size` plaintext bytes (an empty overlay still has
/// one, final, chunk).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    if size == 0 {
        1
    } else {
        size.div_ceil(chunk_size as u64)
    }
}

/// Length of the sealed stream for `size` plaintext bytes.
pub fn sealed_len(size: u64, chunk_size: u32) -> u64 {
    HEADER_LEN as u64 + size + chunk_count(size, chunk_size) * TAG_LEN as u64
}

/// The server's side (`ember overlay add`, once per overlay version):
/// seals chunk after chunk.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    chunk_size: u32,
    index: u64,
    finished: bool,
}

impl Sealer {
    pub fn new(key: &[u8; 32], chunk_size: u32) -> Result<Self, Error> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(Error::new(ErrorKind::SealedBadChunkSize {
                size: chunk_size,
            }));
        }
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            header: emit_header(chunk_size, &key_commitment(key)),
            chunk_size,
            index: 0,
            finished: false,
        })
    }

    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.header
    }

    /// Seals `buf` (plaintext in, ciphertext || tag out). Every chunk but the
    /// last must be exactly `chunk_size` long.
    pub fn seal_chunk(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), Error> {
        if self.finished
            || buf.len() > self.chunk_size as usize
            || (!last && buf.len() != self.chunk_size as usize)
        {
            return Err(Error::new(ErrorKind::SealedUnusable));
        }
        let tag = ember_aead::seal(&self.cipher, &nonce(self.index, last), &self.header, buf)
            .map_err(|_| Error::new(ErrorKind::SealedUnusable))?;
        buf.extend_from_slice(&tag);
        self.index += 1;
        self.finished = last;
        Ok(())
    }

    /// Seals a whole buffer at once (tests, small overlays).
    pub fn seal_all(key: &[u8; 32], chunk_size: u32, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut s = Sealer::new(key, chunk_size)?;
        let mut out = Vec::with_capacity(sealed_len(plaintext.len() as u64, chunk_size) as usize);
        out.extend_from_slice(&s.header);
        let n = chunk_count(plaintext.len() as u64, chunk_size) as usize;
        let mut chunks = plaintext.chunks(chunk_size as usize);
        for i in 0..n {
            let mut buf = chunks.next().unwrap_or(&[]).to_vec();
            s.seal_chunk(&mut buf, i + 1 == n)?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }
}

/// What the blob must be, from a verified manifest.
#[derive(Debug, Clone, Copy)]
struct Expected {
    key_commitment: [u8; 32],
    chunk_size: u32,
    plain_size: u64,
}

enum State {
    Header,
    Chunks {
        cipher: ChaCha20Poly1305,
        chunk_size: usize,
        index: u64,
    },
    Done,
    Failed,
}

/// The node's side: fed the sealed stream in pieces of any size, hands each
/// chunk's plaintext to the sink once that chunk authenticated.
pub struct Opener {
    key: [u8; 32],
    expected: Expected,
    state: State,
    header: [u8; HEADER_LEN],
    buf: Vec<u8>,
    written: u64,
}

impl Opener {
    /// An opener for the blob `envelope` describes, under its data key.
    pub fn for_manifest(envelope: &Envelope) -> Self {
        let m = &envelope.manifest;
        Opener {
            key: *envelope.data_key(),
            expected: Expected {
                key_commitment: m.key_commitment,
                chunk_size: m.chunk_size,
                plain_size: m.plain_size,
            },
            state: State::Header,
            header: [0; HEADER_LEN],
            buf: Vec::new(),
            written: 0,
        }
    }

    /// Plaintext bytes handed to the sink so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write<S: Sink>(&mut self, mut data: &[u8], sink: &mut S) -> Result<(), Error> {
        let r = (|| {
            while !data.is_empty() {
                match &self.state {
                    State::Header => {
                        let need = HEADER_LEN - self.buf.len();
                        let take = need.min(data.len());
                        self.buf.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if self.buf.len() == HEADER_LEN {
                            self.open_header()?;
                        }
                    }
                    State::Chunks { chunk_size, .. } => {
                        let full = chunk_size + TAG_LEN;
                        // A full buffer is a middle chunk only once more data
                        // follows it; otherwise it may be the final one.
                        if self.buf.len() == full {
                            self.open_chunk(false, sink)?;
                        }
                        let take = (full - self.buf.len()).min(data.len());
                        self.buf.extend_from_slice(&data[..take]);
                        data = &data[take..];
                    }
                    State::Done | State::Failed => {
                        return Err(Error::new(ErrorKind::SealedUnusable))
                    }
                }
            }
            Ok(())
        })();
        if r.is_err() {
            self.fail();
        }
        r
    }

    /// Ends the stream: the buffered rest must be the final chunk.
    pub fn finish<S: Sink>(&mut self, sink: &mut S) -> Result<(), Error> {
        let r = match &self.state {
            State::Header => Err(Error::new(ErrorKind::SealedTruncated { index: 0 })),
            State::Chunks { index, .. } => {
                let index = *index;
                if self.buf.len() < TAG_LEN {
                    Err(Error::new(ErrorKind::SealedTruncated { index }))
                } else {
                    self.open_chunk(true, sink).map_err(|e| match *e.kind() {
                        // A middle chunk opened as final fails its tag: the
                        // stream was cut at a chunk boundary.
                        ErrorKind::SealedChunkAuth { index } => {
                            Error::new(ErrorKind::SealedTruncated { index })
                        }
                        _ => e,
                    })
                }
            }
            State::Done | State::Failed => Err(Error::new(ErrorKind::SealedUnusable)),
        }
        .and_then(|()| self.check_expected())
        .and_then(|()| {
            sink.finish().map_err(|e| {
                Error::new(ErrorKind::Sink {
                    detail: format!("{e}").into(),
                })
            })
        });
        match r {
            Ok(()) => self.state = State::Done,
            Err(_) => self.fail(),
        }
        r
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        // Drop buffered bytes and the key material.
        self.buf.iter_mut().for_each(|b| *b = 0);
        self.buf.clear();
        self.key = [0; 32];
    }

    fn open_header(&mut self) -> Result<(), Error> {
        let header = Header::new_checked(&self.buf[..])?;
        // Another overlay's blob (or one for a key this node was not
        // given): named before any chunk is tried.
        if !ct_eq(&header.key_commitment(), &self.expected.key_commitment) {
            return Err(Error::new(ErrorKind::BlobOtherOverlay));
        }
        if header.chunk_size() != self.expected.chunk_size {
            return Err(Error::new(ErrorKind::SealedBadChunkSize {
                size: header.chunk_size(),
            }));
        }
        let chunk_size = header.chunk_size() as usize;
        self.header.copy_from_slice(&self.buf);
        self.buf.clear();
        self.buf.reserve_exact(chunk_size + TAG_LEN);
        self.state = State::Chunks {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&self.key)),
            chunk_size,
            index: 0,
        };
        Ok(())
    }

    fn open_chunk<S: Sink>(&mut self, last: bool, sink: &mut S) -> Result<(), Error> {
        let State::Chunks { cipher, index, .. } = &mut self.state else {
            return Err(Error::new(ErrorKind::SealedUnusable));
        };
        let split = self.buf.len() - TAG_LEN;
        let (body, tag) = self.buf.split_at_mut(split);
        let tag = Tag::clone_from_slice(tag);
        // Not generic: compiled once, at ember-aead's opt-level, whatever
        // crate instantiates this function for its sink.
        ember_aead::open(cipher, &nonce(*index, last), &self.header, body, &tag)
            .map_err(|_| Error::new(ErrorKind::SealedChunkAuth { index: *index }))?;
        *index += 1;
        self.written += body.len() as u64;
        if self.written > self.expected.plain_size {
            return Err(Error::new(ErrorKind::OverlaySizeMismatch {
                expected: self.expected.plain_size,
                got: self.written,
            }));
        }
        sink.write(body).map_err(|e| {
            Error::new(ErrorKind::Sink {
                detail: format!("{e}").into(),
            })
        })?;
        self.buf.clear();
        Ok(())
    }

    /// The final chunk opened: its plaintext must be as long as the
    /// manifest says (the only check the AEAD does not already make).
    fn check_expected(&mut self) -> Result<(), Error> {
        if self.written != self.expected.plain_size {
            return Err(Error::new(ErrorKind::OverlaySizeMismatch {
                expected: self.expected.plain_size,
                got: self.written,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        data: Vec<u8>,
        finished: bool,
    }
    impl Sink for Collect {
        type Error = &'static str;
        fn write(&mut self, p: &[u8]) -> Result<(), Self::Error> {
            self.data.extend_from_slice(p);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), Self::Error> {
            self.finished = true;
            Ok(())
        }
    }

    const KEY: [u8; 32] = [0x42; 32];
    const CHUNK: u32 = 64;

    fn plaintext(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The envelope a node would hold for `p` sealed under `key`.
    fn expected_with(key: [u8; 32], p: &[u8]) -> Envelope {
        let mut m = crate::manifest::tests::manifest(&key);
        m.chunk_size = CHUNK;
        m.plain_size = p.len() as u64;
        Envelope::new(m, key).unwrap()
    }

    fn expected(p: &[u8]) -> Envelope {
        expected_with(KEY, p)
    }

    fn open(sealed: &[u8], exp: Envelope, piece: usize) -> (Result<(), Error>, Collect) {
        let mut sink = Collect::default();
        let mut o = Opener::for_manifest(&exp);
        for p in sealed.chunks(piece.max(1)) {
            if let Err(e) = o.write(p, &mut sink) {
                return (Err(e), sink);
            }
        }
        (o.finish(&mut sink), sink)
    }

    #[test]
    fn opens_what_was_sealed_for_any_length_and_piece_size() {
        for n in [0, 1, 63, 64, 65, 128, 129, 1000] {
            let p = plaintext(n);
            let s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
            assert_eq!(s.len() as u64, sealed_len(n as u64, CHUNK));
            for piece in [1, 7, 80, 4096] {
                let (r, sink) = open(&s, expected(&p), piece);
                assert_eq!(r, Ok(()), "n={n} piece={piece}");
                assert_eq!(sink.data, p);
                assert!(sink.finished);
            }
        }
    }

    #[test]
    fn tampered_chunk_is_refused_before_its_plaintext_reaches_the_sink() {
        let p = plaintext(300);
        let mut s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        let second_chunk = HEADER_LEN + (CHUNK as usize + TAG_LEN) + 5;
        s[second_chunk] ^= 1;
        let (r, sink) = open(&s, expected(&p), 1000);
        assert_eq!(r, Err(Error::new(ErrorKind::SealedChunkAuth { index: 1 })));
        assert_eq!(
            sink.data,
            &p[..CHUNK as usize],
            "only the authenticated first chunk"
        );
        assert!(!sink.finished);
    }

    #[test]
    fn stream_cut_at_a_chunk_boundary_is_truncated() {
        let p = plaintext(300);
        let s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        let cut = HEADER_LEN + 2 * (CHUNK as usize + TAG_LEN);
        let (r, sink) = open(&s[..cut], expected(&p), 1000);
        assert_eq!(r, Err(Error::new(ErrorKind::SealedTruncated { index: 1 })));
        assert!(!sink.finished);
    }

    #[test]
    fn stream_cut_inside_a_chunk_is_refused() {
        let p = plaintext(300);
        let s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        for cut in [0, 10, HEADER_LEN, HEADER_LEN + 10, s.len() - 1] {
            let (r, sink) = open(&s[..cut], expected(&p), 1000);
            assert!(r.is_err(), "cut {cut}");
            assert!(!sink.finished);
        }
    }

    #[test]
    fn swapped_chunks_are_refused() {
        let p = plaintext(300);
        let mut s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        let c = CHUNK as usize + TAG_LEN;
        let (a, b) = (HEADER_LEN, HEADER_LEN + c);
        let first = s[a..a + c].to_vec();
        s.copy_within(b..b + c, a);
        s[b..b + c].copy_from_slice(&first);
        let (r, sink) = open(&s, expected(&p), 1000);
        assert_eq!(r, Err(Error::new(ErrorKind::SealedChunkAuth { index: 0 })));
        assert!(sink.data.is_empty());
    }

    #[test]
    fn another_overlays_blob_is_named_before_any_chunk_is_tried() {
        let p = plaintext(100);
        let s = Sealer::seal_all(&[1; 32], CHUNK, &p).unwrap();
        let (r, sink) = open(&s, expected(&p), 1000);
        assert_eq!(r, Err(Error::new(ErrorKind::BlobOtherOverlay)));
        assert!(sink.data.is_empty());
    }

    #[test]
    fn wrong_key_or_header_edit_opens_nothing() {
        let p = plaintext(100);
        // The header names our key, the chunks are another key's.
        let mut s = Sealer::seal_all(&[1; 32], CHUNK, &p).unwrap();
        s[16..48].copy_from_slice(&key_commitment(&KEY));
        let (r, sink) = open(&s, expected(&p), 1000);
        assert_eq!(r, Err(Error::new(ErrorKind::SealedChunkAuth { index: 0 })));
        assert!(sink.data.is_empty());

        let mut s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        s[12] = 1; // reserved bits
        let (r, sink) = open(&s, expected(&p), 1000);
        assert_eq!(r, Err(Error::new(ErrorKind::SealedBadHeader)));
        assert!(sink.data.is_empty());
        let mut s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        s[11] = 32; // chunk size 64 -> 32: not the manifest's
        let (r, sink) = open(&s, expected(&p), 1000);
        assert_eq!(
            r,
            Err(Error::new(ErrorKind::SealedBadChunkSize { size: 32 }))
        );
        assert!(sink.data.is_empty());
    }

    #[test]
    fn plaintext_longer_or_shorter_than_the_manifest_says_is_refused() {
        let p = plaintext(100);
        let s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        let (r, sink) = open(&s, expected(&p[..99]), 1000);
        assert_eq!(
            r,
            Err(Error::new(ErrorKind::OverlaySizeMismatch {
                expected: 99,
                got: 100
            }))
        );
        assert!(!sink.finished);
        let (r, sink) = open(&s, expected(&plaintext(101)), 1000);
        assert_eq!(
            r,
            Err(Error::new(ErrorKind::OverlaySizeMismatch {
                expected: 101,
                got: 100
            }))
        );
        assert!(!sink.finished);
    }

    #[test]
    fn opener_is_unusable_after_a_failure() {
        let p = plaintext(100);
        let mut s = Sealer::seal_all(&KEY, CHUNK, &p).unwrap();
        s[HEADER_LEN] ^= 1;
        let mut sink = Collect::default();
        let mut o = Opener::for_manifest(&expected(&p));
        assert!(o.write(&s, &mut sink).is_err());
        assert_eq!(
            o.write(&s, &mut sink),
            Err(Error::new(ErrorKind::SealedUnusable))
        );
        assert_eq!(
            o.finish(&mut sink),
            Err(Error::new(ErrorKind::SealedUnusable))
        );
    }

    #[test]
    fn header_view_checks_bounds() {
        assert_eq!(
            Header::new_checked(&[0u8; 10][..]).err(),
            Some(Error::new(ErrorKind::SealedBadHeader))
        );
        let h = emit_header(8, &[0; 32]);
        assert_eq!(
            Header::new_checked(&h[..]).err(),
            Some(Error::new(ErrorKind::SealedBadChunkSize { size: 8 }))
        );
        let h = emit_header(65536, &[5; 32]);
        let v = Header::new_checked(&h[..]).unwrap();
        assert_eq!(v.chunk_size(), 65536);
        assert_eq!(v.key_commitment(), [5; 32]);
    }
}
