//! Whose slot this is. A slot's manifest and boot image record are signed
//! by the boot server, but a signed pair alone says nothing about which
//! node it was made for: someone with the disk and a data key they know
//! (another group's overlay, or an old one of this group whose secrets
//! were rotated) can seal that key on this node's own TPM beside a record
//! their own node was given. The server signs each boot image record for
//! one attested node (its EK identity, [`BootImage::ek`]); a cold start
//! restores a slot only when that names this TPM's EK.

use ember_fs::hex::hex;
use ember_proto::manifest::BootImage;
use ember_proto::tpm::TpmAttestor;

use crate::tpm::NodeTpm;
use crate::{Error, ErrorKind};

/// This TPM's EK identity, as the boot server computes it (the EK is
/// recreated from its template and flushed again).
pub fn this_ek(tpm: &mut NodeTpm) -> Result<[u8; 32], Error> {
    let mut attestor = TpmAttestor::new(tpm);
    let ek = attestor.ek_hash();
    let closed = attestor.close();
    let ek = ek?;
    closed?;
    Ok(ek)
}

/// Refuses a slot whose signed boot image record was made for another EK.
pub fn check(image: &BootImage, this_ek: &[u8; 32]) -> Result<(), Error> {
    if ember_proto::keys::ct_eq(&image.ek, this_ek) {
        return Ok(());
    }
    crate::error!(
        "lkg: the slot's signed boot image record was made for the node with EK {}, this TPM's EK is {}: not restored (a slot copied or built from another node's)",
        hex(&image.ek[..8]),
        hex(&this_ek[..8])
    );
    Err(Error::new(ErrorKind::Lkg(
        "the slot was made for another node (its boot image record names another EK)",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(ek: [u8; 32]) -> BootImage {
        BootImage {
            format: ember_proto::manifest::BOOT_IMAGE_FORMAT,
            manifest_sha256: [1; 32],
            sha256: [2; 32],
            size: 3,
            pcr11: [4; 32],
            pcr4: alloc::vec![[5; 32]],
            ek,
        }
    }

    #[test]
    fn only_a_record_naming_this_tpms_ek_is_restored() {
        assert!(check(&image([7; 32]), &[7; 32]).is_ok());
        let mut other = [7; 32];
        other[31] ^= 1;
        let refused = check(&image(other), &[7; 32]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "last-known-good: the slot was made for another node (its boot image record names another EK)"
        );
    }
}
