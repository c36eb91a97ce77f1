//! swtpm's raw data port over TCP or a Unix socket: the same bytes as the
//! device, framed only by the header's size field (what `tpm2-tools -T
//! swtpm:` speaks on the data port).

use crate::error::{Error, Result};
use crate::transport::{declared_size, Transport};
use crate::ErrorKind;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection to swtpm's data channel.
pub struct SocketTransport {
    stream: Stream,
}

fn sock_err(op: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| {
        Error::new(ErrorKind::Socket {
            op,
            detail: e.to_string().into(),
        })
    }
}

impl SocketTransport {
    /// Connects to `host:port` (swtpm `--server type=tcp`).
    pub fn connect_tcp(addr: &str) -> Result<Self> {
        let s = TcpStream::connect(addr).map_err(sock_err("connect"))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(sock_err("set timeout"))?;
        Ok(SocketTransport {
            stream: Stream::Tcp(s),
        })
    }

    /// Connects to a Unix socket path (swtpm `--server type=unixio`).
    pub fn connect_unix(path: &std::path::Path) -> Result<Self> {
        let s = UnixStream::connect(path).map_err(sock_err("connect"))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(sock_err("set timeout"))?;
        Ok(SocketTransport {
            stream: Stream::Unix(s),
        })
    }

    /// Parses `swtpm:HOST:PORT`, `unix:PATH` or `HOST:PORT`.
    pub fn connect_spec(spec: &str) -> Result<Self> {
        if let Some(path) = spec.strip_prefix("unix:") {
            return Self::connect_unix(std::path::Path::new(path));
        }
        let addr = spec.strip_prefix("swtpm:").unwrap_or(spec);
        Self::connect_tcp(addr)
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match &mut self.stream {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads until `buf` is full; returns how many bytes arrived before EOF.
fn read_full(r: &mut dyn ReadWrite, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::new(ErrorKind::Socket {
                    op: "read",
                    detail: e.to_string().into(),
                }))
            }
        }
    }
    Ok(got)
}

impl Transport for SocketTransport {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize> {
        let io = self.io();
        io.write_all(command).map_err(sock_err("write"))?;
        io.flush().map_err(sock_err("flush"))?;
        if response.len() < 10 {
            return Err(Error::new(ErrorKind::ResponseTooLarge {
                declared: 10,
                limit: response.len(),
            }));
        }
        let got = read_full(io, &mut response[..10])?;
        if got < 10 {
            return Err(Error::new(ErrorKind::ShortRead {
                received: got,
                expected: 10,
            }));
        }
        let declared = declared_size(&response[..10]);
        if declared < 10 {
            return Err(Error::new(ErrorKind::ResponseSizeMismatch {
                declared,
                received: 10,
            }));
        }
        if declared > response.len() {
            return Err(Error::new(ErrorKind::ResponseTooLarge {
                declared,
                limit: response.len(),
            }));
        }
        let got = read_full(io, &mut response[10..declared])?;
        if got < declared - 10 {
            return Err(Error::new(ErrorKind::ShortRead {
                received: 10 + got,
                expected: declared,
            }));
        }
        Ok(declared)
    }

    fn before_retry(&mut self, attempt: u32) {
        std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
    }
}

/// Opens a TPM by the `--tpm` spelling of `ember tpm`: `swtpm:HOST:PORT`,
/// `unix:PATH`, or a device path; /dev/tpmrm0 falls back to /dev/tpm0.
pub fn open_transport(spec: &str) -> Result<Box<dyn Transport>> {
    if spec.starts_with("swtpm:") || spec.starts_with("unix:") {
        return Ok(Box::new(SocketTransport::connect_spec(spec)?));
    }
    if spec == "/dev/tpmrm0" {
        return Ok(Box::new(crate::device::DeviceTransport::open_default()?));
    }
    let path: &'static str = Box::leak(spec.to_string().into_boxed_str());
    Ok(Box::new(crate::device::DeviceTransport::open(path)?))
}
