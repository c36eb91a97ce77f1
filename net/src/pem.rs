//! PEM (RFC 7468) to DER: the CA bundle in the initrd and the host tool's
//! files are PEM.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec::Vec;

fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

pub fn base64_decode(text: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut padding = 0;
    for &c in text {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(Error::new(ErrorKind::Pem("data after padding")));
        }
        let v = b64_value(c).ok_or(Error::new(ErrorKind::Pem("invalid base64 character")))?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 {
        return Err(Error::new(ErrorKind::Pem("too much padding")));
    }
    Ok(out)
}

/// Where `needle` first occurs in `hay`. On bytes rather than with
/// `str::find(&str)` and str slicing, whose panic path drags char
/// formatting and Unicode tables into /init.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every block whose label is `label` (e.g. "CERTIFICATE"), decoded.
pub fn decode_all(pem: &[u8], label: &str) -> Result<Vec<Vec<u8>>> {
    core::str::from_utf8(pem).map_err(|_| Error::new(ErrorKind::Pem("not UTF-8")))?;
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, b"-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end =
            find(after, b"-----").ok_or(Error::new(ErrorKind::Pem("unterminated BEGIN line")))?;
        let this_label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker =
            find(body_start, b"-----END ").ok_or(Error::new(ErrorKind::Pem("missing END line")))?;
        let body = &body_start[..end_marker];
        let tail = &body_start[end_marker + 9..];
        let tail_end =
            find(tail, b"-----").ok_or(Error::new(ErrorKind::Pem("unterminated END line")))?;
        if tail[..tail_end] != *this_label {
            return Err(Error::new(ErrorKind::Pem("END label differs from BEGIN")));
        }
        if this_label == label.as_bytes() {
            blocks.push(base64_decode(body)?);
        }
        rest = &tail[tail_end + 5..];
    }
    Ok(blocks)
}

/// The first block labelled with one of `labels`, with its label.
pub fn decode_first<'l>(pem: &[u8], labels: &[&'l str]) -> Result<(&'l str, Vec<u8>)> {
    for label in labels {
        if let Some(block) = decode_all(pem, label)?.into_iter().next() {
            return Ok((label, block));
        }
    }
    Err(Error::new(ErrorKind::Pem(
        "no block with the expected label",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode(b"TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode(b"TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode(b"TQ==").unwrap(), b"M");
        assert!(base64_decode(b"T!==").is_err());
    }

    #[test]
    fn bundle_yields_each_certificate_block() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nTQ==\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nTWE=\n-----END CERTIFICATE-----\n";
        let certs = decode_all(pem, "CERTIFICATE").unwrap();
        assert_eq!(certs, [b"Man".to_vec(), b"Ma".to_vec()]);
        assert_eq!(
            decode_first(pem, &["EC PRIVATE KEY", "PRIVATE KEY"]).unwrap(),
            ("PRIVATE KEY", b"M".to_vec())
        );
    }
}
