//! HTTP/1.1 responses, strictly: the head (status line and headers, size
//! limited) and a body decoder (Content-Length or chunked) that streams into
//! the caller's sink without buffering the body.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec::Vec;

/// The whole response head (status line + headers) must fit in this.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
/// A chunk-size line (with extensions) or trailer line must fit in this.
pub const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Length(u64),
    Chunked,
    /// HTTP/1.0-style: the body ends when the server closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub body: BodyKind,
    /// `Retry-After` in its delta-seconds form (a 429 or 503 says when to
    /// ask again); the HTTP-date form and anything malformed are ignored.
    pub retry_after_s: Option<u32>,
}

/// `Retry-After: SECONDS` (at most 9 digits, so it fits a u32).
fn retry_after(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

/// The length of the head (through the empty line) once `buf` holds it all.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// The request line and headers for a GET.
pub fn request(host: &str, port: u16, path: &str) -> Vec<u8> {
    request_with("GET", host, port, path, None, None, &[])
}

/// A whole request: method, headers (an `Authorization: Bearer` token and a
/// body type when given) and the body with its Content-Length.
pub fn request_with(
    method: &str,
    host: &str,
    port: u16,
    path: &str,
    bearer: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut r = Vec::with_capacity(192 + path.len() + host.len() + body.len());
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(path.as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    r.extend_from_slice(host.as_bytes());
    if port != 443 {
        let mut buf = itoa(u64::from(port));
        r.push(b':');
        r.append(&mut buf);
    }
    r.extend_from_slice(
        b"\r\nUser-Agent: ember\r\nAccept-Encoding: identity\r\nConnection: close\r\n",
    );
    if let Some(token) = bearer {
        r.extend_from_slice(b"Authorization: Bearer ");
        r.extend_from_slice(token.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    if let Some(ct) = content_type {
        r.extend_from_slice(b"Content-Type: ");
        r.extend_from_slice(ct.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    if method != "GET" || !body.is_empty() {
        r.extend_from_slice(b"Content-Length: ");
        r.append(&mut itoa(body.len() as u64));
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn itoa(mut n: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}

pub fn parse_head(head: &[u8]) -> Result<Head> {
    if head.len() > MAX_HEAD {
        return Err(Error::new(ErrorKind::HttpHeadTooLarge));
    }
    if !head.ends_with(b"\r\n\r\n") {
        return Err(Error::new(ErrorKind::HttpMalformed("head not terminated")));
    }
    // Keep each line's "\r" so that a bare LF anywhere shows up below.
    let head = &head[..head.len() - 3];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().unwrap_or(&[]);
    let status_line = status_line
        .strip_suffix(b"\r")
        .ok_or(Error::new(ErrorKind::HttpMalformed("bare LF")))?;
    let rest = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
        .ok_or(Error::new(ErrorKind::HttpMalformed("status line")))?;
    if rest.len() < 3
        || !rest[..3].iter().all(u8::is_ascii_digit)
        || (rest.len() > 3 && rest[3] != b' ')
    {
        return Err(Error::new(ErrorKind::HttpMalformed("status code")));
    }
    if !rest[3..].iter().all(|&b| is_field_byte(b)) {
        return Err(Error::new(ErrorKind::HttpMalformed("reason phrase")));
    }
    let status = rest[..3]
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(Error::new(ErrorKind::HttpMalformed("status code")));
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut retry_after_s = None;
    let mut count = 0;
    for line in lines {
        // Every line but the last ends in "\r" here; a bare LF is refused.
        let line = line
            .strip_suffix(b"\r")
            .ok_or(Error::new(ErrorKind::HttpMalformed("bare LF")))?;
        count += 1;
        if count > MAX_HEADERS {
            return Err(Error::new(ErrorKind::HttpHeadTooLarge));
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(Error::new(ErrorKind::HttpMalformed(
                "obsolete line folding",
            )));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Error::new(ErrorKind::HttpMalformed("header without colon")))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Error::new(ErrorKind::HttpMalformed("header name")));
        }
        if !value.iter().all(|&b| is_field_byte(b)) {
            return Err(Error::new(ErrorKind::HttpMalformed("header value")));
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err(Error::new(ErrorKind::HttpMalformed("Content-Length")));
            }
            let n = value
                .iter()
                .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            if content_length.is_some_and(|old| old != n) {
                return Err(Error::new(ErrorKind::HttpMalformed(
                    "conflicting Content-Length",
                )));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(Error::new(ErrorKind::HttpMalformed(
                    "unsupported Transfer-Encoding",
                )));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"retry-after") {
            retry_after_s = retry_after(value);
        }
    }
    let body = match (status, chunked, content_length) {
        (100..=199, _, _) => return Err(Error::new(ErrorKind::HttpMalformed("unexpected 1xx"))),
        (204 | 304, _, _) => BodyKind::Length(0),
        (_, true, Some(_)) => {
            return Err(Error::new(ErrorKind::HttpMalformed(
                "both Content-Length and chunked",
            )))
        }
        (_, true, None) => BodyKind::Chunked,
        (_, false, Some(n)) => BodyKind::Length(n),
        (_, false, None) => BodyKind::UntilClose,
    };
    Ok(Head {
        status,
        body,
        retry_after_s,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize {
        size: u64,
        digits: usize,
        in_ext: bool,
        line: usize,
        cr: bool,
    },
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    Trailer {
        line: usize,
        cr: bool,
    },
    UntilClose,
    Done,
}

/// Decodes a body as bytes arrive; payload goes to `sink`, framing does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder {
    state: State,
}

const CHUNK_START: State = State::ChunkSize {
    size: 0,
    digits: 0,
    in_ext: false,
    line: 0,
    cr: false,
};

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => CHUNK_START,
            BodyKind::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The body runs until the connection closes (no length, not chunked).
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// The connection ended: fine only if the body is complete.
    pub fn finish(&self) -> Result<()> {
        match self.state {
            State::Done | State::UntilClose => Ok(()),
            _ => Err(Error::new(ErrorKind::HttpTruncated)),
        }
    }

    /// Consumes `input`; returns how many bytes were body (anything after
    /// the end of the body is left unconsumed).
    pub fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<usize> {
        let total = input.len();
        while !input.is_empty() {
            match &mut self.state {
                State::Done => break,
                State::UntilClose => {
                    sink(input)?;
                    input = &[];
                }
                State::Length(left) | State::ChunkData(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    sink(&input[..n])?;
                    *left -= n as u64;
                    input = &input[n..];
                    if *left == 0 {
                        self.state = match self.state {
                            State::Length(_) => State::Done,
                            _ => State::ChunkDataCr,
                        };
                    }
                }
                State::ChunkDataCr | State::ChunkDataLf => {
                    let want = if self.state == State::ChunkDataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if input[0] != want {
                        return Err(Error::new(ErrorKind::HttpMalformed(
                            "chunk not followed by CRLF",
                        )));
                    }
                    input = &input[1..];
                    self.state = if want == b'\r' {
                        State::ChunkDataLf
                    } else {
                        CHUNK_START
                    };
                }
                State::ChunkSize {
                    size,
                    digits,
                    in_ext,
                    line,
                    cr,
                } => {
                    let b = input[0];
                    input = &input[1..];
                    *line += 1;
                    if *line > MAX_LINE {
                        return Err(Error::new(ErrorKind::HttpMalformed(
                            "chunk-size line too long",
                        )));
                    }
                    if *cr {
                        if b != b'\n' {
                            return Err(Error::new(ErrorKind::HttpMalformed("chunk-size line")));
                        }
                        self.state = if *size == 0 {
                            State::Trailer { line: 0, cr: false }
                        } else {
                            State::ChunkData(*size)
                        };
                        continue;
                    }
                    match b {
                        b'\r' if *digits > 0 => *cr = true,
                        _ if *in_ext => {
                            if !is_field_byte(b) {
                                return Err(Error::new(ErrorKind::HttpMalformed(
                                    "chunk extension",
                                )));
                            }
                        }
                        b';' if *digits > 0 => *in_ext = true,
                        _ => {
                            let d = (b as char)
                                .to_digit(16)
                                .ok_or(Error::new(ErrorKind::HttpMalformed("chunk size")))?;
                            *digits += 1;
                            if *digits > 15 {
                                return Err(Error::new(ErrorKind::HttpMalformed(
                                    "chunk size too large",
                                )));
                            }
                            *size = (*size << 4) | u64::from(d);
                        }
                    }
                }
                State::Trailer { line, cr } => {
                    let b = input[0];
                    input = &input[1..];
                    if *cr {
                        if b != b'\n' {
                            return Err(Error::new(ErrorKind::HttpMalformed("trailer line")));
                        }
                        if *line == 0 {
                            self.state = State::Done;
                        } else {
                            *line = 0;
                            *cr = false;
                        }
                    } else if b == b'\r' {
                        *cr = true;
                    } else {
                        *line += 1;
                        if *line > MAX_LINE || !is_field_byte(b) {
                            return Err(Error::new(ErrorKind::HttpMalformed("trailer line")));
                        }
                    }
                }
            }
        }
        Ok(total - input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(kind: BodyKind, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool)> {
        let mut dec = BodyDecoder::new(kind);
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            dec.feed(piece, &mut |d| {
                out.extend_from_slice(d);
                Ok(())
            })?;
        }
        Ok((out, dec.is_done()))
    }

    #[test]
    fn head_with_content_length_parses() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\n").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                body: BodyKind::Length(5),
                retry_after_s: None,
            }
        );
        let h =
            parse_head(b"HTTP/1.1 503 x\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((h.status, h.retry_after_s), (503, Some(5)));
        // The HTTP-date form and junk are ignored, not refused.
        for value in ["Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1234567890", ""] {
            let head = alloc::format!("HTTP/1.1 429 x\r\nRetry-After: {value}\r\n\r\n");
            let h = parse_head(head.as_bytes()).unwrap();
            assert_eq!(h.retry_after_s, None, "{value:?}");
        }
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.body, BodyKind::Chunked);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            &b"HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(
                parse_head(head).is_err(),
                "{:?}",
                core::str::from_utf8(head)
            );
        }
    }

    #[test]
    fn chunked_body_decodes_in_any_split() {
        let wire = b"5;name=x\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: t\r\n\r\nEXTRA";
        for step in 1..wire.len() {
            let (out, done) = decode(BodyKind::Chunked, &wire[..wire.len() - 5], step).unwrap();
            assert_eq!(out, b"hello, world");
            assert!(done);
        }
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        let used = dec.feed(wire, &mut |_| Ok(())).unwrap();
        assert_eq!(used, wire.len() - 5);
    }

    #[test]
    fn bad_chunk_framing_is_refused() {
        assert!(decode(BodyKind::Chunked, b"z\r\n", 1).is_err());
        assert!(decode(BodyKind::Chunked, b"5\r\nhelloX\r\n", 1).is_err());
        assert!(decode(BodyKind::Chunked, b"ffffffffffffffff\r\n", 3).is_err());
        assert!(decode(BodyKind::Chunked, b"\r\n", 1).is_err());
    }

    #[test]
    fn short_bodies_are_truncation_errors() {
        let mut dec = BodyDecoder::new(BodyKind::Length(10));
        dec.feed(b"12345", &mut |_| Ok(())).unwrap();
        assert_eq!(dec.finish(), Err(Error::new(ErrorKind::HttpTruncated)));
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        dec.feed(b"5\r\nhel", &mut |_| Ok(())).unwrap();
        assert_eq!(dec.finish(), Err(Error::new(ErrorKind::HttpTruncated)));
    }

    #[test]
    fn request_names_host_and_non_default_port() {
        let r = request("10.0.2.2", 8443, "/overlay.tar");
        assert!(r.starts_with(b"GET /overlay.tar HTTP/1.1\r\nHost: 10.0.2.2:8443\r\n"));
        assert!(r.ends_with(b"\r\n\r\n"));
    }
}
