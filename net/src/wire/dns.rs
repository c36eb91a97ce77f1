//! DNS messages (RFC 1035): an A query, and the A records of its answer.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec::Vec;

mod field {
    use core::ops::Range;
    pub const ID: Range<usize> = 0..2;
    pub const FLAGS: Range<usize> = 2..4;
    pub const QDCOUNT: Range<usize> = 4..6;
    pub const ANCOUNT: Range<usize> = 6..8;
}
pub const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;

/// A recursive query for `name`'s A records.
pub fn emit_query(id: u16, name: &str) -> Result<Vec<u8>> {
    if !crate::url::valid_dns_name(name) {
        return Err(Error::new(ErrorKind::BadHostName));
    }
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAG_RD.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

fn be16(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(Error::new(ErrorKind::DnsMalformed("truncated")))
}

/// Skips a (possibly compressed) name starting at `at`; returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize> {
    for _ in 0..128 {
        let len = *msg
            .get(at)
            .ok_or(Error::new(ErrorKind::DnsMalformed("truncated name")))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(at + 1)
                    .ok_or(Error::new(ErrorKind::DnsMalformed("truncated pointer")))?;
                return Ok(at + 2);
            }
            l if l & 0xc0 == 0 => at += 1 + l as usize,
            _ => return Err(Error::new(ErrorKind::DnsMalformed("label type"))),
        }
    }
    Err(Error::new(ErrorKind::DnsMalformed("name too long")))
}

/// The A records of the answer to query `id`. The records' owner names are
/// not compared with the question: the resolver asks one name per socket
/// and checks the ID and the echoed question count.
pub fn parse_answer(msg: &[u8], id: u16) -> Result<Vec<[u8; 4]>> {
    if msg.len() < HEADER_LEN {
        return Err(Error::new(ErrorKind::DnsMalformed("shorter than a header")));
    }
    if u16::from_be_bytes([msg[field::ID.start], msg[field::ID.start + 1]]) != id {
        return Err(Error::new(ErrorKind::DnsMalformed(
            "answer for another query",
        )));
    }
    let flags = be16(msg, field::FLAGS.start)?;
    if flags & FLAG_QR == 0 {
        return Err(Error::new(ErrorKind::DnsMalformed("not a response")));
    }
    if flags & FLAG_TC != 0 {
        return Err(Error::new(ErrorKind::DnsMalformed("truncated response")));
    }
    let rcode = (flags & 0xf) as u8;
    if rcode != 0 {
        return Err(Error::new(ErrorKind::DnsRcode(rcode)));
    }
    let qd = be16(msg, field::QDCOUNT.start)?;
    let an = be16(msg, field::ANCOUNT.start)?;
    if qd != 1 {
        return Err(Error::new(ErrorKind::DnsMalformed("question count")));
    }
    let mut at = skip_name(msg, HEADER_LEN)? + 4;
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at)?;
        let rtype = be16(msg, at)?;
        let class = be16(msg, at + 2)?;
        let rdlen = be16(msg, at + 8)? as usize;
        let rdata =
            msg.get(at + 10..at + 10 + rdlen)
                .ok_or(Error::new(ErrorKind::DnsMalformed(
                    "record runs past the message",
                )))?;
        if rtype == TYPE_A && class == CLASS_IN {
            let a: [u8; 4] = rdata
                .try_into()
                .map_err(|_| Error::new(ErrorKind::DnsMalformed("A record length")))?;
            out.push(a);
        }
        at += 10 + rdlen;
    }
    if out.is_empty() {
        return Err(Error::new(ErrorKind::DnsNoAddress));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsmasq's answer to `boot.ember.test A` (a CNAME then an A record, compressed).
    fn answer() -> Vec<u8> {
        let mut m = alloc::vec![0xab, 0xcd, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x04boot\x05ember\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 5, 2, b'x', b'y', 0xc0, 17,
        ]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 7]);
        m
    }

    #[test]
    fn query_encodes_labels() {
        let q = emit_query(0xabcd, "boot.ember.test").unwrap();
        assert_eq!(&q[..4], &[0xab, 0xcd, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x04boot\x05ember\x04test\x00\x00\x01\x00\x01");
        assert!(emit_query(1, "bad..name").is_err());
    }

    #[test]
    fn answer_yields_a_records_and_skips_cname() {
        assert_eq!(parse_answer(&answer(), 0xabcd).unwrap(), [[10, 0, 0, 7]]);
        assert_eq!(
            parse_answer(&answer(), 1),
            Err(Error::new(ErrorKind::DnsMalformed(
                "answer for another query"
            )))
        );
        for cut in 0..answer().len() {
            assert!(parse_answer(&answer()[..cut], 0xabcd).is_err());
        }
        let mut nx = answer();
        nx[3] = 0x83;
        assert_eq!(
            parse_answer(&nx, 0xabcd),
            Err(Error::new(ErrorKind::DnsRcode(3)))
        );
    }
}
