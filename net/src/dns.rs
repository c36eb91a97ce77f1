//! Host names to IPv4 addresses. On the node: a small A-record resolver over
//! UDP to the lease's servers (each in turn, bounded tries, a timeout per
//! try). In a host program (`std`): the C library's resolver, so /etc/hosts
//! and nsswitch apply as they do for every other program. Either way IP
//! literals skip lookup and `localhost` is loopback (RFC 6761).

use crate::clock;
use crate::error::{Error, Result};
use crate::wire::dns;
use crate::ErrorKind;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;
use rustix::event::PollFlags;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

pub const TRIES: usize = 2;
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How a client turns a host name into addresses.
#[derive(Debug, Clone, Copy)]
pub enum Resolver<'a> {
    /// PID 1: DNS over UDP to these servers (the DHCP lease's). The initrd
    /// has no /etc/hosts worth reading; the lease is the node's truth.
    Servers(&'a [[u8; 4]]),
    /// A host program: getaddrinfo(3), i.e. /etc/hosts first, then DNS, as
    /// /etc/nsswitch.conf says.
    #[cfg(feature = "std")]
    System,
}

impl Resolver<'_> {
    /// The IPv4 addresses of `host`, in the order to try them.
    pub fn resolve(&self, host: &str) -> Result<Vec<[u8; 4]>> {
        if let Some(ip) = literal_or_localhost(host) {
            return Ok(alloc::vec![ip]);
        }
        match self {
            Resolver::Servers(servers) => resolve(host, servers),
            #[cfg(feature = "std")]
            Resolver::System => system(host),
        }
    }
}

/// An IPv4 literal, or 127.0.0.1 for `localhost` and names under it, which
/// RFC 6761 reserves for loopback: no resolver is asked about them.
fn literal_or_localhost(host: &str) -> Option<[u8; 4]> {
    if let Some(ip) = crate::url::parse_ipv4(host) {
        return Some(ip);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let is_localhost = host.eq_ignore_ascii_case("localhost")
        || (host.len() > 10
            && host
                .get(host.len() - 10..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost")));
    is_localhost.then_some([127, 0, 0, 1])
}

#[cfg(feature = "std")]
fn system(host: &str) -> Result<Vec<[u8; 4]>> {
    use std::net::{SocketAddr, ToSocketAddrs};
    let found = (host, 0u16)
        .to_socket_addrs()
        .map_err(|e| Error::new(ErrorKind::HostLookup(alloc::format!("{host}: {e}").into())))?;
    let mut addrs: Vec<[u8; 4]> = Vec::new();
    for a in found {
        if let SocketAddr::V4(v4) = a {
            if !addrs.contains(&v4.ip().octets()) {
                addrs.push(v4.ip().octets());
            }
        }
    }
    if addrs.is_empty() {
        return Err(Error::new(ErrorKind::DnsNoAddress));
    }
    Ok(addrs)
}

/// Addresses of `host`: the literal itself, or the A records from `servers`.
pub fn resolve(host: &str, servers: &[[u8; 4]]) -> Result<Vec<[u8; 4]>> {
    if let Some(ip) = literal_or_localhost(host) {
        return Ok(alloc::vec![ip]);
    }
    if servers.is_empty() {
        return Err(Error::new(ErrorKind::NoDnsServer));
    }
    let mut last = Error::new(ErrorKind::DnsTimeout);
    for _ in 0..TRIES {
        for server in servers {
            match query(host, *server, TIMEOUT) {
                Ok(addrs) => return Ok(addrs),
                // An authoritative "no such name" will not change on retry.
                Err(e) if matches!(e.kind(), ErrorKind::DnsRcode(3) | ErrorKind::BadHostName) => {
                    return Err(e)
                }
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
            return Err(Error::new(ErrorKind::DnsTimeout));
        }
        if !clock::wait_fd(
            rustix::fd::AsFd::as_fd(&fd),
            PollFlags::IN,
            Duration::from_millis(deadline - now),
        )
        .map_err(Error::sys("dns poll"))?
        {
            return Err(Error::new(ErrorKind::DnsTimeout));
        }
        let n = match net::recv(&fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN) => continue,
            // ICMP port unreachable: this server is not answering.
            Err(_) => return Err(Error::new(ErrorKind::DnsTimeout)),
        };
        match dns::parse_answer(&buf[..n], id) {
            // A stray datagram with another ID: keep waiting for ours.
            Err(e) if *e.kind() == ErrorKind::DnsMalformed("answer for another query") => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod resolver_tests {
    use super::*;

    #[test]
    fn localhost_is_loopback_without_asking_anyone() {
        // No servers: anything that reached DNS would fail with NoDnsServer.
        let r = Resolver::Servers(&[]);
        assert_eq!(r.resolve("localhost").unwrap(), [[127, 0, 0, 1]]);
        assert_eq!(r.resolve("LocalHost.").unwrap(), [[127, 0, 0, 1]]);
        assert_eq!(r.resolve("boot.localhost").unwrap(), [[127, 0, 0, 1]]);
        assert_eq!(r.resolve("10.0.2.2").unwrap(), [[10, 0, 2, 2]]);
        assert_eq!(
            r.resolve("notlocalhost"),
            Err(Error::new(ErrorKind::NoDnsServer))
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn system_resolver_reads_etc_hosts() {
        // Every Debian machine lists localhost in /etc/hosts; the literal
        // shortcut aside, getaddrinfo must find a loopback address for the
        // machine's own name or `localhost.localdomain`-style entries too.
        let addrs = system("localhost").unwrap();
        assert!(addrs.iter().any(|a| a[0] == 127), "{addrs:?}");
    }
}
