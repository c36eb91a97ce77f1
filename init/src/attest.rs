//! The boot server conversation (seed steps 5 and 6) over the node's HTTPS
//! client: attestation with the TPM, the sealed overlay streamed through
//! decryption into the extractor (and, unchanged, into a copy for
//! last-known-good), and the boot report.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ember_net::https::{Client, Request};
use ember_proto::client::{BodySink, Response, Transport};
use ember_proto::msg::{CONTENT_TYPE, MAX_MESSAGE};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};

/// Where the sealed overlay is kept, as downloaded, until it goes to the ESP.
pub const SEALED_COPY: &str = "/run/ember/overlay.sealed";

/// `ember_proto::client::Transport` over `ember_net`'s verified TLS client.
pub struct Http<'a> {
    client: Client<'a>,
    /// `https://host:port` of the attest URL; paths come from the protocol.
    origin: String,
    /// Ciphertext of a 200 GET is also written here when set.
    tee: Option<OwnedFd>,
}

impl<'a> Http<'a> {
    pub fn new(cas: &'a [Vec<u8>], dns: &'a [[u8; 4]], url: &ember_proto::client::Url) -> Self {
        Http {
            client: Client::new(cas, dns),
            origin: format!("https://{}:{}", url.host, url.port),
            tee: None,
        }
    }

    /// Starts keeping a copy of the next streamed body (the sealed overlay).
    pub fn tee_to(&mut self, path: &str) -> Result<(), rustix::io::Errno> {
        let _ = rustix::fs::mkdir("/run/ember", Mode::from_raw_mode(0o700));
        let fd = rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        self.tee = Some(fd);
        Ok(())
    }
}

impl Transport for Http<'_> {
    type Error = ember_net::Error;

    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, Self::Error> {
        let url = format!("{}{path}", self.origin);
        let req = Request {
            method: "POST",
            url: &url,
            bearer,
            content_type: Some(CONTENT_TYPE),
            body,
        };
        let mut status = 0;
        let mut out = Vec::new();
        self.client.send(
            &req,
            &mut |s| {
                status = s;
                Ok(())
            },
            &mut |d| {
                if out.len() + d.len() > MAX_MESSAGE {
                    return Err(ember_net::Error::HttpMalformed(
                        "protocol message larger than allowed",
                    ));
                }
                out.extend_from_slice(d);
                Ok(())
            },
        )?;
        Ok(Response { status, body: out })
    }

    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), Self::Error> {
        let url = format!("{}{path}", self.origin);
        let req = Request {
            bearer,
            ..Request::get(&url)
        };
        // Both callbacks reach the caller's sink; the client calls them in turn.
        let ok = core::cell::Cell::new(false);
        let sink = core::cell::RefCell::new(sink);
        let tee = &self.tee;
        self.client.send(
            &req,
            &mut |s| {
                ok.set(s == 200);
                match sink.borrow_mut().status(s) {
                    true => Ok(()),
                    false => Err(ember_net::Error::HttpStatus { status: s }),
                }
            },
            &mut |d| {
                if let (true, Some(fd)) = (ok.get(), tee) {
                    write_all(fd, d).map_err(|errno| ember_net::Error::Sys {
                        op: "write sealed copy",
                        errno,
                    })?;
                }
                match sink.borrow_mut().data(d) {
                    true => Ok(()),
                    false => Err(ember_net::Error::HttpMalformed(
                        "overlay stream refused by the reader",
                    )),
                }
            },
        )?;
        self.tee = None;
        Ok(())
    }
}

fn write_all(fd: &OwnedFd, mut d: &[u8]) -> Result<(), rustix::io::Errno> {
    while !d.is_empty() {
        match rustix::io::write(fd, d) {
            Ok(n) => d = &d[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
