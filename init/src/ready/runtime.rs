//! The Kubernetes runtime (rke2, or the test stand-in) as a supervised
//! child, the node's name it is given, and the optional debug console.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rustix::process::Pid;

use crate::cmdline::Config;
use crate::network::Network;
use crate::nodeconf::NodeConf;
use crate::supervisor::Supervisor;
use crate::Error;

/// Environment rke2 expects from a service manager.
const ENV: &[&str] = &[
    "PATH=/var/lib/rancher/rke2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=linux",
];

pub fn start(sup: &mut Supervisor, conf: &NodeConf, node_name: &str) -> Result<Pid, Error> {
    let argv: Vec<&str> = conf.runtime.iter().map(String::as_str).collect();
    let node_env = format!("NODE_NAME={node_name}");
    let mut env: Vec<&str> = ENV.to_vec();
    env.push(&node_env);
    let pid = sup.spawn(&argv, &env)?;
    crate::info!(
        "runtime: started {} (pid {})",
        conf.runtime.join(" "),
        pid.as_raw_nonzero()
    );
    Ok(pid)
}

/// The Kubernetes node name: node.conf's, else `ember.hostname=`, else the
/// lease's host name, else one made from the MAC address.
pub fn node_name(conf: &NodeConf, cfg: &Config, net: Option<&Network>) -> String {
    if let Some(n) = conf.node_name.as_ref().or(cfg.hostname.as_ref()) {
        return n.clone();
    }
    match net {
        Some(net) => match (&net.lease.hostname, net.dhcp.link().mac) {
            (Some(h), _) => h.clone(),
            (None, Some(mac)) => ember_net::dhcp::hostname_from_mac(mac),
            (None, None) => String::from("ember-node"),
        },
        None => String::from("ember-node"),
    }
}

/// node.conf's `debug_console`: a program (a shell) on the console. Without
/// it no shell or getty runs. A failure to start it does not fail the boot.
pub fn start_debug_console(sup: &mut Supervisor, conf: &NodeConf) {
    let Some(argv) = &conf.debug_console else {
        return;
    };
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env = [
        "TERM=linux",
        "HOME=/root",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ];
    match sup.spawn(&argv, &env) {
        Ok(_) => crate::warn!(
            "debug console: {} runs on the console (node.conf debug_console)",
            argv.join(" ")
        ),
        Err(e) => crate::warn!("debug console: {e}"),
    }
}
