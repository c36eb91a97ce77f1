//! Just enough HTTP/1.1 for one request per connection (`Connection:
//! close`): the request head, and a response read to the end of the stream
//! whose body may be framed by Content-Length, chunked, or the close.

use crate::error::Error;

/// Responses larger than this are refused (a Node object is a few KiB).
pub const MAX_RESPONSE: usize = 4 << 20;

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub bearer: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl Request<'_> {
    pub fn emit(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ember-standin/{} (rke2 agent stand-in)\r\nAccept: application/json\r\nConnection: close\r\n",
            self.method,
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(token) = self.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(ct) = self.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if !self.body.is_empty() || self.content_type.is_some() {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(why: &'static str) -> Error {
    Error::HttpResponse(why)
}

/// Parses a complete response (everything the server sent before closing).
pub fn parse_response(raw: &[u8]) -> Result<Response, Error> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(bad("no end of header"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(bad("empty response"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("not an HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or(bad("invalid status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(bad("header line without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| bad("invalid Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(bad("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(bad("unsupported Transfer-Encoding"));
            }
            chunked = true;
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = content_length {
        rest.get(..n)
            .ok_or(bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(bad("chunk size line not terminated"))?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("invalid chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("invalid chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err(bad("response too large"));
        }
        let chunk = rest.get(..size).ok_or(bad("chunk shorter than its size"))?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or(bad("chunk not followed by CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_carries_token_type_and_length() {
        let r = Request {
            method: "POST",
            path: "/api/v1/nodes",
            authority: "10.0.2.2:6443",
            bearer: Some("t0k"),
            content_type: Some("application/json"),
            body: b"{}",
        }
        .emit();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("POST /api/v1/nodes HTTP/1.1\r\nHost: 10.0.2.2:6443\r\n"));
        assert!(text.contains("\r\nAuthorization: Bearer t0k\r\n"));
        assert!(text.contains("\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn content_length_body_is_cut_at_its_length() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}junk").unwrap();
        assert_eq!(
            r,
            Response {
                status: 201,
                body: b"{}".to_vec()
            }
        );
    }

    #[test]
    fn chunked_body_is_reassembled() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"{\"a\":1}");
    }

    #[test]
    fn body_without_framing_runs_to_the_close() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body_text().as_str()), (404, "nope"));
    }

    #[test]
    fn malformed_responses_are_typed_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0 hi\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ] {
            assert!(
                matches!(parse_response(raw), Err(Error::HttpResponse(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
