//! pax extended header records: `"<len> <key>=<value>\n"`, where `len`
//! counts the whole record. A payload is validated once when it arrives, so
//! later lookups cannot fail.

use super::error::ErrorKind;

fn malformed(reason: &'static str) -> ErrorKind {
    ErrorKind::PaxMalformed { reason }
}

/// Iterates `(key, value)` over a payload that [`validate`] accepted.
#[derive(Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(payload: &'a [u8]) -> Self {
        Records { rest: payload }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), ErrorKind>;

    fn next(&mut self) -> Option<Self::Item> {
        // Writers pad the payload with NULs to the block; treat them as the end.
        if self.rest.is_empty() || self.rest[0] == 0 {
            return None;
        }
        let r = split_record(self.rest);
        match r {
            Ok((key, value, rest)) => {
                self.rest = rest;
                Some(Ok((key, value)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// One record split off a payload: `(key, value, rest)`.
type Split<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn split_record(buf: &[u8]) -> Result<Split<'_>, ErrorKind> {
    let space = buf
        .iter()
        .take(20)
        .position(|&b| b == b' ')
        .ok_or(malformed("record length not followed by a space"))?;
    let digits = &buf[..space];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed("record length is not a decimal number"));
    }
    let len = digits
        .iter()
        .try_fold(0usize, |v, &d| {
            v.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .ok_or(malformed("record length overflows"))?;
    if len < space + 3 || len > buf.len() {
        return Err(malformed("record length outside the header"));
    }
    let record = &buf[space + 1..len];
    let (body, nl) = record.split_at(record.len() - 1);
    if nl != b"\n" {
        return Err(malformed("record does not end in a newline"));
    }
    let eq = body
        .iter()
        .position(|&b| b == b'=')
        .ok_or(malformed("record has no `=`"))?;
    if eq == 0 {
        return Err(malformed("record has an empty key"));
    }
    Ok((&body[..eq], &body[eq + 1..], &buf[len..]))
}

/// Checks every record of a payload.
pub fn validate(payload: &[u8]) -> Result<(), ErrorKind> {
    for r in Records::new(payload) {
        r?;
    }
    Ok(())
}

/// The value of the last record with `key` (later records override earlier).
pub fn get<'a>(payload: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    Records::new(payload)
        .filter_map(Result::ok)
        .filter(|(k, _)| *k == key)
        .last()
        .map(|(_, v)| v)
}

pub fn parse_u64(v: &[u8], what: &'static str) -> Result<u64, ErrorKind> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(malformed(what));
    }
    v.iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(malformed(what))
}

/// A pax time: `[-]seconds[.fraction]`, kept to nanoseconds. For negative
/// times the fraction counts away from zero (`-1.5` is 1.5 s before 1970).
pub fn parse_time(v: &[u8]) -> Result<(i64, u32), ErrorKind> {
    const WHAT: &str = "bad time value";
    let (neg, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    let secs = i64::try_from(parse_u64(int, WHAT)?).map_err(|_| malformed(WHAT))?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(malformed(WHAT));
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |&d| u32::from(d - b'0'));
    }
    if !neg {
        return Ok((secs, nanos));
    }
    if nanos == 0 {
        Ok((-secs, 0))
    } else {
        Ok((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_and_last_wins() {
        let p = b"18 path=some/file\n10 uid=42\n10 uid=43\n";
        validate(p).unwrap();
        assert_eq!(get(p, b"path"), Some(&b"some/file"[..]));
        assert_eq!(get(p, b"uid"), Some(&b"43"[..]));
        assert_eq!(get(p, b"gid"), None);
    }

    #[test]
    fn binary_xattr_values_with_newlines_survive() {
        let p = b"29 SCHILY.xattr.user.a=x\ny\0z\n";
        validate(p).unwrap();
        assert_eq!(get(p, b"SCHILY.xattr.user.a"), Some(&b"x\ny\0z"[..]));
    }

    #[test]
    fn bad_lengths_are_refused() {
        for p in [
            &b"99 path=x\n"[..],
            b"5 path=x\n",
            b"x path=x\n",
            b"0 \n",
            b"12 path=abc\nX",
            b"9 pathx\n",
        ] {
            assert!(validate(p).is_err(), "{:?}", core::str::from_utf8(p));
        }
    }

    #[test]
    fn times_keep_nanoseconds_and_sign() {
        assert_eq!(
            parse_time(b"1700000000.5").unwrap(),
            (1_700_000_000, 500_000_000)
        );
        assert_eq!(parse_time(b"12").unwrap(), (12, 0));
        assert_eq!(parse_time(b"-1.25").unwrap(), (-2, 750_000_000));
        assert_eq!(parse_time(b"1.1234567891").unwrap(), (1, 123_456_789));
        assert!(parse_time(b"1.2x").is_err());
        assert!(parse_time(b"").is_err());
    }
}
