//! A blocking HTTPS/1.1 [`Transport`] for hosts (feature `host`): what
//! `ember attest` and the tests use in place of the node's `ember-net`. One
//! TLS connection per request (`Connection: close`), the server verified
//! against the given CA only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::client::{BodySink, Response, Transport, TransportError, Url};
use crate::msg::{CONTENT_TYPE, MAX_MESSAGE};

#[derive(Debug)]
pub enum HostError {
    Ca(String),
    ServerName(String),
    Connect(std::io::Error),
    Tls(String),
    Io(std::io::Error),
    BadResponse(&'static str),
    TooLarge,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Ca(e) => write!(f, "CA certificate: {e}"),
            HostError::ServerName(h) => write!(f, "invalid server name {h:?}"),
            HostError::Connect(e) => write!(f, "connect: {e}"),
            HostError::Tls(e) => write!(f, "TLS: {e}"),
            HostError::Io(e) => write!(f, "I/O: {e}"),
            HostError::BadResponse(what) => write!(f, "malformed HTTP response: {what}"),
            HostError::TooLarge => write!(f, "response body too large"),
        }
    }
}

impl std::error::Error for HostError {}

fn io_err(e: std::io::Error) -> HostError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => HostError::Tls(tls.to_string()),
        None => HostError::Io(e),
    }
}

#[derive(Clone)]
pub struct HttpsClient {
    host: String,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
    /// The local address to connect from (default: the kernel's choice).
    source: Option<std::net::IpAddr>,
}

