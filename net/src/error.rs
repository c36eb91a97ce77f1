//! The one error type of ember-net: a variant per cause, so the init and the
//! host tool can tell a wrong CA from an expired certificate or a timeout.

use alloc::boxed::Box;
use core::fmt;
use rustix::io::Errno;

/// Texts are `Box<str>`, not `String`: every `?` moves the whole enum, 24
/// bytes this way and 32 with `String` (which made /init 4.4 KB larger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
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
        move |errno| Error::Sys { op, errno }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sys { op, errno } => write!(f, "{op}: {errno}"),
            Error::Netlink { op, errno } => write!(f, "netlink {op}: errno {errno}"),
            Error::NetlinkMalformed => f.write_str("malformed netlink reply"),
            Error::NoInterface => f.write_str("no network interface besides lo"),
            Error::InterfaceNotFound(name) => write!(f, "interface {name} not found"),
            Error::NoCarrier { waited_ms } => {
                write!(f, "no interface has carrier after {waited_ms} ms")
            }
            Error::NotEthernet(name) => write!(f, "interface {name} is not Ethernet"),
            Error::DhcpTimeout { waited_ms } => write!(f, "no DHCP lease after {waited_ms} ms"),
            Error::DhcpMalformed(why) => write!(f, "malformed DHCP packet: {why}"),
            Error::BadHostName => f.write_str("invalid host name"),
            Error::NoDnsServer => f.write_str("no DNS server to resolve the host"),
            Error::DnsTimeout => f.write_str("DNS: no answer from any server"),
            Error::DnsRcode(rc) => write!(f, "DNS: server answered rcode {rc}"),
            Error::DnsNoAddress => f.write_str("DNS: no A record"),
            Error::DnsMalformed(why) => write!(f, "DNS: malformed answer: {why}"),
            Error::HostLookup(why) => write!(f, "host lookup failed: {why}"),
            Error::BadUrl(why) => write!(f, "bad URL: {why}"),
            Error::ConnectTimeout => f.write_str("TCP connect timed out"),
            Error::Connect(errno) => write!(f, "TCP connect failed: {errno}"),
            Error::ReadTimeout => f.write_str("read timed out"),
            Error::ConnectionClosed => f.write_str("connection closed by peer"),
            Error::TlsVersion => f.write_str("TLS: server does not speak TLS 1.3"),
            Error::TlsHandshakeRefused => f.write_str(
                "TLS: server refused the handshake: it must offer TLS_CHACHA20_POLY1305_SHA256 and P-256",
            ),
            Error::Tls(e) => write!(f, "TLS failed: {e}"),
            Error::CertUnknownIssuer => f.write_str("certificate: not issued by the trusted CA"),
            Error::CertExpired => f.write_str("certificate: expired"),
            Error::CertNotYetValid => f.write_str("certificate: not yet valid"),
            Error::CertHostMismatch => f.write_str("certificate: does not match the host name"),
            Error::CertBadSignature => f.write_str("certificate: bad signature"),
            Error::CertUnsupportedAlgorithm => {
                f.write_str("certificate: unsupported algorithm (P-256 ECDSA only)")
            }
            Error::CertMalformed(why) => write!(f, "certificate: malformed: {why}"),
            Error::NoCa => f.write_str("no CA certificate given"),
            Error::ClockUnset => {
                f.write_str("system clock not set: cannot check certificate validity")
            }
            Error::BadClientKey => f.write_str("client key is not a P-256 private key"),
            Error::HttpRedirect { status } => write!(f, "HTTP {status}: redirects are refused"),
            Error::HttpStatus { status } => write!(f, "HTTP status {status}"),
            Error::HttpMalformed(why) => write!(f, "malformed HTTP response: {why}"),
            Error::HttpHeadTooLarge => f.write_str("HTTP response head too large"),
            Error::HttpTruncated => f.write_str("HTTP body truncated"),
            Error::Sink => f.write_str("body sink failed"),
            Error::Pem(why) => write!(f, "PEM: {why}"),
        }
    }
}

impl core::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
