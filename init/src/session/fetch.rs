//! Step 3: the granted overlay. Its signed manifest is verified with the
//! initrd's key and its data key unwrapped and checked against the
//! manifest's commitment before one byte is fetched; the blob is then
//! fetched by digest (plain HTTP by default, `ember.overlay_transport=https`
//! for TLS) through [`crate::overlay::open_into_root`] into `/`. Nothing
//! of it is kept: the blob is content-addressed, so last-known-good
//! fetches it again by its signed digest after Ready, when it writes the
//! slot (as it fetches the UKI), instead of the boot copying 20 MB into
//! tmpfs on the critical path for a slot most boots never write.

use ember_net::https::Client;
use ember_proto::client;
use ember_proto::manifest::{BootImage, Envelope, SignedBootImage, SignedManifest, Target};
use ember_proto::net::NetTransport;

use super::Session;
use crate::cmdline::OverlayTransport;
use crate::overlay::{self, Stages};
use crate::{Error, ErrorKind};
use ember_fs::hex::Hex;
use ember_fs::quoted::Quoted;

/// What the network gave this boot: the verified envelope, the signed
/// manifest as the server sent it, and the signed record of the UKI this
/// boot came from (last-known-good keeps all three).
pub struct Fetched {
    pub envelope: Envelope,
    pub signed: SignedManifest,
    pub boot_image: Option<BootRecord>,
}

/// The boot image record as the server sent it, and its verification with
/// the initrd's key, done before the overlay was extracted: trust files
/// are read once, before anything the overlay brings could replace them,
/// so last-known-good (after the runtime ran) reads none again.
pub struct BootRecord {
    pub signed: SignedBootImage,
    pub verified: Result<BootImage, ember_proto::Error>,
}

impl Session {
    pub fn fetch_overlay(&self, transport: OverlayTransport) -> Result<Fetched, Error> {
        let trust = overlay::trusted_key()?;
        let envelope = self.cred.open_grant(&trust)?;
        let grant = self
            .cred
            .overlay
            .as_ref()
            .ok_or(Error::new(ErrorKind::Missing("overlay grant")))?;
        let signed = grant.manifest.clone();
        let boot_image = grant.boot_image.clone().map(|signed| BootRecord {
            verified: trust.verify_boot_image(&signed, &grant.manifest),
            signed,
        });
        let m = &envelope.manifest;
        self.overlay_version.set(Some(m.version_id));
        let (kind, name) = match &m.target {
            Target::Node(name) => ("node", name),
            Target::Group(name) => ("group", name),
        };
        crate::info!(
            "overlay: manifest verified: version {} epoch {} for {kind} {}, blob {} ({} bytes, {})",
            m.version_id,
            m.epoch,
            Quoted(name),
            Hex(&m.blob_sha256),
            m.blob_size,
            m.compression.name()
        );
        let client = self.client();
        let mut http = self.static_transport(&client, transport, "overlay");
        let mut stages = Stages::default();
        overlay::open_into_root(&envelope, &mut stages, |open| {
            client::fetch_blob(&mut http, &self.server, &envelope, open).map_err(Error::from)
        })?;
        stages.log();
        crate::info!(
            "overlay: version {} ({} bytes) extracted into /",
            m.version_id,
            m.plain_size
        );
        Ok(Fetched {
            envelope,
            signed,
            boot_image,
        })
    }
}

impl Session {
    /// The transport for content-addressed files (the sealed blob, the
    /// boot image), whose integrity comes from a signed digest: plain HTTP
    /// when the server has a listener for it and `transport` allows.
    fn static_transport<'c, 'a>(
        &'c self,
        client: &'c Client<'a>,
        transport: OverlayTransport,
        what: &str,
    ) -> NetTransport<'c, 'a> {
        let port = self.cred.overlay.as_ref().and_then(|g| g.http_port);
        match (transport, port) {
            (OverlayTransport::Http, Some(port)) => {
                crate::info!("{what}: fetching over plain HTTP, port {port}");
                NetTransport::plain(client, &self.server, port)
            }
            (OverlayTransport::Http, None) => {
                crate::info!("{what}: the server has no plain-HTTP listener; fetching over HTTPS");
                NetTransport::new(client, &self.server)
            }
            (OverlayTransport::Https, _) => NetTransport::new(client, &self.server),
        }
    }

    /// Streams the sealed overlay blob `envelope` names, as the server
    /// serves it, into `each` (last-known-good; the caller checks the
    /// signed digest and size).
    pub fn fetch_sealed_blob(
        &self,
        envelope: &Envelope,
        each: &mut dyn FnMut(&[u8]) -> Result<(), ember_proto::Error>,
    ) -> Result<(), Error> {
        let client = self.client();
        let mut http = self.static_transport(&client, OverlayTransport::Http, "lkg");
        client::fetch_blob(&mut http, &self.server, envelope, each).map_err(Error::from)
    }

    /// Streams the boot artifact named `sha256` from the server that
    /// booted this node into `each` (the caller checks the digest).
    pub fn fetch_boot_image(
        &self,
        sha256: &[u8; 32],
        each: &mut dyn FnMut(&[u8]) -> Result<(), ember_proto::Error>,
    ) -> Result<(), Error> {
        let client = self.client();
        let mut http = self.static_transport(&client, OverlayTransport::Http, "lkg");
        let url = client::boot_path(&self.server, sha256);
        client::fetch_static(&mut http, "boot image", &url, each).map_err(Error::from)
    }
}
