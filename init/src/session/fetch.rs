//! Step 3: the sealed overlay, streamed from the boot server through
//! [`crate::overlay::open_into_root`] into `/`, its ciphertext kept, as
//! downloaded, for last-known-good.

use alloc::string::String;

use ember_proto::client;
use ember_proto::msg::OverlayMeta;
use ember_proto::net::NetTransport;
use ember_proto::sealed::Expected;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};

use super::Session;
use crate::{fsutil, overlay, Error};
use ember_fs::hex::hex;

/// Where the sealed overlay is kept, as downloaded, until it goes to the ESP.
pub const SEALED_COPY: &str = "/run/ember/overlay.sealed";

/// What the network gave this boot: the overlay and its stream key.
pub struct Fetched {
    pub meta: OverlayMeta,
    pub key: [u8; 32],
}

impl Session {
    pub fn fetch_overlay(&self) -> Result<Fetched, Error> {
        let meta = client::assigned_overlay(&self.cred)?.clone();
        let key = self.cred.overlay_key(&meta);
        let client = self.client();
        let mut http = NetTransport::new(&client, &self.server);
        let mut copy = KeptCopy::create()?;
        overlay::open_into_root(key, Expected::of(&meta), |open| {
            client::fetch_sealed(&mut http, &self.server, &self.cred, &mut |piece| {
                copy.write(piece);
                open(piece)
            })
            .map_err(Error::Attest)
        })?;
        log::info!(
            "overlay: version {} ({} bytes, sha256 {}) extracted into /",
            meta.version_id,
            meta.size,
            hex(&meta.sha256)
        );
        Ok(Fetched { meta, key })
    }
}

/// The ciphertext copy for last-known-good. A failed write only costs
/// last-known-good this overlay: it is logged once and the boot goes on.
struct KeptCopy {
    fd: Option<OwnedFd>,
}

impl KeptCopy {
    fn create() -> Result<KeptCopy, Error> {
        let _ = rustix::fs::mkdir("/run/ember", Mode::from_raw_mode(0o700));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
        let fd =
            rustix::fs::open(SEALED_COPY, flags, Mode::from_raw_mode(0o600)).map_err(|errno| {
                Error::Write {
                    path: String::from(SEALED_COPY),
                    errno,
                }
            })?;
        Ok(KeptCopy { fd: Some(fd) })
    }

    fn write(&mut self, piece: &[u8]) {
        let Some(fd) = &self.fd else { return };
        if let Err(e) = fsutil::write_all(fd, piece) {
            log::warn!("overlay: keeping a copy for last-known-good failed: {e}");
            self.fd = None;
        }
    }
}
