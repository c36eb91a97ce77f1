//! Which interface the node uses: links are brought up first, then the one
//! named by `ember.iface=` or else the first with carrier (never `lo`).

use crate::clock;
use crate::error::{Error, Result};
use crate::netlink::{Link, Netlink};
use crate::ErrorKind;
use core::time::Duration;

/// Sets every link up (including `lo`, which the node needs too) and waits
/// up to `carrier_timeout` for the chosen one to report carrier.
pub fn bring_up_and_choose(
    nl: &mut Netlink,
    wanted: Option<&str>,
    carrier_timeout: Duration,
) -> Result<Link> {
    let links = nl.links()?;
    if let Some(name) = wanted {
        if !links.iter().any(|l| l.name == name) {
            return Err(Error::new(ErrorKind::InterfaceNotFound(name.into())));
        }
    } else if links.iter().all(Link::is_loopback) {
        return Err(Error::new(ErrorKind::NoInterface));
    }
    for link in links.iter().filter(|l| !l.is_up()) {
        nl.set_up(link.index)?;
    }
    let start = clock::monotonic_ms();
    loop {
        let links = nl.links()?;
        if let Some(link) = choose(&links, wanted) {
            return Ok(link.clone());
        }
        let waited = clock::monotonic_ms() - start;
        if waited >= carrier_timeout.as_millis() as u64 {
            return Err(Error::new(ErrorKind::NoCarrier { waited_ms: waited }));
        }
        clock::sleep(Duration::from_millis(10));
    }
}

/// The named link once it has carrier, else the first non-loopback link
/// with carrier, in kernel index order.
pub fn choose<'a>(links: &'a [Link], wanted: Option<&str>) -> Option<&'a Link> {
    let mut candidates = links
        .iter()
        .filter(|l| !l.is_loopback() && l.carrier && l.mac.is_some());
    match wanted {
        Some(name) => candidates.find(|l| l.name == name),
        None => candidates.min_by_key(|l| l.index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::netlink::{IFF_LOOPBACK, IFF_UP};

    fn link(index: u32, name: &str, carrier: bool, flags: u32) -> Link {
        Link {
            index,
            name: name.into(),
            flags,
            carrier,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: 1500,
        }
    }

    #[test]
    fn first_interface_with_carrier_wins_and_lo_is_ignored() {
        let links = [
            link(1, "lo", true, IFF_LOOPBACK | IFF_UP),
            link(2, "eth0", false, IFF_UP),
            link(3, "eth1", true, IFF_UP),
            link(4, "eth2", true, IFF_UP),
        ];
        assert_eq!(choose(&links, None).map(|l| l.name.as_str()), Some("eth1"));
        assert_eq!(
            choose(&links, Some("eth2")).map(|l| l.name.as_str()),
            Some("eth2")
        );
        assert_eq!(choose(&links, Some("eth0")), None);
        assert_eq!(choose(&links[..1], None), None);
    }
}
