//! The node's DHCP client (`ember net dhcp`, the same code PID 1 runs)
//! against Debian's dnsmasq across a veth pair between two namespaces the
//! test creates. Asserts what the kernel ends up with.

use ember_tests::dnsmasq::{Dnsmasq, DnsmasqConfig};
use ember_tests::netns::NetnsPair;
use ember_tests::process::wait_until;
use ember_tests::process::ChildGuard;
use ember_tests::{ember_bin, ScratchDir};
use std::process::Stdio;
use std::time::Duration;

fn config<'a>(range: (&'a str, &'a str)) -> DnsmasqConfig<'a> {
    DnsmasqConfig {
        range,
        lease: "2m",
        dns_server: "10.77.0.1",
        domain: Some("ember.test"),
        mtu: Some(1400),
        host_records: &[],
    }
}

/// A running `ember net dhcp` whose event lines go to a file the test reads.
struct Client {
    _child: ChildGuard,
    out: std::path::PathBuf,
    seen: std::cell::Cell<usize>,
}

impl Client {
    fn start(ns: &NetnsPair, dir: &std::path::Path, extra: &[&str]) -> Self {
        let out = dir.join("events.txt");
        let resolv = dir.join("resolv.conf");
        let mut cmd = ns.in_client(&ember_bin());
        cmd.args(["net", "dhcp", "--iface", ns.client_if, "--resolv-conf"])
            .arg(&resolv)
            .args(extra)
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()));
        let child = ChildGuard::spawn("ember net dhcp", &mut cmd).expect("spawn ember");
        Client {
            _child: child,
            out,
            seen: std::cell::Cell::new(0),
        }
    }

    /// The next event line, waiting up to `timeout`.
    fn next(&self, timeout: Duration) -> String {
        let mut line = None;
        wait_until(timeout, || {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let complete: Vec<&str> = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .collect();
            if let Some(l) = complete.get(self.seen.get()) {
                line = Some(l.trim_end().to_string());
                true
            } else {
                false
            }
        });
        self.seen.set(self.seen.get() + 1);
        line.unwrap_or_else(|| panic!("no lease event within {timeout:?}"))
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing in {line:?}"))
}

fn host_in_range(addr_with_len: &str, lo: u8, hi: u8) -> bool {
    let addr = addr_with_len.split('/').next().unwrap();
    let last: u8 = addr.rsplit('.').next().unwrap().parse().unwrap();
    addr.starts_with("10.77.0.") && (lo..=hi).contains(&last)
}

#[test]
fn lease_configures_address_route_mtu_and_resolv_conf() {
    let dir = ScratchDir::new("net-dhcp");
    let ns = NetnsPair::new("dhcp", "10.77.0");
    let server = Dnsmasq::start(&ns, dir.path(), "a", &config(("10.77.0.50", "10.77.0.99")));
    let resolv = dir.path().join("resolv.conf");

    let client = Client::start(&ns, dir.path(), &["--events", "1"]);
    let line = client.next(Duration::from_secs(20));
    assert!(line.starts_with("acquired "), "{line}");
    let addr = field(&line, "address");
    assert!(host_in_range(addr, 50, 99), "{line}");
    assert_eq!(field(&line, "router"), "10.77.0.1");
    assert_eq!(field(&line, "server_id"), "10.77.0.1");
    assert_eq!(field(&line, "lease_time"), "120");
    assert_eq!(field(&line, "domain"), "ember.test");

    assert_eq!(ns.client_addresses(), [addr.to_string()]);
    let routes = ns.ip_client(&["-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.77.0.1 dev veth-c"),
        "{routes}"
    );
    let link = ns.ip_client(&["link", "show", "veth-c"]);
    assert!(link.contains("mtu 1400") && link.contains("UP"), "{link}");
    let conf = std::fs::read_to_string(&resolv).unwrap();
    assert!(
        conf.contains("search ember.test\n") && conf.contains("nameserver 10.77.0.1\n"),
        "{conf}"
    );

    // The server saw our host name, derived from the MAC.
    assert!(
        server.log_text().contains("client provides name: ember-"),
        "{}",
        server.log_text()
    );
}

