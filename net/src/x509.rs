//! The slice of X.509 (RFC 5280) the HTTPS client checks: a DER reader, the
//! certificate fields needed for chain building, validity, host names (DNS
//! and IPv4 SANs) and P-256 ECDSA signatures.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec::Vec;

pub const TAG_BOOLEAN: u8 = 0x01;
pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_BIT_STRING: u8 = 0x03;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_OID: u8 = 0x06;
pub const TAG_UTC_TIME: u8 = 0x17;
pub const TAG_GENERALIZED_TIME: u8 = 0x18;
pub const TAG_SEQUENCE: u8 = 0x30;

pub const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// One DER element: tag, content, and the whole TLV.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads consecutive DER elements from a slice.
#[derive(Debug, Clone, Copy)]
pub struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Der { rest: buf }
    }
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    pub fn read(&mut self) -> Result<Tlv<'a>> {
        let buf = self.rest;
        let (&tag, after) = buf
            .split_first()
            .ok_or(Error::new(ErrorKind::CertMalformed("truncated element")))?;
        if tag & 0x1f == 0x1f {
            return Err(Error::new(ErrorKind::CertMalformed("multi-byte tag")));
        }
        let (&first, after) = after
            .split_first()
            .ok_or(Error::new(ErrorKind::CertMalformed("truncated length")))?;
        let (len, after) = if first < 0x80 {
            (first as usize, after)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 3 || after.len() < n {
                return Err(Error::new(ErrorKind::CertMalformed("bad length")));
            }
            let len = after[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, &after[n..])
        };
        if len > after.len() {
            return Err(Error::new(ErrorKind::CertMalformed(
                "element runs past its container",
            )));
        }
        let header = buf.len() - after.len();
        let tlv = Tlv {
            tag,
            content: &after[..len],
            raw: &buf[..header + len],
        };
        self.rest = &after[len..];
        Ok(tlv)
    }

    pub fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>> {
        let tlv = self.read()?;
        if tlv.tag != tag {
            return Err(Error::new(ErrorKind::CertMalformed(what)));
        }
        Ok(tlv)
    }
}

fn bit_string<'a>(tlv: &Tlv<'a>, what: &'static str) -> Result<&'a [u8]> {
    match tlv.content.split_first() {
        Some((0, bits)) => Ok(bits),
        _ => Err(Error::new(ErrorKind::CertMalformed(what))),
    }
}

/// The parts of a certificate the verifier looks at, borrowed from its DER.
#[derive(Debug, Clone)]
pub struct Certificate<'a> {
    pub tbs: &'a [u8],
    pub signature_algorithm: &'a [u8],
    pub signature: &'a [u8],
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    pub not_before: u64,
    pub not_after: u64,
    pub key_algorithm: &'a [u8],
    pub key_curve: Option<&'a [u8]>,
    pub public_key: &'a [u8],
    pub dns_names: Vec<&'a [u8]>,
    pub ip_addresses: Vec<&'a [u8]>,
    pub is_ca: bool,
}

