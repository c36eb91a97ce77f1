//! The 512-byte tar header block (v7, ustar, GNU) as a zero-copy view, and
//! its decoding into a typed `Header`.
//!
//! Numeric fields are octal ASCII (NUL/space padded), or GNU base-256 when
//! the first byte has its high bit set (sizes ≥ 8 GiB, negative mtimes).

use super::error::{ErrorKind as Error, Field};

pub const BLOCK: usize = 512;

/// Byte ranges of the header fields (POSIX ustar); the tar writer in
/// `ember image build` uses the same table.
pub mod field {
    use core::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const UNAME: Range<usize> = 265..297;
    pub const GNAME: Range<usize> = 297..329;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const PREFIX: Range<usize> = 345..500;
}

/// A view over one header block. The constructor is the only length check.
#[derive(Clone, Copy)]
pub struct HeaderBlock<'a> {
    buf: &'a [u8; BLOCK],
}

/// Which dialect wrote the header; it decides whether `prefix` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Pre-POSIX: no magic, no prefix, no device numbers.
    V7,
    /// `ustar\0` + `00`: POSIX, with a 155-byte name prefix.
    Ustar,
    /// `ustar  \0`: GNU, whose bytes 345.. hold atime/ctime, not a prefix.
    Gnu,
}

impl<'a> HeaderBlock<'a> {
    pub fn new(buf: &'a [u8; BLOCK]) -> Self {
        HeaderBlock { buf }
    }

    pub fn is_zero(&self) -> bool {
        self.buf.iter().all(|&b| b == 0)
    }

    pub fn dialect(&self) -> Dialect {
        match &self.buf[field::MAGIC] {
            b"ustar\0" => Dialect::Ustar,
            b"ustar " => Dialect::Gnu,
            _ => Dialect::V7,
        }
    }

    pub fn name(&self) -> &'a [u8] {
        until_nul(&self.buf[field::NAME])
    }

    pub fn prefix(&self) -> &'a [u8] {
        match self.dialect() {
            Dialect::Ustar => until_nul(&self.buf[field::PREFIX]),
            _ => &[],
        }
    }

    pub fn linkname(&self) -> &'a [u8] {
        until_nul(&self.buf[field::LINKNAME])
    }

    pub fn typeflag(&self) -> u8 {
        self.buf[field::TYPEFLAG]
    }

    pub fn mode(&self) -> Result<u64, Error> {
        number(&self.buf[field::MODE], Field::Mode)
    }
    pub fn uid(&self) -> Result<u64, Error> {
        number(&self.buf[field::UID], Field::Uid)
    }
    pub fn gid(&self) -> Result<u64, Error> {
        number(&self.buf[field::GID], Field::Gid)
    }
    pub fn size(&self) -> Result<u64, Error> {
        number(&self.buf[field::SIZE], Field::Size)
    }
    pub fn mtime(&self) -> Result<i64, Error> {
        signed_number(&self.buf[field::MTIME], Field::Mtime)
    }
    pub fn devmajor(&self) -> Result<u64, Error> {
        match self.dialect() {
            Dialect::V7 => Ok(0),
            _ => number(&self.buf[field::DEVMAJOR], Field::DevMajor),
        }
    }
    pub fn devminor(&self) -> Result<u64, Error> {
        match self.dialect() {
            Dialect::V7 => Ok(0),
            _ => number(&self.buf[field::DEVMINOR], Field::DevMinor),
        }
    }

    /// Verifies the checksum: the unsigned byte sum with the checksum field
    /// read as spaces; old writers summed signed bytes, which is accepted too.
    pub fn verify_checksum(&self) -> Result<(), Error> {
        let stored = number(&self.buf[field::CHKSUM], Field::Checksum)?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in self.buf.iter().enumerate() {
            let b = if field::CHKSUM.contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || stored as i64 == signed {
            Ok(())
        } else {
            Err(Error::BadChecksum {
                stored,
                computed: unsigned,
            })
        }
    }
}

/// Computes and stores the checksum of a header being built (tests, fuzz seeds).
pub fn fill_checksum(buf: &mut [u8; BLOCK]) {
    buf[field::CHKSUM].fill(b' ');
    let sum: u32 = buf.iter().map(|&b| u32::from(b)).sum();
    let s = alloc::format!("{sum:06o}\0 ");
    buf[field::CHKSUM].copy_from_slice(s.as_bytes());
}

