//! The `runtime` and `ready` phases: the runtime started as a supervised
//! child ([`runtime`]), then the wait until the Kubernetes API reports the
//! Node Ready (or kubelet's healthz answers), through [`probe`], with
//! Node readiness read by the parser the runtime shares
//! ([`ember_nodeapi::nodestatus`]).

pub mod probe;
pub mod runtime;

use alloc::format;
use alloc::string::String;

use ember_nodeapi::nodestatus::{node_status, Ready};
use rustix::process::Pid;

use crate::network::Network;
use crate::nodeconf::{NodeConf, Probe};
use crate::supervisor::{self, Event, Supervisor};
use crate::{clock, fsutil, power, Error, ErrorKind};

/// Milliseconds between readiness probes.
const PROBE_INTERVAL_MS: u64 = 2_000;

/// What the runtime is, and for how long it may take to become Ready.
pub struct Watch<'a> {
    pub conf: &'a NodeConf,
    pub runtime: Pid,
    pub node_name: &'a str,
    pub timeout_s: u32,
}

/// Probes until the node is Ready, the runtime exits, or the timeout
/// passes, keeping the DHCP lease alive meanwhile. A shutdown request
/// (SIGTERM/SIGINT/SIGUSR2 to PID 1) is honoured at once.
pub fn wait(
    sup: &mut Supervisor,
    mut net: Option<&mut Network>,
    w: &Watch<'_>,
) -> Result<(), Error> {
    let deadline = clock::now_ms() + u64::from(w.timeout_s) * 1000;
    let mut next_probe = clock::now_ms() + PROBE_INTERVAL_MS / 2;
    let mut last_reason = String::new();
    loop {
        let now = clock::now_ms();
        if now >= deadline {
            crate::warn!(
                "ready: not Ready after {} s (last probe: {last_reason})",
                w.timeout_s
            );
            return Err(Error::new(ErrorKind::Runtime(
                format!("not Ready within {} s", w.timeout_s).into(),
            )));
        }
        if now >= next_probe {
            let dns: &[[u8; 4]] = net.as_ref().map(|n| n.lease.dns.as_slice()).unwrap_or(&[]);
            match check(dns, w.conf, w.node_name) {
                Ok(()) => return Ok(()),
                Err(reason) => {
                    if reason != last_reason {
                        crate::info!("ready: not yet: {reason}");
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
            Event::Exited { pid, name, status } if pid == w.runtime => {
                return Err(Error::new(ErrorKind::Runtime(
                    format!("{name} {}", supervisor::describe(status)).into(),
                )));
            }
            Event::Exited { name, status, .. } => {
                crate::info!("{name} {}", supervisor::describe(status))
            }
            Event::Shutdown(req) => power::shutdown(sup, req),
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
                200 => match node_status(&body).map_err(|e| format!("{url}: {e}"))?.ready {
                    Ready::True => {
                        crate::info!("ready: node {node_name} is Ready on {server}");
                        Ok(())
                    }
                    _ => Err(format!("node {node_name} exists but is not Ready")),
                },
                404 => Err(format!("node {node_name} is not registered yet")),
                s => Err(format!("{url} answered {s}")),
            }
        }
    }
}