impl<'a> Certificate<'a> {
    pub fn parse(der: &'a [u8]) -> Result<Self> {
        let mut top = Der::new(der);
        let cert = top.expect(TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
        let mut c = Der::new(cert.content);
        let tbs = c.expect(TAG_SEQUENCE, "tbsCertificate")?;
        let alg = c.expect(TAG_SEQUENCE, "signatureAlgorithm")?;
        let signature_algorithm = Der::new(alg.content)
            .expect(TAG_OID, "signature algorithm OID")?
            .content;
        let signature = bit_string(
            &c.expect(TAG_BIT_STRING, "signatureValue")?,
            "signatureValue",
        )?;

        let mut t = Der::new(tbs.content);
        if t.peek_tag() == Some(0xa0) {
            t.read()?; // version
        }
        t.expect(TAG_INTEGER, "serialNumber")?;
        t.expect(TAG_SEQUENCE, "tbs signature")?;
        let issuer = t.expect(TAG_SEQUENCE, "issuer")?.raw;
        let validity = t.expect(TAG_SEQUENCE, "validity")?;
        let mut v = Der::new(validity.content);
        let not_before = parse_time(&v.read()?)?;
        let not_after = parse_time(&v.read()?)?;
        let subject = t.expect(TAG_SEQUENCE, "subject")?.raw;
        let spki = t.expect(TAG_SEQUENCE, "subjectPublicKeyInfo")?;
        let mut s = Der::new(spki.content);
        let key_alg = s.expect(TAG_SEQUENCE, "key algorithm")?;
        let mut ka = Der::new(key_alg.content);
        let key_algorithm = ka.expect(TAG_OID, "key algorithm OID")?.content;
        let key_curve = match ka.peek_tag() {
            Some(TAG_OID) => Some(ka.read()?.content),
            _ => None,
        };
        let public_key = bit_string(
            &s.expect(TAG_BIT_STRING, "subjectPublicKey")?,
            "subjectPublicKey",
        )?;

        let mut cert = Certificate {
            tbs: tbs.raw,
            signature_algorithm,
            signature,
            issuer,
            subject,
            not_before,
            not_after,
            key_algorithm,
            key_curve,
            public_key,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            is_ca: false,
        };
        while !t.is_empty() {
            let el = t.read()?;
            if el.tag == 0xa3 {
                cert.parse_extensions(el.content)?;
            }
        }
        Ok(cert)
    }

    fn parse_extensions(&mut self, explicit: &'a [u8]) -> Result<()> {
        let exts = Der::new(explicit).expect(TAG_SEQUENCE, "extensions")?;
        let mut e = Der::new(exts.content);
        while !e.is_empty() {
            let ext = e.expect(TAG_SEQUENCE, "extension")?;
            let mut x = Der::new(ext.content);
            let oid = x.expect(TAG_OID, "extension OID")?.content;
            if x.peek_tag() == Some(TAG_BOOLEAN) {
                x.read()?;
            }
            let value = x.expect(TAG_OCTET_STRING, "extension value")?.content;
            if oid == OID_SUBJECT_ALT_NAME {
                let names = Der::new(value).expect(TAG_SEQUENCE, "subjectAltName")?;
                let mut n = Der::new(names.content);
                while !n.is_empty() {
                    let name = n.read()?;
                    match name.tag {
                        0x82 => self.dns_names.push(name.content),
                        0x87 => self.ip_addresses.push(name.content),
                        _ => {}
                    }
                }
            } else if oid == OID_BASIC_CONSTRAINTS {
                let bc = Der::new(value).expect(TAG_SEQUENCE, "basicConstraints")?;
                let mut b = Der::new(bc.content);
                if b.peek_tag() == Some(TAG_BOOLEAN) {
                    self.is_ca = b.read()?.content == [0xff];
                }
            }
        }
        Ok(())
    }

    /// Checks that `self` was signed by the key in `issuer`.
    pub fn verify_signed_by(&self, issuer: &Certificate<'_>) -> Result<()> {
        if self.signature_algorithm != OID_ECDSA_SHA256 {
            return Err(Error::new(ErrorKind::CertUnsupportedAlgorithm));
        }
        verify_p256(issuer, self.tbs, self.signature)
    }

    /// Whether `host` (a DNS name or an IPv4 literal) is named by a SAN.
    /// The CN is not consulted (RFC 6125 and the CA/B baseline).
    pub fn matches_host(&self, host: &str) -> bool {
        if let Some(ip) = crate::url::parse_ipv4(host) {
            return self.ip_addresses.iter().any(|a| *a == ip);
        }
        self.dns_names
            .iter()
            .any(|name| dns_name_matches(name, host.as_bytes()))
    }

    pub fn check_validity(&self, now: u64) -> Result<()> {
        if now < self.not_before {
            return Err(Error::new(ErrorKind::CertNotYetValid));
        }
        if now > self.not_after {
            return Err(Error::new(ErrorKind::CertExpired));
        }
        Ok(())
    }
}

/// Verifies an ECDSA P-256/SHA-256 DER signature over `msg` with `key_holder`'s key.
pub fn verify_p256(key_holder: &Certificate<'_>, msg: &[u8], der_signature: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::Verifier;
    if key_holder.key_algorithm != OID_EC_PUBLIC_KEY || key_holder.key_curve != Some(OID_P256) {
        return Err(Error::new(ErrorKind::CertUnsupportedAlgorithm));
    }
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_holder.public_key)
        .map_err(|_| Error::new(ErrorKind::CertMalformed("public key")))?;
    let sig = ecdsa_signature_from_der(der_signature)?;
    key.verify(msg, &sig)
        .map_err(|_| Error::new(ErrorKind::CertBadSignature))
}

