//! One transport decorator for the tools that watch or bend the protocol's
//! traffic (feature `test-hooks`; never in the init): `ember attest
//! --record` keeps Start and Finish, `ember attest --fault` damages the
//! sealed overlay, the protocol tests forge a Finish. Each is a [`Tap`];
//! [`Tapped`] does the forwarding once.

use alloc::vec::Vec;

use crate::client::{BodySink, Response, Transport};

/// What a decorator does to the traffic. Every hook passes through by
/// default.
pub trait Tap {
    /// Sees a POST body before it is sent, and may change it.
    fn post(&mut self, _path: &str, _body: &mut Vec<u8>) {}
    /// Whether the body of a GET of `path` should be buffered and handed
    /// to [`Tap::get_body`] (otherwise it streams through untouched).
    fn wants_get_body(&self, _path: &str) -> bool {
        false
    }
    /// Sees a whole 200 GET body before the caller does, and may change it.
    fn get_body(&mut self, _path: &str, _body: &mut Vec<u8>) {}
}

impl<P: Tap + ?Sized> Tap for &mut P {
    fn post(&mut self, path: &str, body: &mut Vec<u8>) {
        (**self).post(path, body)
    }
    fn wants_get_body(&self, path: &str) -> bool {
        (**self).wants_get_body(path)
    }
    fn get_body(&mut self, path: &str, body: &mut Vec<u8>) {
        (**self).get_body(path, body)
    }
}

/// `inner`, with `tap` watching its traffic.
pub struct Tapped<T, P> {
    pub inner: T,
    pub tap: P,
}

impl<T: Transport, P: Tap> Transport for Tapped<T, P> {
    type Error = T::Error;

    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, T::Error> {
        let mut body = body.to_vec();
        self.tap.post(path, &mut body);
        self.inner.post(path, bearer, &body)
    }

    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), T::Error> {
        if !self.tap.wants_get_body(path) {
            return self.inner.get(path, bearer, sink);
        }
        let mut buf = Buffer {
            status: 0,
            body: Vec::new(),
        };
        self.inner.get(path, bearer, &mut buf)?;
        if buf.status == 200 {
            self.tap.get_body(path, &mut buf.body);
        }
        if sink.status(buf.status) {
            for piece in buf.body.chunks(16 * 1024) {
                if !sink.data(piece) {
                    break;
                }
            }
        }
        Ok(())
    }
}

struct Buffer {
    status: u16,
    body: Vec<u8>,
}

impl BodySink for Buffer {
    fn status(&mut self, status: u16) -> bool {
        self.status = status;
        true
    }

    fn data(&mut self, piece: &[u8]) -> bool {
        self.body.extend_from_slice(piece);
        true
    }
}
