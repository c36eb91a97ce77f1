//! Where a request comes from, as the server's per-source limits count it.
//!
//! One IPv4 address is one source. An IPv6 host is normally given a whole
//! /64 (SLAAC, privacy addresses, a prefix delegated to one machine), so
//! counting full IPv6 addresses would let one host walk around a cap by
//! changing its low 64 bits: an IPv6 source is its /64. An IPv4-mapped
//! IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
//! IPv4 client) is that IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A source of requests: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net([u16; 4]),
}

impl Source {
    pub fn of(addr: IpAddr) -> Source {
        match addr {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => {
                    let s = v6.segments();
                    Source::V6Net([s[0], s[1], s[2], s[3]])
                }
            },
        }
    }
}

/// `10.0.0.9`, or `2001:db8:1:2::/64`: the text stored with a session and
/// counted by the per-source cap.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Net([a, b, c, d]) => {
                write!(f, "{}/64", Ipv6Addr::new(*a, *b, *c, *d, 0, 0, 0, 0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Source;
    use std::net::IpAddr;

    fn source(text: &str) -> String {
        Source::of(text.parse::<IpAddr>().unwrap()).to_string()
    }

    #[test]
    fn an_ipv4_address_is_its_own_source() {
        assert_eq!(source("10.0.0.9"), "10.0.0.9");
        assert_ne!(source("10.0.0.9"), source("10.0.0.10"));
    }

    #[test]
    fn addresses_of_one_ipv6_64_are_one_source() {
        let a = source("2001:db8:1:2::1");
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(source("2001:db8:1:2:ffff:ffff:ffff:fffe"), a);
        assert_eq!(source("2001:db8:1:2:dead:beef:0:1"), a);
        assert_ne!(source("2001:db8:1:3::1"), a);
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_source() {
        assert_eq!(source("::ffff:10.0.0.9"), "10.0.0.9");
    }
}
