//! The node's overlay path without the network or the disk, for choosing
//! an overlay compression by measurement (book, "Sealed overlay and manifest formats"): the
//! plaintext is sealed under a throwaway key, then its ciphertext goes in
//! 16 KiB pieces through `Opener` (ChaCha20-Poly1305) alone, and through
//! `Opener` → `Extractor::authenticated` (decode + tar) into a sink that
//! drops the files. Prints the process CPU of each. Run it under TCG as
//! the node would: `qemu-x86_64 -cpu qemu64
//! $CARGO_TARGET_DIR/release/overlay-pipeline STORED-PLAINTEXT lz4|gzip|none`.

use ember_fs::tar::{Entry, ErrorKind, Extractor, Limits, Sink};
use ember_proto::manifest::{key_commitment, Compression, Envelope, Manifest, Target};
use ember_proto::sealed::{self, Opener, Sealer};
use rustix::time::{clock_gettime, ClockId};

/// A tar sink that keeps nothing: `write` is the disk's cost, not measured here.
struct Discard;

impl Sink for Discard {
    fn begin(&mut self, _: &Entry<'_>) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn data(&mut self, _: &[u8]) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn end(&mut self, _: &Entry<'_>) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn skipped(&mut self, _: &[u8], _: u8) {}
    fn finish(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn abort(&mut self) {}
}

/// A sealed-stream sink that keeps nothing: the AEAD alone.
struct Nothing;

impl sealed::Sink for Nothing {
    type Error = ember_proto::Error;
    fn write(&mut self, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn cpu_ms() -> f64 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

fn open_into<S: sealed::Sink>(envelope: &Envelope, blob: &[u8], sink: &mut S) {
    let mut opener = Opener::for_manifest(envelope);
    for piece in blob.chunks(16 * 1024) {
        opener.write(piece, sink).expect("open");
    }
    opener.finish(sink).expect("finish");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: overlay-pipeline STORED-PLAINTEXT lz4|gzip|none");
        std::process::exit(2);
    };
    let plain = std::fs::read(path).expect("read the plaintext");
    let compression = Compression::from_name(name).expect("lz4, gzip or none");
    let key = [7u8; 32];
    let blob = Sealer::seal_all(&key, sealed::DEFAULT_CHUNK, &plain).expect("seal");
    let manifest = Manifest {
        format: ember_proto::manifest::MANIFEST_FORMAT,
        version_id: 1,
        epoch: 1,
        target: Target::Group("bench".into()),
        blob_sha256: [0; 32],
        blob_size: blob.len() as u64,
        plain_size: plain.len() as u64,
        chunk_size: sealed::DEFAULT_CHUNK,
        compression,
        key_commitment: key_commitment(&key),
    };
    let envelope = Envelope::new(manifest, key).expect("envelope");
    let t0 = cpu_ms();
    open_into(&envelope, &blob, &mut Nothing);
    let t1 = cpu_ms();
    let mut extractor = Extractor::authenticated(Discard, Limits::default(), compression.into());
    open_into(&envelope, &blob, &mut extractor);
    let t2 = cpu_ms();
    println!(
        "{name}: sealed_bytes={} open_ms={:.0} open_decode_tar_ms={:.0}",
        blob.len(),
        t1 - t0,
        t2 - t1
    );
}
