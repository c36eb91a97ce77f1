//! Bounds-checked big-endian reading and writing of TPM structures.
//!
//! The writer appends to a buffer whose capacity was reserved once; writes
//! past `limit` are dropped and reported by [`Writer::finish`], so an
//! oversized argument never grows the heap.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec::Vec;

pub(crate) struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
    needed: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>, limit: usize) -> Self {
        buf.clear();
        Writer {
            buf,
            limit,
            needed: 0,
        }
    }

    /// A writer without a limit, for host-side structures and templates.
    pub(crate) fn unbounded(buf: &'a mut Vec<u8>) -> Self {
        Writer {
            buf,
            limit: usize::MAX,
            needed: 0,
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.needed = self.needed.saturating_add(b.len());
        if self.needed <= self.limit {
            self.buf.extend_from_slice(b);
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    /// A TPM2B: u16 size then the bytes.
    pub(crate) fn tpm2b(&mut self, b: &[u8]) -> Result<()> {
        let len = u16::try_from(b.len()).map_err(|_| {
            Error::new(ErrorKind::InvalidArgument {
                what: "TPM2B longer than 65535 bytes",
            })
        })?;
        self.u16(len);
        self.bytes(b);
        Ok(())
    }

    /// Reserves a u16 size field; [`Writer::end_size16`] fills it in.
    pub(crate) fn begin_size16(&mut self) -> usize {
        let at = self.buf.len();
        self.u16(0);
        at
    }

    pub(crate) fn end_size16(&mut self, at: usize) -> Result<()> {
        if self.needed > self.limit {
            return Ok(()); // finish() reports the overflow
        }
        let len = self.buf.len() - at - 2;
        let len = u16::try_from(len).map_err(|_| {
            Error::new(ErrorKind::InvalidArgument {
                what: "nested structure too long",
            })
        })?;
        self.buf[at..at + 2].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Reserves a u32 size field (command size, parameter size).
    pub(crate) fn begin_size32(&mut self) -> usize {
        let at = self.buf.len();
        self.u32(0);
        at
    }

    /// Fills a u32 size field with the bytes written since `from`.
    pub(crate) fn end_size32(&mut self, at: usize, from: usize) {
        if self.needed > self.limit {
            return;
        }
        let len = (self.buf.len() - from) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.needed > self.limit {
            return Err(Error::new(ErrorKind::CommandTooLarge {
                needed: self.needed,
                limit: self.limit,
            }));
        }
        Ok(())
    }
}

/// A cursor over untrusted TPM bytes. Every read checks the remaining length
/// and reports the offset of a short field.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes; `what` names the field in the error.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::new(ErrorKind::Malformed {
                what,
                offset: self.pos,
            }));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A TPM2B: u16 size then that many bytes.
    pub fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let n = self.u16(what)? as usize;
        self.bytes(n, what)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::new(ErrorKind::Malformed {
                what,
                offset: self.pos,
            }));
        }
        Ok(())
    }
}
