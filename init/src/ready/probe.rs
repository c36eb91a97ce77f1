//! The readiness probes' HTTP: a plain GET to a local health endpoint and
//! an authenticated HTTPS GET to the Kubernetes API. Answers are capped at
//! [`MAX_ANSWER`]: a probe never buffers more than that.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use ember_net::https::{Client, Request};
use ember_net::url::Url;

const TIMEOUT_MS: u64 = 5_000;
/// The largest answer a probe reads: a Node object is a few KB.
pub const MAX_ANSWER: usize = 1 << 20;

fn capped(body: &mut Vec<u8>, d: &[u8]) -> ember_net::Result<()> {
    if body.len() + d.len() > MAX_ANSWER {
        return Err(
            ember_net::ErrorKind::HttpMalformed("body larger than a probe answer may be").into(),
        );
    }
    body.extend_from_slice(d);
    Ok(())
}

/// A probe's client: the node's CA bundle and DNS servers (none for the
/// local endpoint), connect and read bounded by [`TIMEOUT_MS`].
fn client<'a>(cas: &'a [Vec<u8>], dns: &'a [[u8; 4]]) -> Client<'a> {
    let mut client = Client::new(cas, dns);
    client.connect_timeout = Duration::from_millis(TIMEOUT_MS);
    client.read_timeout = Duration::from_millis(TIMEOUT_MS);
    client
}

/// GET over TLS with a bearer token; returns the status and the body.
pub fn https_get(
    cas: &[Vec<u8>],
    dns: &[[u8; 4]],
    url: &str,
    token: &str,
) -> Result<(u16, Vec<u8>), ember_net::Error> {
    let req = Request {
        bearer: Some(token),
        ..Request::get(ember_net::url::parse(url)?)
    };
    let mut status = 0;
    let mut body = Vec::new();
    client(cas, dns).send(
        &req,
        &mut |s| {
            status = s;
            Ok(())
        },
        &mut |d| capped(&mut body, d),
    )?;
    Ok((status, body))
}

/// GET `http://A.B.C.D:PORT/PATH` (a local endpoint: IPv4 literals only),
/// through the same plain-TCP exchange as a plain-HTTP overlay fetch.
pub fn http_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    // `split_at_checked`, not `[..]`: str slicing's panic path drags char
    // formatting and Unicode tables into /init.
    let (authority, path) = match rest.find('/').and_then(|i| rest.split_at_checked(i)) {
        Some(parts) => parts,
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "bad port")?),
        None => (authority, 80),
    };
    ember_net::url::parse_ipv4(host).ok_or("host must be an IPv4 address")?;
    let req = Request::get(Url { host, port, path });
    let mut status = 0;
    let mut body = Vec::new();
    client(&[], &[])
        .send_plain(
            &req,
            &mut |s| {
                status = s;
                Ok(())
            },
            &mut |d| capped(&mut body, d),
        )
        .map_err(|e| alloc::format!("{e}"))?;
    Ok((status, body))
}
