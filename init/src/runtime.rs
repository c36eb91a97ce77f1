//! The Kubernetes runtime (rke2, or the test stand-in) as a supervised
//! child, and the wait for the node to become Ready.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rustix::process::Pid;

use crate::network::Network;
use crate::nodeconf::{NodeConf, Probe};
use crate::supervisor::{self, Event, Request, Supervisor};
use crate::{clock, fsutil, json, probe, Error};

/// Environment rke2 expects from a service manager.
const ENV: &[&str] = &[
    "PATH=/var/lib/rancher/rke2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=linux",
];

/// Seconds between readiness probes.
const PROBE_INTERVAL_MS: u64 = 2_000;

pub fn start(sup: &mut Supervisor, conf: &NodeConf, node_name: &str) -> Result<Pid, Error> {
    let argv: Vec<&str> = conf.runtime.iter().map(String::as_str).collect();
    let node_env = format!("NODE_NAME={node_name}");
    let mut env: Vec<&str> = ENV.to_vec();
    env.push(&node_env);
    let pid = sup.spawn(&argv, &env)?;
    log::info!(
        "runtime: started {} (pid {})",
        conf.runtime.join(" "),
        pid.as_raw_nonzero()
    );
    Ok(pid)
}

/// How the wait for readiness ended.
pub enum Readiness {
    Ready,
    /// The runtime exited before the node was Ready.
    Exited(String),
    TimedOut,
    Shutdown(Request),
}

/// Probes until the node is Ready, the runtime exits, the timeout passes or
/// a shutdown is requested, keeping the DHCP lease alive meanwhile.
pub fn wait_ready(
    sup: &mut Supervisor,
    mut net: Option<&mut Network>,
    conf: &NodeConf,
    runtime: Pid,
    node_name: &str,
    timeout_s: u32,
) -> Readiness {
    let deadline = clock::now_ms() + u64::from(timeout_s) * 1000;
    let mut next_probe = clock::now_ms() + PROBE_INTERVAL_MS / 2;
    let mut last_reason = String::new();
    loop {
        let now = clock::now_ms();
        if now >= deadline {
            log::warn!("ready: not Ready after {timeout_s} s (last probe: {last_reason})");
            return Readiness::TimedOut;
        }
        if now >= next_probe {
            let dns: &[[u8; 4]] = net.as_ref().map(|n| n.lease.dns.as_slice()).unwrap_or(&[]);
            match check(dns, conf, node_name) {
                Ok(()) => return Readiness::Ready,
                Err(reason) => {
                    if reason != last_reason {
                        log::info!("ready: not yet: {reason}");
                    }
                    last_reason = reason;
                }
            }
            next_probe = clock::now_ms() + PROBE_INTERVAL_MS;
        }
        let mut wait = next_probe.saturating_sub(clock::now_ms()).max(1);
        let event = match net.as_mut() {
            Some(n) => {
                wait = wait.min(n.next_wakeup_ms().max(1));
                sup.wait_fd(n.dhcp.fd(), wait)
            }
            None => sup.wait(wait),
        };
        match event {
            Event::Exited { pid, name, status } if pid == runtime => {
                return Readiness::Exited(format!("{name} {}", supervisor::describe(status)));
            }
            Event::Exited { name, status, .. } => {
                log::info!("{name} {}", supervisor::describe(status))
            }
            Event::Shutdown(req) => return Readiness::Shutdown(req),
            Event::Readable | Event::Timeout => {
                if let Some(n) = net.as_mut() {
                    n.poll();
                }
            }
        }
    }
}

/// One probe; `Err` says why the node is not Ready yet.
fn check(dns: &[[u8; 4]], conf: &NodeConf, node_name: &str) -> Result<(), String> {
    match conf.probe {
        Probe::Healthz => {
            let (status, _) = probe::http_get(&conf.healthz_url)
                .map_err(|e| format!("{}: {e}", conf.healthz_url))?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{} answered {status}", conf.healthz_url))
            }
        }
        Probe::Api => {
            let (Some(server), Some(ca), Some(token_file)) =
                (&conf.api_server, &conf.api_ca, &conf.api_token_file)
            else {
                return Err(String::from("api probe is not configured"));
            };
            let token = fsutil::read_text(token_file).map_err(|e| format!("{e}"))?;
            let ca_pem = fsutil::read_file(ca).map_err(|e| format!("{e}"))?;
            let cas = ember_net::pem::decode_all(&ca_pem, "CERTIFICATE")
                .map_err(|e| format!("{ca}: {e}"))?;
            let url = format!("{}/api/v1/nodes/{node_name}", server.trim_end_matches('/'));
            let (status, body) = probe::https_get(&cas, dns, &url, token.trim())
                .map_err(|e| format!("{url}: {e}"))?;
            match status {
                200 => {
                    let node =
                        json::parse(&body).ok_or_else(|| format!("{url}: answer is not JSON"))?;
                    if json::node_is_ready(&node) {
                        log::info!("ready: node {node_name} is Ready on {server}");
                        Ok(())
                    } else {
                        Err(format!("node {node_name} exists but is not Ready"))
                    }
                }
                404 => Err(format!("node {node_name} is not registered yet")),
                s => Err(format!("{url} answered {s}")),
            }
        }
    }
}

impl core::fmt::Display for Readiness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Readiness::Ready => f.write_str("Ready"),
            Readiness::Exited(why) => f.write_str(why),
            Readiness::TimedOut => f.write_str("not Ready in time"),
            Readiness::Shutdown(_) => f.write_str("shutdown requested"),
        }
    }
}