fn until_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// An unsigned numeric field: octal, or base-256 (GNU) with the top bit set.
fn number(b: &[u8], field: Field) -> Result<u64, Error> {
    let v = signed_number(b, field)?;
    u64::try_from(v).map_err(|_| Error::BadNumber { field })
}

fn signed_number(b: &[u8], field: Field) -> Result<i64, Error> {
    match b.first() {
        Some(&first) if first & 0x80 != 0 => base256(b, field),
        _ => octal(b, field),
    }
}

fn octal(b: &[u8], field: Field) -> Result<i64, Error> {
    let mut i = 0;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let mut v: i64 = 0;
    let mut digits = 0;
    while i < b.len() && (b'0'..=b'7').contains(&b[i]) {
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(b[i] - b'0')))
            .ok_or(Error::BadNumber { field })?;
        i += 1;
        digits += 1;
    }
    // What may follow the digits: NUL or space terminators only.
    if b[i..].iter().any(|&c| c != 0 && c != b' ') {
        return Err(Error::BadNumber { field });
    }
    // An all-blank field means zero to every writer we know but the checksum.
    if digits == 0 && field == Field::Checksum {
        return Err(Error::BadNumber { field });
    }
    Ok(v)
}

/// GNU base-256: big-endian two's complement; bit 6 of the first byte is the
/// sign (0x80 positive, 0xff negative).
fn base256(b: &[u8], field: Field) -> Result<i64, Error> {
    let negative = b[0] & 0x40 != 0;
    let mut v: i64 = if negative { -1 } else { 0 };
    for (i, &byte) in b.iter().enumerate() {
        let byte = if i == 0 {
            if negative {
                byte
            } else {
                byte & 0x7f
            }
        } else {
            byte
        };
        // Reject values that would shift significant bits out.
        let top = v >> 55;
        if top != 0 && top != -1 {
            return Err(Error::BadNumber { field });
        }
        v = (v << 8) | i64::from(byte);
    }
    if negative != (v < 0) {
        return Err(Error::BadNumber { field });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_with(f: impl FnOnce(&mut [u8; BLOCK])) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        f(&mut b);
        fill_checksum(&mut b);
        b
    }

    #[test]
    fn octal_fields_accept_nul_and_space_padding() {
        assert_eq!(octal(b"0000644\0", Field::Mode).unwrap(), 0o644);
        assert_eq!(octal(b" 644 \0\0\0", Field::Mode).unwrap(), 0o644);
        assert_eq!(octal(b"\0\0\0\0\0\0\0\0", Field::Mode).unwrap(), 0);
        assert!(octal(b"0000x44\0", Field::Mode).is_err());
        assert!(octal(b"00008\0\0\0", Field::Mode).is_err());
    }

    #[test]
    fn base256_size_above_8_gib_decodes() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&(10u64 << 30).to_be_bytes());
        assert_eq!(base256(&f, Field::Size).unwrap(), 10 << 30);
    }

    #[test]
    fn base256_negative_mtime_decodes() {
        let mut f = [0xffu8; 12];
        f[11] = 0xfe;
        assert_eq!(base256(&f, Field::Mtime).unwrap(), -2);
        assert!(number(&f, Field::Size).is_err());
    }

    #[test]
    fn base256_overflow_is_refused() {
        let mut f = [0xffu8; 12];
        f[0] = 0x80;
        assert!(base256(&f, Field::Size).is_err());
    }

    #[test]
    fn checksum_mismatch_is_detected() {
        let mut b = block_with(|b| {
            b[..5].copy_from_slice(b"hello");
            b[field::MAGIC].copy_from_slice(b"ustar\0");
        });
        assert!(HeaderBlock::new(&b).verify_checksum().is_ok());
        b[0] = b'j';
        assert!(matches!(
            HeaderBlock::new(&b).verify_checksum(),
            Err(Error::BadChecksum { .. })
        ));
    }

    #[test]
    fn gnu_header_has_no_prefix() {
        let b = block_with(|b| {
            b[..3].copy_from_slice(b"abc");
            b[field::MAGIC].copy_from_slice(b"ustar ");
            b[field::PREFIX.start] = b'x';
        });
        let h = HeaderBlock::new(&b);
        assert_eq!(h.dialect(), Dialect::Gnu);
        assert_eq!(h.prefix(), b"");
        assert_eq!(h.name(), b"abc");
    }
}
