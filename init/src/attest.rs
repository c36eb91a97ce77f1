//! The boot server conversation over the node's HTTPS client
//! (`ember_proto::net::NetTransport`), plus the one thing the init adds: the
//! sealed overlay is also kept, unchanged, for last-known-good.

use ember_proto::client::{BodySink, Response, Transport};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};

/// Where the sealed overlay is kept, as downloaded, until it goes to the ESP.
pub const SEALED_COPY: &str = "/run/ember/overlay.sealed";

/// A transport that also writes the body of a successful GET to a file.
pub struct Tee<T: Transport> {
    inner: T,
    copy: Option<OwnedFd>,
}

impl<T: Transport> Tee<T> {
    pub fn new(inner: T) -> Self {
        Tee { inner, copy: None }
    }

    /// Keeps a copy of the next streamed body (the sealed overlay) at `path`.
    pub fn copy_next_body_to(&mut self, path: &str) -> Result<(), rustix::io::Errno> {
        let _ = rustix::fs::mkdir("/run/ember", Mode::from_raw_mode(0o700));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
        self.copy = Some(rustix::fs::open(path, flags, Mode::from_raw_mode(0o600))?);
        Ok(())
    }
}

/// Forwards to the caller's sink, writing 200 bodies to the copy first.
struct TeeBody<'s> {
    sink: &'s mut dyn BodySink,
    copy: &'s OwnedFd,
    ok: bool,
    failed: bool,
}

impl BodySink for TeeBody<'_> {
    fn status(&mut self, status: u16) -> bool {
        self.ok = status == 200;
        self.sink.status(status)
    }

    fn data(&mut self, piece: &[u8]) -> bool {
        if self.ok && !self.failed {
            if let Err(e) = crate::fsutil::write_all(self.copy, piece) {
                // The boot goes on; only last-known-good loses this overlay.
                log::warn!("overlay: keeping a copy for last-known-good failed: {e}");
                self.failed = true;
            }
        }
        self.sink.data(piece)
    }
}

impl<T: Transport> Transport for Tee<T> {
    type Error = T::Error;

    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, Self::Error> {
        self.inner.post(path, bearer, body)
    }

    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), Self::Error> {
        match self.copy.take() {
            None => self.inner.get(path, bearer, sink),
            Some(fd) => {
                let mut body = TeeBody {
                    sink,
                    copy: &fd,
                    ok: false,
                    failed: false,
                };
                self.inner.get(path, bearer, &mut body)
            }
        }
    }
}
