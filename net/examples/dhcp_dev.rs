//! Development harness (no other workspace crates): `dhcp_dev IFACE RESOLV MAXLEASE EVENTS`.
use ember_net::{clock, iface, netlink::Netlink, DhcpClient, DhcpConfig};
use std::time::Duration;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mut nl = Netlink::open().unwrap();
    let link = iface::bring_up_and_choose(&mut nl, Some(&a[1]), Duration::from_secs(5)).unwrap();
    let cfg = DhcpConfig {
        hostname: None,
        resolv_conf: Some(a[2].clone()),
        max_lease: a[3].parse().ok().map(Duration::from_secs),
    };
    let mut c = DhcpClient::new(&link, &cfg).unwrap();
    let n: u32 = a[4].parse().unwrap();
    let t0 = clock::monotonic_ms();
    let mut seen = 0;
    loop {
        if let Some(ev) = c.poll().unwrap() {
            println!("{} {:?}", clock::monotonic_ms() - t0, ev);
            seen += 1;
            if seen >= n {
                break;
            }
        }
        let w = c.next_wakeup().min(Duration::from_secs(1));
        clock::wait_readable(c.fd(), w).unwrap();
    }
}
