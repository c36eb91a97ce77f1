//! A small A-record resolver over UDP: each server in turn, bounded tries,
//! a timeout per try. IP literals skip DNS.

use crate::clock;
use crate::error::{Error, Result};
use crate::wire::dns;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;
use rustix::event::PollFlags;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

pub const TRIES: usize = 2;
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Addresses of `host`: the literal itself, or the A records from `servers`.
pub fn resolve(host: &str, servers: &[[u8; 4]]) -> Result<Vec<[u8; 4]>> {
    if let Some(ip) = crate::url::parse_ipv4(host) {
        return Ok(alloc::vec![ip]);
    }
    if servers.is_empty() {
        return Err(Error::NoDnsServer);
    }
    let mut last = Error::DnsTimeout;
    for _ in 0..TRIES {
        for server in servers {
            match query(host, *server, TIMEOUT) {
                Ok(addrs) => return Ok(addrs),
                // An authoritative "no such name" will not change on retry.
                Err(e @ (Error::DnsRcode(3) | Error::BadHostName)) => return Err(e),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

/// Query IDs must not block the boot on an unseeded CRNG (see
/// `dhcp::insecure_random_u64`); TLS keys do wait for it.
fn random_id() -> u16 {
    crate::dhcp::insecure_random_u64()
        .map(|r| r as u16)
        .unwrap_or(0x4d45)
}

pub fn query(host: &str, server: [u8; 4], timeout: Duration) -> Result<Vec<[u8; 4]>> {
    let id = random_id();
    let q = dns::emit_query(id, host)?;
    let fd = net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(Error::sys("dns socket"))?;
    // connect() makes the kernel drop datagrams from any other source.
    net::connect(&fd, &SocketAddrV4::new(Ipv4Addr::from(server), 53))
        .map_err(Error::sys("dns connect"))?;
    net::send(&fd, &q, SendFlags::empty()).map_err(Error::sys("dns send"))?;
    let deadline = clock::monotonic_ms() + timeout.as_millis() as u64;
    let mut buf = alloc::vec![0u8; 1232];
    loop {
        let now = clock::monotonic_ms();
        if now >= deadline {
            return Err(Error::DnsTimeout);
        }
        if !clock::wait_fd(
            rustix::fd::AsFd::as_fd(&fd),
            PollFlags::IN,
            Duration::from_millis(deadline - now),
        )
        .map_err(Error::sys("dns poll"))?
        {
            return Err(Error::DnsTimeout);
        }
        let n = match net::recv(&fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN) => continue,
            // ICMP port unreachable: this server is not answering.
            Err(_) => return Err(Error::DnsTimeout),
        };
        match dns::parse_answer(&buf[..n], id) {
            // A stray datagram with another ID: keep waiting for ours.
            Err(Error::DnsMalformed("answer for another query")) => continue,
            other => return other,
        }
    }
}