/// ECDSA-Sig-Value (RFC 3279 2.2.3): `SEQUENCE { r INTEGER, s INTEGER }` in
/// strict DER (minimal, non-negative integers, nothing trailing), as the
/// `der` crate would parse it; r and s must be in 1..n. Done with this
/// module's reader so that /init carries one DER parser, not two.
pub fn ecdsa_signature_from_der(der: &[u8]) -> Result<p256::ecdsa::Signature> {
    let bad = || Error::new(ErrorKind::CertMalformed("signature"));
    let mut outer = Der::new(der);
    let seq = outer.expect(TAG_SEQUENCE, "signature")?;
    let mut inner = Der::new(seq.content);
    let r = scalar_bytes(inner.expect(TAG_INTEGER, "signature r")?.content).ok_or_else(bad)?;
    let s = scalar_bytes(inner.expect(TAG_INTEGER, "signature s")?.content).ok_or_else(bad)?;
    if !outer.is_empty() || !inner.is_empty() || seq.raw.len() != der.len() {
        return Err(bad());
    }
    p256::ecdsa::Signature::from_scalars(r, s).map_err(|_| bad())
}

/// A positive, minimally encoded DER INTEGER of at most 32 bytes, left-padded.
fn scalar_bytes(content: &[u8]) -> Option<[u8; 32]> {
    let digits = match content {
        [] => return None,
        [b, ..] if b & 0x80 != 0 => return None,
        [0, next, ..] if next & 0x80 != 0 => &content[1..],
        [0, _, ..] => return None,
        _ => content,
    };
    let mut out = [0u8; 32];
    out.get_mut(32usize.checked_sub(digits.len())?..)?
        .copy_from_slice(digits);
    Some(out)
}

/// Encodes an ECDSA signature as DER ECDSA-Sig-Value (at most 72 bytes).
pub fn ecdsa_signature_to_der(sig: &p256::ecdsa::Signature, out: &mut [u8; 72]) -> usize {
    let (r, s) = sig.split_bytes();
    let mut body = [0u8; 70];
    let mut n = 0;
    for int in [&r[..], &s[..]] {
        let skip = int.iter().take_while(|&&b| b == 0).count().min(31);
        let digits = &int[skip..];
        let pad = usize::from(digits[0] & 0x80 != 0);
        body[n] = TAG_INTEGER;
        body[n + 1] = (digits.len() + pad) as u8;
        body[n + 2] = 0;
        body[n + 2 + pad..n + 2 + pad + digits.len()].copy_from_slice(digits);
        n += 2 + pad + digits.len();
    }
    out[0] = TAG_SEQUENCE;
    out[1] = n as u8;
    out[2..2 + n].copy_from_slice(&body[..n]);
    2 + n
}

/// Case-insensitive match with a single leftmost `*.` wildcard label.
pub fn dns_name_matches(pattern: &[u8], host: &[u8]) -> bool {
    let host = host.strip_suffix(b".").unwrap_or(host);
    if let Some(suffix) = pattern.strip_prefix(b"*.") {
        let Some(dot) = host.iter().position(|&b| b == b'.') else {
            return false;
        };
        // The wildcard covers exactly one non-empty label, and never a public suffix alone.
        return dot > 0 && suffix.contains(&b'.') && host[dot + 1..].eq_ignore_ascii_case(suffix);
    }
    !pattern.contains(&b'*') && pattern.eq_ignore_ascii_case(host)
}

