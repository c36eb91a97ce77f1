//! The HTTPS client the node fetches its boot files with: resolve, connect
//! (kernel TCP), TLS 1.3 with verification, one GET, the body streamed to a
//! sink. Redirects are refused; non-2xx statuses are errors.

use crate::dns::Resolver;
use crate::error::{Error, Result};
use crate::http::{self, BodyDecoder};
use crate::tls::{Chacha20Poly1305Sha256, ClientIdentity, Provider, TcpStream, Verifier};
use crate::ErrorKind;
use crate::{clock, url};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::time::Duration;
use embedded_tls::alert::AlertDescription;
use embedded_tls::blocking::{TlsConfig, TlsConnection, TlsContext};
use embedded_tls::TlsError;

/// TLS records are up to 16 KiB of plaintext plus overhead.
const RECORD_BUF: usize = 16 * 1024 + 256;
/// Receive buffer of a plain connection: large reads, few system calls.
const PLAIN_BUF: usize = 64 * 1024;

pub struct Client<'a> {
    /// DER CA certificates; the server chain must end at one of them.
    pub cas: &'a [Vec<u8>],
    /// How host names that are not IP literals become addresses.
    pub resolver: Resolver<'a>,
    pub identity: Option<&'a ClientIdentity>,
    pub connect_timeout: Duration,
    /// The longest wait for any single read or write.
    pub read_timeout: Duration,
}

/// One HTTP request, to a URL already parsed (and so checked) once.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    pub method: &'r str,
    pub url: url::Url<'r>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<&'r str>,
    pub content_type: Option<&'r str>,
    pub body: &'r [u8],
}

impl<'r> Request<'r> {
    /// The request's bytes on the wire (the same over TLS and plain TCP).
    fn encode(&self) -> Vec<u8> {
        let url = self.url;
        http::request_with(
            self.method,
            url.host,
            url.port,
            url.path,
            self.bearer,
            self.content_type,
            self.body,
        )
    }

