//! The readiness probes' HTTP: a plain GET to a local health endpoint and
//! an authenticated HTTPS GET to the Kubernetes API. Answers are capped at
//! [`MAX_ANSWER`]: a probe never buffers more than that.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use ember_net::http::{self, BodyDecoder};
use ember_net::https::{Client, Request};
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrV4, SocketFlags, SocketType};

use crate::clock;

const TIMEOUT_MS: u64 = 5_000;
/// The largest answer a probe reads: a Node object is a few KB.
pub const MAX_ANSWER: usize = 1 << 20;

fn capped(body: &mut Vec<u8>, d: &[u8]) -> ember_net::Result<()> {
    if body.len() + d.len() > MAX_ANSWER {
        return Err(ember_net::Error::HttpMalformed(
            "body larger than a probe answer may be",
        ));
    }
    body.extend_from_slice(d);
    Ok(())
}

/// GET over TLS with a bearer token; returns the status and the body.
pub fn https_get(
    cas: &[Vec<u8>],
    dns: &[[u8; 4]],
    url: &str,
    token: &str,
) -> Result<(u16, Vec<u8>), ember_net::Error> {
    let mut client = Client::new(cas, dns);
    client.connect_timeout = Duration::from_millis(TIMEOUT_MS);
    client.read_timeout = Duration::from_millis(TIMEOUT_MS);
    let req = Request {
        bearer: Some(token),
        ..Request::get(ember_net::url::parse(url)?)
    };
    let mut status = 0;
    let mut body = Vec::new();
    client.send(
        &req,
        &mut |s| {
            status = s;
            Ok(())
        },
        &mut |d| capped(&mut body, d),
    )?;
    Ok((status, body))
}

/// GET `http://A.B.C.D:PORT/PATH` (a local endpoint: IPv4 literals only).
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
    let ip = ember_net::url::parse_ipv4(host).ok_or("host must be an IPv4 address")?;
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| errno("socket", e))?;
    let addr = SocketAddrV4::new(rustix::net::Ipv4Addr::from(ip), port);
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => return Err(errno("connect", e)),
    }
    let deadline = clock::now_ms() + TIMEOUT_MS;
    wait(&fd, PollFlags::OUT, deadline)?;
    if let Err(e) = rustix::net::sockopt::socket_error(&fd).map_err(|e| errno("connect", e))? {
        return Err(errno("connect", e));
    }
    let request = http::request_with("GET", host, port, path, None, None, &[]);
    let mut sent = 0;
    while sent < request.len() {
        wait(&fd, PollFlags::OUT, deadline)?;
        match rustix::io::write(&fd, &request[sent..]) {
            Ok(n) => sent += n,
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(errno("send", e)),
        }
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        wait(&fd, PollFlags::IN, deadline)?;
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) if raw.len() + n <= MAX_ANSWER => raw.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(String::from("answer too large")),
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(errno("recv", e)),
        }
        if let Some(len) = http::head_len(&raw) {
            let head = http::parse_head(&raw[..len]).map_err(|e| alloc::format!("{e}"))?;
            let mut decoder = BodyDecoder::new(head.body);
            let mut body = Vec::new();
            decoder
                .feed(&raw[len..], &mut |d| capped(&mut body, d))
                .map_err(|e| alloc::format!("{e}"))?;
            if decoder.is_done() {
                return Ok((head.status, body));
            }
        }
    }
    let len = http::head_len(&raw).ok_or("connection closed before the answer's head")?;
    let head = http::parse_head(&raw[..len]).map_err(|e| alloc::format!("{e}"))?;
    Ok((head.status, raw[len..].to_vec()))
}

fn wait(fd: &rustix::fd::OwnedFd, flags: PollFlags, deadline: u64) -> Result<(), String> {
    let left = deadline.saturating_sub(clock::now_ms());
    if left == 0 {
        return Err(String::from("timed out"));
    }
    let ts = rustix::time::Timespec {
        tv_sec: (left / 1000) as i64,
        tv_nsec: ((left % 1000) * 1_000_000) as i64,
    };
    let mut fds = [PollFd::new(fd, flags)];
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(0) => Err(String::from("timed out")),
        Ok(_) => Ok(()),
        Err(Errno::INTR) => Ok(()),
        Err(e) => Err(errno("poll", e)),
    }
}

fn errno(op: &str, e: Errno) -> String {
    alloc::format!("{op}: {e}")
}
