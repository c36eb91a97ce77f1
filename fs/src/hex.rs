//! Bytes as lowercase hex and back: digests in logs and file names, nonces
//! on the command line. The one hex codec of the workspace (the init, the
//! protocol, the host tool and the server all use it).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Formats bytes as lowercase hex without allocating: `{}` of `Hex(b)`.
#[derive(Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pair = [0u8; 2];
        for b in self.0 {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
            // Both bytes are ASCII digits: always valid UTF-8.
            f.write_str(core::str::from_utf8(&pair).unwrap_or("??"))?;
        }
        Ok(())
    }
}

/// `bytes` as a lowercase hex string.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Decodes hex (either case, an optional `0x` prefix); `None` for an odd
/// length or a non-hex character.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s).as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn round_trips_and_refuses_bad_digits() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(hex(&bytes), "007fabff");
        assert_eq!(format!("{}", Hex(&bytes)), "007fabff");
        assert_eq!(unhex("007FabfF").unwrap(), bytes);
        assert_eq!(unhex("0x01").unwrap(), [1]);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("").unwrap(), []);
    }
}
