//! The one error type of ember-net: a variant per cause, so the init and the
//! host tool can tell a wrong CA from an expired certificate or a timeout.

use alloc::boxed::Box;
use core::fmt;
use rustix::io::Errno;

/// Every `?` moves the error, so it is one pointer: `Result<(), Error>`
/// comes back in a register (the kind inline was 24 bytes, with texts as
/// `Box<str>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(kind))
    }

    /// What failed.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

/// What an [`Error`] is: one variant per cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A system call failed (`op` names it).
    Sys { op: &'static str, errno: Errno },
    /// The kernel answered a netlink request with an error.
    Netlink { op: &'static str, errno: i32 },
    /// A netlink reply was shorter than its headers claim.
    NetlinkMalformed,
    /// No interface other than `lo` exists.
    NoInterface,
    /// `ember.iface=` (or `--iface`) names an interface that does not exist.
    InterfaceNotFound(Box<str>),
    /// No interface reported carrier within the bound.
    NoCarrier { waited_ms: u64 },
    /// The interface has no Ethernet hardware address.
    NotEthernet(Box<str>),
    /// No DHCP lease within the bound.
    DhcpTimeout { waited_ms: u64 },
    /// A DHCP packet could not be parsed.
    DhcpMalformed(&'static str),
    /// A host name is not a valid DNS name (or longer than 253 bytes).
    BadHostName,
    /// The lease carries no DNS server and the host is not an IP literal.
    NoDnsServer,
    /// No DNS server answered within the retries.
    DnsTimeout,
    /// A DNS server answered with an error code (RCODE).
    DnsRcode(u8),
    /// A DNS answer carried no A record for the name.
    DnsNoAddress,
    /// A DNS answer could not be parsed.
    DnsMalformed(&'static str),
    /// The host's C resolver (getaddrinfo) could not resolve the name.
    HostLookup(Box<str>),
    /// The URL is not `https://host[:port]/path`.
    BadUrl(&'static str),
    /// TCP connect did not complete within the timeout.
    ConnectTimeout,
    /// TCP connect was refused or failed.
    Connect(Errno),
    /// No data arrived within the read timeout.
    ReadTimeout,
    /// The peer closed the connection before the response was complete.
    ConnectionClosed,
    /// The server only speaks an older TLS version (it alerted protocol_version).
    TlsVersion,
    /// The server refused the hello (alert handshake_failure): it shares no
    /// cipher suite or group with us (we offer only TLS_CHACHA20_POLY1305_SHA256).
    TlsHandshakeRefused,
    /// The TLS handshake failed for another reason (alert or protocol error).
    Tls(Box<str>),
    /// The server certificate does not chain to the bundled CA.
    CertUnknownIssuer,
    /// The server (or an intermediate) certificate has expired.
    CertExpired,
    /// The server (or an intermediate) certificate is not valid yet.
    CertNotYetValid,
    /// The server certificate does not name the host of the URL.
    CertHostMismatch,
    /// A certificate's signature does not verify.
    CertBadSignature,
    /// A certificate uses an algorithm this client does not implement.
    CertUnsupportedAlgorithm,
    /// A certificate could not be parsed (DER/X.509).
    CertMalformed(&'static str),
    /// No CA certificate was given (verification cannot be switched off).
    NoCa,
    /// The system clock is not set, so validity cannot be checked.
    ClockUnset,
    /// The client private key is not a P-256 key.
    BadClientKey,
    /// The server answered with a redirect; redirects are refused.
    HttpRedirect { status: u16 },
    /// The server answered with a non-success status.
    HttpStatus { status: u16 },
    /// The response head is malformed.
    HttpMalformed(&'static str),
    /// The response head is larger than the client accepts.
    HttpHeadTooLarge,
    /// The body ended before its declared length.
    HttpTruncated,
    /// The caller's sink refused the body.
    Sink,
    /// PEM input could not be decoded.
    Pem(&'static str),
}

impl Error {
    pub(crate) fn sys(op: &'static str) -> impl FnOnce(Errno) -> Error {
        move |errno| Error::new(ErrorKind::Sys { op, errno })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            ErrorKind::Sys { op, errno } => write!(f, "{op}: {errno}"),
            ErrorKind::Netlink { op, errno } => write!(f, "netlink {op}: errno {errno}"),
            ErrorKind::NetlinkMalformed => f.write_str("malformed netlink reply"),
            ErrorKind::NoInterface => f.write_str("no network interface besides lo"),
            ErrorKind::InterfaceNotFound(name) => write!(f, "interface {name} not found"),
            ErrorKind::NoCarrier { waited_ms } => {
                write!(f, "no interface has carrier after {waited_ms} ms")
            }
            ErrorKind::NotEthernet(name) => write!(f, "interface {name} is not Ethernet"),
            ErrorKind::DhcpTimeout { waited_ms } => write!(f, "no DHCP lease after {waited_ms} ms"),
            ErrorKind::DhcpMalformed(why) => write!(f, "malformed DHCP packet: {why}"),
            ErrorKind::BadHostName => f.write_str("invalid host name"),
            ErrorKind::NoDnsServer => f.write_str("no DNS server to resolve the host"),
            ErrorKind::DnsTimeout => f.write_str("DNS: no answer from any server"),
            ErrorKind::DnsRcode(rc) => write!(f, "DNS: server answered rcode {rc}"),
            ErrorKind::DnsNoAddress => f.write_str("DNS: no A record"),
            ErrorKind::DnsMalformed(why) => write!(f, "DNS: malformed answer: {why}"),
            ErrorKind::HostLookup(why) => write!(f, "host lookup failed: {why}"),
            ErrorKind::BadUrl(why) => write!(f, "bad URL: {why}"),
            ErrorKind::ConnectTimeout => f.write_str("TCP connect timed out"),
            ErrorKind::Connect(errno) => write!(f, "TCP connect failed: {errno}"),
            ErrorKind::ReadTimeout => f.write_str("read timed out"),
            ErrorKind::ConnectionClosed => f.write_str("connection closed by peer"),
            ErrorKind::TlsVersion => f.write_str("TLS: server does not speak TLS 1.3"),
            ErrorKind::TlsHandshakeRefused => f.write_str(
                "TLS: server refused the handshake: it must offer TLS_CHACHA20_POLY1305_SHA256 and P-256",
            ),
            ErrorKind::Tls(e) => write!(f, "TLS failed: {e}"),
            ErrorKind::CertUnknownIssuer => f.write_str("certificate: not issued by the trusted CA"),
            ErrorKind::CertExpired => f.write_str("certificate: expired"),
            ErrorKind::CertNotYetValid => f.write_str("certificate: not yet valid"),
            ErrorKind::CertHostMismatch => f.write_str("certificate: does not match the host name"),
            ErrorKind::CertBadSignature => f.write_str("certificate: bad signature"),
            ErrorKind::CertUnsupportedAlgorithm => {
                f.write_str("certificate: unsupported algorithm (P-256 ECDSA only)")
            }
            ErrorKind::CertMalformed(why) => write!(f, "certificate: malformed: {why}"),
            ErrorKind::NoCa => f.write_str("no CA certificate given"),
            ErrorKind::ClockUnset => {
                f.write_str("system clock not set: cannot check certificate validity")
            }
            ErrorKind::BadClientKey => f.write_str("client key is not a P-256 private key"),
            ErrorKind::HttpRedirect { status } => write!(f, "HTTP {status}: redirects are refused"),
            ErrorKind::HttpStatus { status } => write!(f, "HTTP status {status}"),
            ErrorKind::HttpMalformed(why) => write!(f, "malformed HTTP response: {why}"),
            ErrorKind::HttpHeadTooLarge => f.write_str("HTTP response head too large"),
            ErrorKind::HttpTruncated => f.write_str("HTTP body truncated"),
            ErrorKind::Sink => f.write_str("body sink failed"),
            ErrorKind::Pem(why) => write!(f, "PEM: {why}"),
        }
    }
}

impl core::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
