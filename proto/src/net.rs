//! [`Transport`] over `ember-net`'s HTTPS client (feature `net`): how PID 1
//! speaks the protocol. One TLS connection per request; a plain-HTTP
//! transport only fetches sealed overlay blobs.

use alloc::vec::Vec;
use core::cell::Cell;

use ember_net::https::{Client, Request};

use crate::client::{BodySink, Response, Transport, TransportError, Url};
use crate::msg::{CONTENT_TYPE, MAX_MESSAGE};

pub struct NetTransport<'c, 'a> {
    client: &'c Client<'a>,
    /// The boot server; protocol paths arrive with its prefix already on.
    server: &'c Url,
    /// `Some(port)`: plain HTTP to the server's host on that port.
    plain_port: Option<u16>,
}

impl<'c, 'a> NetTransport<'c, 'a> {
    pub fn new(client: &'c Client<'a>, server: &'c Url) -> Self {
        NetTransport {
            client,
            server,
            plain_port: None,
        }
    }

    /// Plain HTTP to the same host on `port`: for sealed blobs only, whose
    /// integrity the signed manifest and the AEAD give.
    pub fn plain(client: &'c Client<'a>, server: &'c Url, port: u16) -> Self {
        NetTransport {
            client,
            server,
            plain_port: Some(port),
        }
    }

    /// The request URL for `path`, from parts parsed once.
    fn url<'p>(&'p self, path: &'p str) -> ember_net::url::Url<'p> {
        ember_net::url::Url {
            host: &self.server.host,
            port: self.plain_port.unwrap_or(self.server.port),
            path,
        }
    }

    fn send(
        &self,
        req: &Request<'_>,
        on_status: &mut dyn FnMut(u16) -> ember_net::Result<()>,
        sink: &mut dyn FnMut(&[u8]) -> ember_net::Result<()>,
    ) -> ember_net::Result<ember_net::https::Response> {
        match self.plain_port {
            Some(_) => self.client.send_plain(req, on_status, sink),
            None => self.client.send(req, on_status, sink),
        }
    }
}

impl Transport for NetTransport<'_, '_> {
    type Error = ember_net::Error;

    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, Self::Error> {
        let req = Request {
            method: "POST",
            url: self.url(path),
            bearer,
            content_type: Some(CONTENT_TYPE),
            body,
        };
        let status = Cell::new(0u16);
        let mut buf = Vec::new();
        let sent = self.send(
            &req,
            &mut |s| {
                status.set(s);
                Ok(())
            },
            &mut |d| {
                if buf.len() + d.len() > MAX_MESSAGE {
                    return Err(ember_net::ErrorKind::Sink.into());
                }
                buf.extend_from_slice(d);
                Ok(())
            },
        )?;
        Ok(Response {
            status: status.get(),
            body: buf,
            retry_after_s: sent.retry_after_s,
        })
    }

    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), Self::Error> {
        let req = Request {
            method: "GET",
            url: self.url(path),
            bearer,
            content_type: None,
            body: &[],
        };
        let status = Cell::new(0u16);
        let delivered = Cell::new(false);
        let stopped = Cell::new(false);
        let result = self.send(
            &req,
            &mut |s| {
                status.set(s);
                Ok(())
            },
            &mut |d| {
                if !delivered.replace(true) && !sink.status(status.get()) {
                    stopped.set(true);
                    return Err(ember_net::ErrorKind::Sink.into());
                }
                if !sink.data(d) {
                    stopped.set(true);
                    return Err(ember_net::ErrorKind::Sink.into());
                }
                Ok(())
            },
        );
        match result {
            // The sink stopped the download; it holds the reason.
            Err(e) if *e.kind() == ember_net::ErrorKind::Sink && stopped.get() => Ok(()),
            Err(e) => Err(e),
            Ok(_) => {
                if !delivered.get() {
                    sink.status(status.get());
                }
                Ok(())
            }
        }
    }
}

impl TransportError for ember_net::Error {
    fn unreachable(&self) -> bool {
        use ember_net::ErrorKind as E;
        matches!(
            self.kind(),
            E::NoDnsServer
                | E::DnsTimeout
                | E::DnsRcode(_)
                | E::DnsNoAddress
                | E::HostLookup(_)
                | E::ConnectTimeout
                | E::Connect(_)
                | E::ReadTimeout
                | E::ConnectionClosed
        )
    }
}