impl HttpsClient {
    /// A client for `url`'s host and port trusting only the CA(s) in `ca_pem`.
    pub fn new(url: &Url, ca_pem: &[u8]) -> Result<Self, HostError> {
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| HostError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| HostError::Ca(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(HostError::Ca("no PEM certificate found".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HostError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsClient {
            host: url.host.clone(),
            port: url.port,
            config: Arc::new(config),
            timeout: Duration::from_secs(60),
            source: None,
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects from `source` (e.g. one of 127.0.0.0/8's addresses, so a
    /// load test's simulated nodes look like many machines to the server's
    /// per-source limits).
    pub fn with_source(mut self, source: std::net::IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    fn connect(
        &self,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, HostError> {
        let name = ServerName::try_from(
            self.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|_| HostError::ServerName(self.host.clone()))?;
        // Bounded connect too: a server that drops SYNs must not hold a
        // client (trying the next server) for the kernel's minutes.
        let mut last = std::io::Error::other("no address");
        let mut tcp = None;
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(
            self.host.trim_start_matches('[').trim_end_matches(']'),
            self.port,
        ))
        .map_err(HostError::Connect)?;
        for addr in addrs {
            let connected = match self.source {
                None => TcpStream::connect_timeout(&addr, self.timeout),
                Some(source) => connect_from(source, &addr, self.timeout),
            };
            match connected {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(HostError::Connect(last))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(self.timeout))
            .map_err(HostError::Io)?;
        tcp.set_write_timeout(Some(self.timeout))
            .map_err(HostError::Io)?;
        let conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(|e| HostError::Tls(e.to_string()))?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
        sink: &mut dyn BodySink,
    ) -> Result<(), HostError> {
        let mut stream = self.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nUser-Agent: ember-attest\r\n",
            self.host, self.port
        );
        if let Some(b) = bearer {
            head.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io_err)?;
        stream.write_all(body).map_err(io_err)?;
        stream.flush().map_err(io_err)?;
        read_response(BufReader::with_capacity(64 * 1024, stream), sink)
    }
}

fn read_line<R: BufRead>(r: &mut R, line: &mut String) -> Result<(), HostError> {
    line.clear();
    let n = r.by_ref().take(8192).read_line(line).map_err(io_err)?;
    if n == 0 || !line.ends_with('\n') {
        return Err(HostError::BadResponse("header line"));
    }
    Ok(())
}

fn read_response<R: BufRead>(mut r: R, sink: &mut dyn BodySink) -> Result<(), HostError> {
    let mut line = String::new();
    read_line(&mut r, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HostError::BadResponse("status line"))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut retry_after = None;
    for _ in 0..100 {
        read_line(&mut r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(HostError::BadResponse("header"));
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(
                v.parse()
                    .map_err(|_| HostError::BadResponse("content-length"))?,
            );
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "retry-after" {
            // Delta-seconds only; the HTTP-date form is ignored.
            retry_after = v.parse::<u32>().ok();
        }
    }
    if let Some(s) = retry_after {
        sink.retry_after(s);
    }
    if !sink.status(status) {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut pump = |r: &mut dyn Read, limit: Option<u64>| -> Result<bool, HostError> {
        let mut left = limit;
        loop {
            let want = left
                .map(|l| l.min(buf.len() as u64) as usize)
                .unwrap_or(buf.len());
            if want == 0 {
                return Ok(true);
            }
            let n = r.read(&mut buf[..want]).map_err(io_err)?;
            if n == 0 {
                // EOF before the announced length: hand over what came and
                // let the caller's stream check notice the truncation.
                return Ok(left.is_none());
            }
            if !sink.data(&buf[..n]) {
                return Ok(false);
            }
            if let Some(l) = left.as_mut() {
                *l -= n as u64;
            }
        }
    };
    if chunked {
        loop {
            read_line(&mut r, &mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| HostError::BadResponse("chunk size"))?;
            if size == 0 {
                return Ok(());
            }
            if !pump(&mut r, Some(size))? {
                return Ok(());
            }
            read_line(&mut r, &mut line)?;
        }
    } else {
        pump(&mut r, length)?;
        Ok(())
    }
}

struct Collect {
    status: u16,
    body: Vec<u8>,
    too_large: bool,
    retry_after_s: Option<u32>,
}

impl BodySink for Collect {
    fn retry_after(&mut self, seconds: u32) {
        self.retry_after_s = Some(seconds);
    }
    fn status(&mut self, status: u16) -> bool {
        self.status = status;
        true
    }
    fn data(&mut self, piece: &[u8]) -> bool {
        if self.body.len() + piece.len() > MAX_MESSAGE {
            self.too_large = true;
            return false;
        }
        self.body.extend_from_slice(piece);
        true
    }
}

impl TransportError for HostError {
    fn unreachable(&self) -> bool {
        matches!(self, HostError::Connect(_))
    }
}

/// `TcpStream::connect_timeout` from a chosen local address: a
/// non-blocking connect, a bounded wait for it, then a blocking socket.
fn connect_from(
    source: std::net::IpAddr,
    addr: &std::net::SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        std::net::SocketAddr::V4(_) => AddressFamily::INET,
        std::net::SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &std::net::SocketAddr::new(source, 0))?;
    match rustix::net::connect(&fd, addr) {
        Ok(()) => {}
        Err(Errno::INPROGRESS) => {
            let wait = Timespec {
                tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: timeout.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
            if poll(&mut fds, Some(&wait))? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ));
            }
            rustix::net::sockopt::socket_error(&fd)??;
        }
        Err(e) => return Err(e.into()),
    }
    rustix::io::ioctl_fionbio(&fd, false)?;
    Ok(TcpStream::from(fd))
}

impl Transport for HttpsClient {
    type Error = HostError;

    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, HostError> {
        let mut c = Collect {
            status: 0,
            body: Vec::new(),
            too_large: false,
            retry_after_s: None,
        };
        self.request("POST", path, bearer, body, &mut c)?;
        if c.too_large {
            return Err(HostError::TooLarge);
        }
        Ok(Response {
            status: c.status,
            body: c.body,
            retry_after_s: c.retry_after_s,
        })
    }

    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), HostError> {
        self.request("GET", path, bearer, &[], sink)
    }
}
