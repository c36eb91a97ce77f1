//! The highest manifest epoch this node has booted to Ready, kept on the
//! ESP (`ember/epoch`): a cold start refuses a slot whose signed manifest
//! is older, so an attacker with the disk cannot bring back a revoked
//! overlay by pointing the loader at an older slot.
//!
//! The file is on the ESP, so an attacker who can write the disk can also
//! delete it: this stops replays of old slots by entry edits, not a full
//! disk rewrite. A TPM NV counter would (README, "Overlay format").

use alloc::format;

use super::esp::Mounted;
use super::write::write_atomic;
use crate::{fsutil, Error};

const FILE: &str = "ember/epoch";

/// The blessed epoch: 0 when none was recorded yet. An unreadable record
/// fails closed.
pub fn read(esp: &Mounted) -> Result<u64, Error> {
    match fsutil::read_file_raw(&esp.path(FILE)) {
        Ok(bytes) => parse(&bytes).ok_or(Error::Lkg("the blessed-epoch record is unreadable")),
        Err(rustix::io::Errno::NOENT) => Ok(0),
        Err(errno) => Err(Error::Read {
            path: esp.path(FILE),
            errno,
        }),
    }
}

/// Raises the record to `epoch` (never lowers it).
pub fn raise(esp: &Mounted, epoch: u64) -> Result<(), Error> {
    if read(esp).unwrap_or(0) >= epoch {
        return Ok(());
    }
    write_atomic(&esp.path(FILE), format!("{epoch}\n").as_bytes())
}

/// Refuses a manifest older than the blessed epoch.
pub fn check(epoch: u64, blessed: u64) -> Result<(), ember_proto::Error> {
    if epoch < blessed {
        return Err(ember_proto::Error::ManifestRollback { epoch, blessed });
    }
    Ok(())
}

fn parse(bytes: &[u8]) -> Option<u64> {
    let text = core::str::from_utf8(bytes).ok()?;
    text.trim_end_matches('\n').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_epoch_is_refused_an_equal_or_newer_one_is_not() {
        assert_eq!(
            check(4, 5),
            Err(ember_proto::Error::ManifestRollback {
                epoch: 4,
                blessed: 5
            })
        );
        assert_eq!(check(5, 5), Ok(()));
        assert_eq!(check(6, 5), Ok(()));
        assert_eq!(check(1, 0), Ok(()));
    }

    #[test]
    fn record_parses_strictly() {
        assert_eq!(parse(b"17\n"), Some(17));
        assert_eq!(parse(b"17"), Some(17));
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"-1\n"), None);
        assert_eq!(parse(b"1 7\n"), None);
        assert_eq!(parse(&[0xff, 0x31]), None);
    }
}