    pub fn get(url: url::Url<'r>) -> Self {
        Request {
            method: "GET",
            url,
            bearer: None,
            content_type: None,
            body: &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Body bytes handed to the sink.
    pub body_len: u64,
    /// The response's `Retry-After` in seconds, when it had one.
    pub retry_after_s: Option<u32>,
}

impl<'a> Client<'a> {
    /// A client that resolves names with DNS over UDP to `dns` (PID 1).
    pub fn new(cas: &'a [Vec<u8>], dns: &'a [[u8; 4]]) -> Self {
        Self::with_resolver(cas, Resolver::Servers(dns))
    }

    pub fn with_resolver(cas: &'a [Vec<u8>], resolver: Resolver<'a>) -> Self {
        Client {
            cas,
            resolver,
            identity: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        }
    }

    /// GETs `url` and streams the body into `sink`; a status other than
    /// 2xx is an error.
    pub fn get(&self, url: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<Response> {
        let mut only_2xx = |status: u16| match status {
            200..=299 => Ok(()),
            status => Err(Error::new(ErrorKind::HttpStatus { status })),
        };
        self.send(&Request::get(url::parse(url)?), &mut only_2xx, sink)
    }

    /// Sends `req`; `on_status` sees the status before any of the body
    /// (returning an error stops the exchange), `sink` gets the body of any
    /// non-redirect status, so callers can read an error document.
    pub fn send(
        &self,
        req: &Request<'_>,
        on_status: &mut dyn FnMut(u16) -> Result<()>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Response> {
        let url = req.url;
        if self.cas.is_empty() {
            return Err(Error::new(ErrorKind::NoCa));
        }
        let now = clock::unix_seconds().ok_or(Error::new(ErrorKind::ClockUnset))?;
        let (stream, io_failure) = self.connect(&url)?;
        let mut rx = vec![0u8; RECORD_BUF];
        let mut tx = vec![0u8; RECORD_BUF];
        let mut conn = Conn {
            tls: TlsConnection::new(stream, &mut rx, &mut tx),
            provider: Provider::new(Verifier::new(self.cas, url.host, now), self.identity),
            io_failure,
            buf: vec![0u8; 4096],
        };
        conn.handshake(url.host)?;
        conn.write_request(req)?;
        let (head, decoder, rest) = read_head(&mut conn, on_status)?;
        let body_len = read_body(&mut conn, decoder, &rest, sink)?;
        let _ = conn.tls.close();
        Ok(Response {
            status: head.status,
            body_len,
            retry_after_s: head.retry_after_s,
        })
    }

    /// Sends `req` over plain TCP, without TLS: only for content the caller
    /// authenticates itself (a sealed overlay blob, bound to a signed
    /// manifest). Same head and body handling as [`Client::send`].
    pub fn send_plain(
        &self,
        req: &Request<'_>,
        on_status: &mut dyn FnMut(u16) -> Result<()>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Response> {
        let (stream, io_failure) = self.connect(&req.url)?;
        let mut conn = PlainConn {
            stream,
            io_failure,
            buf: vec![0u8; PLAIN_BUF],
        };
        let request = req.encode();
        embedded_io::Write::write_all(&mut conn.stream, &request).map_err(|e| conn.why(e))?;
        let (head, decoder, rest) = read_head(&mut conn, on_status)?;
        let body_len = read_body(&mut conn, decoder, &rest, sink)?;
        Ok(Response {
            status: head.status,
            body_len,
            retry_after_s: head.retry_after_s,
        })
    }

    /// TCP to the first of the host's addresses that accepts.
    fn connect(&self, url: &url::Url<'_>) -> Result<(TcpStream, Rc<Cell<Option<Error>>>)> {
        let mut last = Error::new(ErrorKind::ConnectTimeout);
        for addr in self.resolver.resolve(url.host)? {
            match TcpStream::connect(addr, url.port, self.connect_timeout, self.read_timeout) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// One TLS connection and what explains its failures: the verifier's
/// verdict, or the socket error behind an embedded-tls I/O error.
struct Conn<'a, 'b> {
    tls: TlsConnection<'b, TcpStream, Chacha20Poly1305Sha256>,
    provider: Provider<'a>,
    io_failure: Rc<Cell<Option<Error>>>,
    buf: Vec<u8>,
}

impl Conn<'_, '_> {
    /// The most specific reason for an embedded-tls error.
    fn why(&mut self, e: TlsError) -> Error {
        if let Some(v) = self.provider.verifier.failure.take() {
            return v;
        }
        if let Some(io) = self.io_failure.take() {
            return io;
        }
        tls_error(e)
    }

    fn handshake(&mut self, host: &str) -> Result<()> {
        let config = if url::parse_ipv4(host).is_some() {
            TlsConfig::new()
        } else {
            TlsConfig::new().with_server_name(host)
        };
        match self.tls.open(TlsContext::new(&config, &mut self.provider)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.why(e)),
        }
    }

    fn write_request(&mut self, req: &Request<'_>) -> Result<()> {
        let request = req.encode();
        match self.tls.write(&request).and_then(|_| self.tls.flush()) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.why(e)),
        }
    }

    fn read(&mut self) -> Result<Read> {
        match read(&mut self.tls, &mut self.buf, &self.io_failure) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.why(e)),
        }
    }
}

impl Exchange for Conn<'_, '_> {
    fn read(&mut self) -> Result<Read> {
        Conn::read(self)
    }
    fn buf(&self) -> &[u8] {
        &self.buf
    }
}

/// A plain TCP connection (no TLS), for [`Client::send_plain`].
struct PlainConn {
    stream: TcpStream,
    io_failure: Rc<Cell<Option<Error>>>,
    buf: Vec<u8>,
}

impl PlainConn {
    fn why(&self, e: embedded_io::ErrorKind) -> Error {
        match self.io_failure.take() {
            Some(io) => io,
            None if e == embedded_io::ErrorKind::TimedOut => Error::new(ErrorKind::ReadTimeout),
            None => Error::new(ErrorKind::ConnectionClosed),
        }
    }
}

impl Exchange for PlainConn {
    /// Without TLS there is no close_notify: a close is "clean" to the
    /// HTTP framing only, and the caller's own authentication must catch a
    /// cut body.
    fn read(&mut self) -> Result<Read> {
        match embedded_io::Read::read(&mut self.stream, &mut self.buf) {
            Ok(0) => Ok(Read::Closed { clean: true }),
            Ok(n) => Ok(Read::Data(n)),
            Err(e) => Err(self.why(e)),
        }
    }
    fn buf(&self) -> &[u8] {
        &self.buf
    }
}

/// Reading a response, whatever carries it (TLS or plain TCP). The head
/// and body readers below take it as `dyn`, so they exist once in /init.
trait Exchange {
    fn read(&mut self) -> Result<Read>;
    /// The buffer [`Exchange::read`] filled.
    fn buf(&self) -> &[u8];
}

/// Reads up to the end of the response head: its status (redirects
/// refused, `on_status` consulted), the body's decoder, and the body
/// bytes that came with the head.
fn read_head(
    conn: &mut dyn Exchange,
    on_status: &mut dyn FnMut(u16) -> Result<()>,
) -> Result<(http::Head, BodyDecoder, Vec<u8>)> {
    let mut head: Vec<u8> = Vec::new();
    loop {
        let n = match conn.read()? {
            Read::Data(n) => n,
            Read::Closed { .. } => return Err(Error::new(ErrorKind::ConnectionClosed)),
        };
        head.extend_from_slice(&conn.buf()[..n]);
        if let Some(len) = http::head_len(&head) {
            let parsed = http::parse_head(&head[..len])?;
            match parsed.status {
                300..=399 => {
                    return Err(Error::new(ErrorKind::HttpRedirect {
                        status: parsed.status,
                    }))
                }
                status => on_status(status)?,
            }
            let decoder = BodyDecoder::new(parsed.body);
            head.drain(..len);
            return Ok((parsed, decoder, head));
        }
        if head.len() > http::MAX_HEAD {
            return Err(Error::new(ErrorKind::HttpHeadTooLarge));
        }
    }
}

/// Streams the body to `sink` until the decoder says it is complete;
/// returns its length.
fn read_body(
    conn: &mut dyn Exchange,
    mut decoder: BodyDecoder,
    already: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut body_len = 0u64;
    let mut counting = |d: &[u8]| {
        body_len += d.len() as u64;
        sink(d)
    };
    decoder.feed(already, &mut counting)?;
    while !decoder.is_done() {
        let got = conn.read().map_err(|e| match e.kind() {
            // A reset in the middle of a body is, to the caller, a body cut short.
            ErrorKind::Sys {
                op: "recv",
                errno: rustix::io::Errno::CONNRESET,
            } => Error::new(ErrorKind::HttpTruncated),
            _ => e,
        })?;
        match got {
            Read::Data(n) => {
                decoder.feed(&conn.buf()[..n], &mut counting)?;
            }
            Read::Closed { clean } => {
                decoder.finish()?;
                if !clean && decoder.until_close() {
                    return Err(Error::new(ErrorKind::HttpTruncated));
                }
                break;
            }
        }
    }
    Ok(body_len)
}

enum Read {
    Data(usize),
    /// The peer closed; `clean` if it sent close_notify first (a bare TCP
    /// FIN could be an attacker truncating the stream).
    Closed {
        clean: bool,
    },
}

fn read(
    tls: &mut TlsConnection<'_, TcpStream, Chacha20Poly1305Sha256>,
    buf: &mut [u8],
    io_failure: &Cell<Option<Error>>,
) -> core::result::Result<Read, TlsError> {
    match tls.read(buf) {
        Ok(0) => Ok(Read::Closed { clean: false }),
        Ok(n) => Ok(Read::Data(n)),
        Err(TlsError::ConnectionClosed | TlsError::MissingHandshake) => {
            Ok(Read::Closed { clean: true })
        }
        // EOF on the socket (no I/O failure recorded). After a close_notify
        // embedded-tls marks the session closed, which the next read reports.
        Err(TlsError::IoError) if !has_failure(io_failure) => match tls.read(buf) {
            Err(TlsError::MissingHandshake) => Ok(Read::Closed { clean: true }),
            _ => Ok(Read::Closed { clean: false }),
        },
        Err(e) => Err(e),
    }
}

fn has_failure(cell: &Cell<Option<Error>>) -> bool {
    let v = cell.take();
    let some = v.is_some();
    cell.set(v);
    some
}

fn tls_error(e: TlsError) -> Error {
    match e {
        // A server without TLS 1.3 answers our 1.3-only hello with
        // protocol_version; one without our suite or group, handshake_failure.
        TlsError::HandshakeAborted(_, AlertDescription::ProtocolVersion)
        | TlsError::InvalidSupportedVersions => Error::new(ErrorKind::TlsVersion),
        TlsError::HandshakeAborted(_, AlertDescription::HandshakeFailure) => {
            Error::new(ErrorKind::TlsHandshakeRefused)
        }
        TlsError::Io(embedded_io::ErrorKind::TimedOut) => Error::new(ErrorKind::ReadTimeout),
        other => Error::new(ErrorKind::Tls(tls_failure(&other).into())),
    }
}

/// What went wrong in embedded-tls, as an operator can act on it, without
/// its derived `Debug` (with its alert and parse-error enums, about 1.5 KB
/// of /init): alerts by their RFC 8446 number, everything else by what it
/// says about the server.
fn tls_failure(e: &TlsError) -> String {
    let what = match e {
        TlsError::HandshakeAborted(_, alert) => {
            return format!("the server sent alert {}", *alert as u8)
        }
        TlsError::AbortHandshake(_, alert) => {
            return format!("handshake aborted with alert {}", *alert as u8)
        }
        TlsError::InvalidCertificate
        | TlsError::InvalidCertificateEntry
        | TlsError::InvalidCertificateRequest => "the server's certificate is invalid",
        TlsError::InvalidSignature | TlsError::InvalidSignatureScheme => {
            "the server's handshake signature is invalid"
        }
        TlsError::InvalidCipherSuite | TlsError::InvalidKeyShare => {
            "the server chose a cipher suite or key share this node did not offer"
        }
        TlsError::ConnectionClosed => "the connection closed",
        TlsError::Io(_) | TlsError::IoError => "I/O error",
        TlsError::InsufficientSpace | TlsError::OutOfMemory => {
            "a record is larger than the node's buffer"
        }
        TlsError::CryptoError => "record decryption failed",
        _ => "malformed or unexpected TLS message from the server",
    };
    what.into()
}
