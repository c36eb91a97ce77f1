//! The one way a sealed overlay reaches `/`, whichever path it came by (the
//! boot server's stream, or a last-known-good slot on the ESP): opened
//! chunk by chunk (ChaCha20-Poly1305, then its size and SHA-256 checked
//! against what the server or the slot record promised) straight into the
//! streaming tar extractor. Nothing is written before its chunk
//! authenticated.

use ember_fs::tar::{Confinement, Extractor, FsSink, Limits};
use ember_proto::sealed::{Expected, Opener};

use crate::Error;

/// Opens the sealed stream that `feed` produces into `/`. `feed` gets the
/// writer to hand each piece of ciphertext to, in order, and returns once
/// the stream ended (or failed).
pub fn open_into_root(
    key: [u8; 32],
    expected: Expected,
    feed: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), ember_proto::Error>) -> Result<(), Error>,
) -> Result<(), Error> {
    let sink = FsSink::open("/", Confinement::InRoot)
        .map_err(|kind| Error::Extract(ember_fs::tar::Error::from(kind)))?;
    let mut extractor = Extractor::new(sink, Limits::default());
    let mut opener = Opener::new(key, expected);
    feed(&mut |piece| opener.write(piece, &mut extractor))?;
    opener.finish(&mut extractor)?;
    Ok(())
}