fn digits(s: &[u8]) -> Result<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u64::from(c - b'0'))
        } else {
            Err(Error::new(ErrorKind::CertMalformed("time digits")))
        }
    })
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to Unix seconds.
pub fn parse_time(tlv: &Tlv<'_>) -> Result<u64> {
    let (year, rest) = match (tlv.tag, tlv.content.len()) {
        (TAG_UTC_TIME, 13) => {
            let yy = digits(&tlv.content[..2])?;
            (
                if yy < 50 { 2000 + yy } else { 1900 + yy },
                &tlv.content[2..],
            )
        }
        (TAG_GENERALIZED_TIME, 15) => (digits(&tlv.content[..4])?, &tlv.content[4..]),
        _ => return Err(Error::new(ErrorKind::CertMalformed("time format"))),
    };
    if rest[10] != b'Z' {
        return Err(Error::new(ErrorKind::CertMalformed("time not in UTC")));
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let min = digits(&rest[6..8])?;
    let sec = digits(&rest[8..10])?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
        || year < 1970
    {
        return Err(Error::new(ErrorKind::CertMalformed("time out of range")));
    }
    Ok(days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm), for years ≥ 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signatures() -> Vec<p256::ecdsa::Signature> {
        use p256::ecdsa::signature::Signer;
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        (0..200u32).map(|i| key.sign(&i.to_be_bytes())).collect()
    }

    #[test]
    fn ecdsa_der_matches_the_der_crate_both_ways() {
        let mut short = 0;
        for sig in signatures() {
            let mut buf = [0u8; 72];
            let n = ecdsa_signature_to_der(&sig, &mut buf);
            assert_eq!(&buf[..n], sig.to_der().as_bytes());
            assert_eq!(ecdsa_signature_from_der(&buf[..n]), Ok(sig));
            short += usize::from(n < 72);
        }
        // Some integers had no leading 0x00 pad (high bit clear).
        assert!(short > 0);
    }

    #[test]
    fn loose_ecdsa_der_is_refused_like_the_der_crate() {
        let sig = signatures()[0];
        let good = sig.to_der().as_bytes().to_vec();
        let refused = |der: &[u8]| {
            assert!(ecdsa_signature_from_der(der).is_err(), "{der:02x?}");
            assert!(p256::ecdsa::Signature::from_der(der).is_err(), "{der:02x?}");
        };
        for cut in 0..good.len() {
            refused(&good[..cut]);
        }
        let mut trailing = good.clone();
        trailing.push(0);
        refused(&trailing);
        // r = 0, r negative, r with a needless leading zero, r of 33 bytes.
        refused(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01]);
        refused(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01]);
        refused(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01]);
        let mut long = vec![0x30, 0x26, 0x02, 0x21];
        long.extend_from_slice(&[0x01; 33]);
        long.extend_from_slice(&[0x02, 0x01, 0x01]);
        refused(&long);
        // r = n (the group order) is out of range.
        let n = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let mut at_n = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        at_n.extend_from_slice(&n);
        at_n.extend_from_slice(&[0x02, 0x01, 0x01]);
        refused(&at_n);
        // The smallest valid values parse.
        assert!(
            ecdsa_signature_from_der(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]).is_ok()
        );
    }

    #[test]
    fn times_convert_to_unix_seconds() {
        let t = |tag, s: &[u8]| {
            parse_time(&Tlv {
                tag,
                content: s,
                raw: s,
            })
        };
        assert_eq!(t(TAG_UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(t(TAG_UTC_TIME, b"261125183000Z"), Ok(1_795_631_400));
        assert_eq!(
            t(TAG_GENERALIZED_TIME, b"20500101000000Z"),
            Ok(2_524_608_000)
        );
        assert!(t(TAG_UTC_TIME, b"261325183000Z").is_err());
        assert!(t(TAG_UTC_TIME, b"2611251830").is_err());
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(dns_name_matches(b"boot.example.org", b"BOOT.example.org"));
        assert!(dns_name_matches(b"*.example.org", b"boot.example.org"));
        assert!(!dns_name_matches(b"*.example.org", b"a.boot.example.org"));
        assert!(!dns_name_matches(b"*.example.org", b"example.org"));
        assert!(!dns_name_matches(b"*.org", b"example.org"));
        assert!(!dns_name_matches(b"b*.example.org", b"boot.example.org"));
    }

    #[test]
    fn truncated_der_is_an_error_not_a_panic() {
        let bytes = [0x30, 0x82, 0x01, 0x00, 0x02, 0x01];
        for cut in 0..bytes.len() {
            assert!(Certificate::parse(&bytes[..cut]).is_err());
        }
        assert!(Der::new(&[0x30, 0x84, 1, 1, 1, 1]).read().is_err());
    }
}
