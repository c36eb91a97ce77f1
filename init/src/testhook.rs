//! `ember.test=`: the two stops the QEMU tests drive from the kernel
//! command line (they boot the release /init, so these stay in it; each is
//! a power-off, never a way around a check).
//!
//! - `poweroff`: after the skeleton's phases (rootfs .. inventory).
//! - `fetch`: after DHCP, one verified HTTPS GET of `ember.test_url` with
//!   the bundled CA; its length and SHA-256 are logged.

use alloc::string::String;

use crate::cmdline::{Config, TestAction};
use crate::network::{self, Network};
use crate::phase::{phase, Failure};
use crate::supervisor::{Request, Supervisor};
use crate::{power, Error, ErrorKind};

pub fn after_inventory(sup: &mut Supervisor, cfg: &Config) {
    if cfg.test == Some(TestAction::Poweroff) {
        crate::info!("ember.test=poweroff: skeleton checks done");
        power::shutdown(sup, Request::Poweroff);
    }
}

pub fn after_dhcp(
    sup: &mut Supervisor,
    cfg: &Config,
    net: Option<&Network>,
) -> Result<(), Failure> {
    if cfg.test != Some(TestAction::Fetch) {
        return Ok(());
    }
    phase("test-fetch", || {
        fetch(cfg, net.ok_or(Error::new(ErrorKind::Missing("network")))?)
    })?;
    power::shutdown(sup, Request::Poweroff)
}

fn fetch(cfg: &Config, net: &Network) -> Result<(), Error> {
    use sha2::Digest;
    let url = cfg.test_url.as_deref().ok_or_else(|| {
        Error::new(ErrorKind::Cmdline(
            String::from("ember.test=fetch needs ember.test_url").into(),
        ))
    })?;
    let cas = network::https_cas()?;
    let client = ember_net::https::Client::new(&cas, &net.lease.dns);
    let mut hasher = sha2::Sha256::new();
    let response = client.get(url, &mut |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    crate::info!(
        "test-fetch: {url} status {} body {} bytes sha256 {}",
        response.status,
        response.body_len,
        ember_fs::hex::hex(&hasher.finalize())
    );
    Ok(())
}
