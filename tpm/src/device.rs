//! The node's TPM character device. The kernel delivers a whole response to
//! one read() after a whole command was written with one write().

use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::ErrorKind;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};

/// /dev/tpmrm0 (the kernel resource manager, which flushes our transient
/// objects and sessions if we die) or /dev/tpm0 when no resource manager exists.
pub struct DeviceTransport {
    fd: OwnedFd,
    path: &'static str,
}

impl DeviceTransport {
    /// Opens /dev/tpmrm0, falling back to /dev/tpm0.
    pub fn open_default() -> Result<Self> {
        match Self::open("/dev/tpmrm0") {
            Ok(t) => Ok(t),
            Err(_) => Self::open("/dev/tpm0"),
        }
    }

    /// Opens a TPM character device by path.
    pub fn open(path: &'static str) -> Result<Self> {
        let fd =
            rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                Error::new(ErrorKind::DeviceOpen {
                    path,
                    errno: e.raw_os_error(),
                })
            })?;
        Ok(DeviceTransport { fd, path })
    }

    pub fn path(&self) -> &'static str {
        self.path
    }
}

impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize> {
        let written = retry_eintr(|| rustix::io::write(&self.fd, command)).map_err(|e| {
            Error::new(ErrorKind::DeviceIo {
                op: "write",
                errno: e.raw_os_error(),
            })
        })?;
        if written != command.len() {
            return Err(Error::new(ErrorKind::DeviceIo {
                op: "short write",
                errno: 0,
            }));
        }
        let n = retry_eintr(|| rustix::io::read(&self.fd, &mut *response)).map_err(|e| {
            Error::new(ErrorKind::DeviceIo {
                op: "read",
                errno: e.raw_os_error(),
            })
        })?;
        if n >= 10 {
            let declared = crate::transport::declared_size(&response[..10]);
            // The kernel truncates to our buffer; a full buffer with a larger
            // declared size means the rest was lost.
            if declared > response.len() {
                return Err(Error::new(ErrorKind::ResponseTooLarge {
                    declared,
                    limit: response.len(),
                }));
            }
            if declared > n {
                return Err(Error::new(ErrorKind::ShortRead {
                    received: n,
                    expected: declared,
                }));
            }
        }
        Ok(n)
    }

    /// A TPM answering RC_RETRY or RC_TESTING needs time, not a hot loop:
    /// 10 ms, 20 ms, ... (at most 360 ms over all retries).
    fn before_retry(&mut self, attempt: u32) {
        let ts = rustix::thread::Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000 * i64::from(attempt.min(8)),
        };
        let _ = rustix::thread::nanosleep(&ts);
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}
