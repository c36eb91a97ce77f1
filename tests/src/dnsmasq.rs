//! dnsmasq (Debian's) as the DHCP (and optionally DNS) server inside a test
//! namespace, stopped by PID on drop.

use crate::netns::NetnsPair;
use crate::process::{wait_until, ChildGuard};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub struct Dnsmasq {
    _child: ChildGuard,
    pub log: PathBuf,
}

pub struct DnsmasqConfig<'a> {
    /// e.g. ("10.77.0.50", "10.77.0.99")
    pub range: (&'a str, &'a str),
    /// dnsmasq's own form: "2m", "1h" (its minimum is 2 minutes).
    pub lease: &'a str,
    pub dns_server: &'a str,
    pub domain: Option<&'a str>,
    pub mtu: Option<u16>,
    /// Serve DNS on port 53 with these "name,address" host records.
    pub host_records: &'a [&'a str],
}

impl Dnsmasq {
    pub fn start(ns: &NetnsPair, dir: &Path, tag: &str, cfg: &DnsmasqConfig<'_>) -> Self {
        let log = dir.join(format!("dnsmasq-{tag}.log"));
        let leases = dir.join(format!("dnsmasq-{tag}.leases"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = ns.in_server("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            // dnsmasq otherwise pings each new address for ~3 s before offering it.
            "--no-ping",
            "--dhcp-authoritative",
            "--bind-interfaces",
            "--log-dhcp",
            "--pid-file=",
            // Keep root so it can write the log and leases in the scratch dir.
            "--user=root",
        ]);
        cmd.arg(format!("--interface={}", ns.server_if));
        cmd.arg(format!(
            "--dhcp-range={},{},255.255.255.0,{}",
            cfg.range.0, cfg.range.1, cfg.lease
        ));
        cmd.arg(format!(
            "--dhcp-option=option:dns-server,{}",
            cfg.dns_server
        ));
        if let Some(d) = cfg.domain {
            cmd.arg(format!("--dhcp-option=option:domain-name,{d}"));
        }
        if let Some(m) = cfg.mtu {
            cmd.arg(format!("--dhcp-option=option:mtu,{m}"));
        }
        if cfg.host_records.is_empty() {
            cmd.arg("--port=0");
        } else {
            cmd.arg("--log-queries");
            for r in cfg.host_records {
                cmd.arg(format!("--host-record={r}"));
            }
        }
        cmd.arg(format!("--dhcp-leasefile={}", leases.display()));
        cmd.arg(format!("--log-facility={}", log.display()));
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = ChildGuard::spawn("dnsmasq", &mut cmd).expect("spawn dnsmasq");
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .map(|l| l.contains("DHCP, IP range"))
                .unwrap_or(false)
        });
        assert!(
            ready,
            "dnsmasq did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Dnsmasq { _child: child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many DHCPACKs dnsmasq has sent.
    pub fn acks(&self) -> usize {
        self.log_text().matches("DHCPACK(").count()
    }
}
