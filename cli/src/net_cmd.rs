//! `ember net` subcommands: the node's own network code, run from a host or
//! a test namespace.

use anyhow::{bail, Context};
use clap::Subcommand;
use ember_net::{clock, iface, netlink::Netlink, DhcpClient, DhcpConfig, Lease, LeaseEvent};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum NetCmd {
    /// Run the node's DHCP client on an interface, applying each lease to the
    /// kernel (address, default route, MTU, resolv.conf) and printing one
    /// line per lease event.
    Dhcp {
        /// Interface to configure (default: the first with carrier).
        #[arg(long)]
        iface: Option<String>,
        /// Host name sent as option 12 (default: "ember-" and the MAC address).
        #[arg(long)]
        hostname: Option<String>,
        /// Where to write DNS servers (the node writes /etc/resolv.conf).
        #[arg(long)]
        resolv_conf: Option<String>,
        /// Cap the server's lease time (to exercise renewal quickly).
        #[arg(long)]
        max_lease_secs: Option<u64>,
        /// Give up if no lease arrives within this time.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Exit after this many lease events (0: keep the lease forever).
        #[arg(long, default_value_t = 1)]
        events: u32,
    },
    /// Fetch a URL over HTTPS with the node's client and print the body.
    Get {
        /// PEM file with the CA certificate(s) the server must chain to.
        #[arg(long)]
        ca: PathBuf,
        /// Client certificate (PEM) for mutual TLS.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Client P-256 private key (PEM, SEC1 or PKCS#8).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Ask this DNS server directly, as the node asks its lease's servers.
        /// Without --dns or --resolv-conf, names resolve as in every host
        /// program: /etc/hosts first, `localhost` to loopback, then DNS.
        #[arg(long)]
        dns: Vec<std::net::Ipv4Addr>,
        /// Ask the nameservers of this resolv.conf directly (the file a
        /// node's lease writes), skipping /etc/hosts.
        #[arg(long, conflicts_with = "dns")]
        resolv_conf: Option<PathBuf>,
        /// Connect and read timeout.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        url: String,
    },
}

pub fn run(cmd: NetCmd) -> anyhow::Result<()> {
    match cmd {
        NetCmd::Dhcp {
            iface,
            hostname,
            resolv_conf,
            max_lease_secs,
            timeout_secs,
            events,
        } => dhcp(
            iface,
            hostname,
            resolv_conf,
            max_lease_secs,
            timeout_secs,
            events,
        ),
        NetCmd::Get {
            ca,
            cert,
            key,
            dns,
            resolv_conf,
            timeout_secs,
            url,
        } => get(ca, cert, key, dns, resolv_conf, timeout_secs, url),
    }
}

fn ip(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn describe(kind: &str, l: &Lease, elapsed_ms: u64) -> String {
    let dns: Vec<String> = l.dns.iter().map(|d| ip(*d)).collect();
    format!(
        "{kind} address={}/{} router={} dns={} domain={} lease_time={} server_id={} mtu={} elapsed_ms={elapsed_ms}",
        ip(l.address),
        l.prefix_len,
        l.router.map(ip).unwrap_or_else(|| "-".into()),
        if dns.is_empty() { "-".into() } else { dns.join(",") },
        l.domain.as_deref().unwrap_or("-"),
        l.lease_time.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
        ip(l.server_id),
        l.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
    )
}

fn dhcp(
    iface_name: Option<String>,
    hostname: Option<String>,
    resolv_conf: Option<String>,
    max_lease_secs: Option<u64>,
    timeout_secs: u64,
    events: u32,
) -> anyhow::Result<()> {
    let mut nl = Netlink::open()?;
    let link = iface::bring_up_and_choose(&mut nl, iface_name.as_deref(), Duration::from_secs(10))?;
    let config = DhcpConfig {
        hostname,
        resolv_conf,
        max_lease: max_lease_secs.map(Duration::from_secs),
    };
    let start = clock::monotonic_ms();
    let mut client = DhcpClient::new(&link, &config)?;
    let mut seen = 0u32;
    let mut stdout = std::io::stdout();
    // The same loop shape as PID 1's: poll the client, sleep on its fd until
    // its next timer.
    loop {
        if let Some(event) = client.poll()? {
            let elapsed = clock::monotonic_ms() - start;
            let line = match &event {
                LeaseEvent::Acquired(l) => describe("acquired", l, elapsed),
                LeaseEvent::Renewed(l) => describe("renewed", l, elapsed),
                LeaseEvent::Lost { address } => {
                    format!("lost address={} elapsed_ms={elapsed}", ip(*address))
                }
            };
            writeln!(stdout, "{line}")?;
            stdout.flush()?;
            seen += 1;
            if events != 0 && seen >= events {
                return Ok(());
            }
        }
        if client.lease().is_none()
            && seen == 0
            && clock::monotonic_ms() - start > timeout_secs * 1000
        {
            bail!("no DHCP lease on {} after {timeout_secs} s", link.name);
        }
        let wait = client.next_wakeup().min(Duration::from_secs(1));
        clock::wait_readable(client.fd(), wait).context("poll")?;
    }
}

fn get(
    ca: PathBuf,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    dns: Vec<std::net::Ipv4Addr>,
    resolv_conf: Option<PathBuf>,
    timeout_secs: u64,
    url: String,
) -> anyhow::Result<()> {
    let ca_pem = std::fs::read(&ca).with_context(|| format!("read {}", ca.display()))?;
    let cas = ember_net::pem::decode_all(&ca_pem, "CERTIFICATE")?;
    if cas.is_empty() {
        bail!("{}: no CERTIFICATE block", ca.display());
    }
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some(ember_net::tls::ClientIdentity::from_pem(
            &std::fs::read(&c).with_context(|| format!("read {}", c.display()))?,
            &std::fs::read(&k).with_context(|| format!("read {}", k.display()))?,
        )?),
        _ => None,
    };
    let servers: Vec<[u8; 4]> = match &resolv_conf {
        Some(path) => resolv_conf_servers(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        ),
        None => dns.iter().map(|a| a.octets()).collect(),
    };
    let resolver = if servers.is_empty() && resolv_conf.is_none() {
        ember_net::dns::Resolver::System
    } else {
        ember_net::dns::Resolver::Servers(&servers)
    };
    let mut client = ember_net::https::Client::with_resolver(&cas, resolver);
    client.identity = identity.as_ref();
    client.connect_timeout = Duration::from_secs(timeout_secs);
    client.read_timeout = Duration::from_secs(timeout_secs);
    let mut out = std::io::stdout().lock();
    client.get(&url, &mut |chunk| {
        out.write_all(chunk)
            .map_err(|_| ember_net::ErrorKind::Sink.into())
    })?;
    out.flush()?;
    Ok(())
}

/// The IPv4 `nameserver` lines of a resolv.conf.
fn resolv_conf_servers(text: &str) -> Vec<[u8; 4]> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::Ipv4Addr>().ok())
        .map(|a| a.octets())
        .collect()
}