#[test]
fn lease_is_renewed_with_the_server_before_it_runs_out() {
    let dir = ScratchDir::new("net-renew");
    let ns = NetnsPair::new("renew", "10.77.0");
    let server = Dnsmasq::start(&ns, dir.path(), "a", &config(("10.77.0.50", "10.77.0.99")));
    // dnsmasq's minimum lease is 2 minutes: cap it at 4 s on the client so
    // T1 (renew) comes after 2 s.
    let client = Client::start(&ns, dir.path(), &["--max-lease-secs", "4", "--events", "0"]);
    let first = client.next(Duration::from_secs(20));
    assert!(first.starts_with("acquired "), "{first}");
    let addr = field(&first, "address").to_string();
    for _ in 0..2 {
        let line = client.next(Duration::from_secs(10));
        assert!(line.starts_with("renewed "), "{line}");
        assert_eq!(field(&line, "address"), addr);
    }
    assert!(server.acks() >= 3, "{}", server.log_text());
    assert!(
        server.log_text().contains("DHCPREQUEST"),
        "renewal went to the server"
    );
    assert_eq!(ns.client_addresses(), [addr]);
}

#[test]
fn server_nak_after_range_change_moves_the_node_to_a_new_address() {
    let dir = ScratchDir::new("net-nak");
    let ns = NetnsPair::new("nak", "10.77.0");
    let first_server = Dnsmasq::start(&ns, dir.path(), "a", &config(("10.77.0.50", "10.77.0.99")));
    let client = Client::start(&ns, dir.path(), &["--max-lease-secs", "6", "--events", "0"]);
    let first = client.next(Duration::from_secs(20));
    assert!(first.starts_with("acquired "), "{first}");
    let old = field(&first, "address").to_string();
    assert!(host_in_range(&old, 50, 99));

    // The server comes back with another range: the renewal of the old
    // address is NAKed, the client drops it and discovers again.
    drop(first_server);
    let second_server = Dnsmasq::start(
        &ns,
        dir.path(),
        "b",
        &config(("10.77.0.150", "10.77.0.199")),
    );
    let lost = client.next(Duration::from_secs(15));
    assert_eq!(lost.split_whitespace().next(), Some("lost"), "{lost}");
    assert_eq!(field(&lost, "address"), old.split('/').next().unwrap());
    let again = client.next(Duration::from_secs(15));
    assert!(again.starts_with("acquired "), "{again}");
    let new = field(&again, "address").to_string();
    assert!(host_in_range(&new, 150, 199), "{again}");
    assert!(
        second_server.log_text().contains("DHCPNAK"),
        "{}",
        second_server.log_text()
    );
    assert_eq!(
        ns.client_addresses(),
        [new],
        "old address removed from the kernel"
    );
}

#[test]
fn lease_that_runs_out_without_a_server_is_removed_from_the_kernel() {
    let dir = ScratchDir::new("net-expire");
    let ns = NetnsPair::new("expire", "10.77.0");
    let server = Dnsmasq::start(&ns, dir.path(), "a", &config(("10.77.0.50", "10.77.0.99")));
    let client = Client::start(&ns, dir.path(), &["--max-lease-secs", "4", "--events", "0"]);
    let first = client.next(Duration::from_secs(20));
    assert!(first.starts_with("acquired "), "{first}");
    let addr = field(&first, "address").to_string();
    assert_eq!(ns.client_addresses(), std::slice::from_ref(&addr));

    // No server to renew or rebind with: at expiry the address must go, so
    // the node never keeps using an address that may be handed to another.
    drop(server);
    let lost = client.next(Duration::from_secs(15));
    assert_eq!(lost.split_whitespace().next(), Some("lost"), "{lost}");
    assert_eq!(field(&lost, "address"), addr.split('/').next().unwrap());
    assert!(ns.client_addresses().is_empty(), "address still configured");
    let routes = ns.ip_client(&["-4", "route", "show", "default"]);
    assert!(
        routes.trim().is_empty(),
        "default route left behind: {routes}"
    );
}
