//! The one way a sealed overlay reaches `/`, whichever path it came by (the
//! blob fetched by digest, or a last-known-good slot on the ESP): an
//! [`Envelope`] (a manifest whose signature verified with the initrd's
//! `manifest.pub`, and the data key it commits to) opens the blob chunk by
//! chunk (ChaCha20-Poly1305) straight into the streaming tar extractor, in
//! one pass: no SHA-256 or CRC over bytes the AEAD already authenticated.
//! Nothing is written before its chunk authenticated.
//!
//! Each stage's CPU time is counted, so the boot log says where the
//! overlay phase went (`metrics: overlay_receive_ms=... ...`):
//!
//! | stage | what |
//! |---|---|
//! | `receive` | everything before a piece reaches the opener: socket reads and TLS (network), or file reads (LKG) |
//! | `open` | ChaCha20-Poly1305 of the sealed chunks |
//! | `unpack` | decompression (gzip inflate or LZ4 blocks, as the manifest says), tar parsing |
//! | `write` | creating the files and writing their data |

use core::cell::Cell;

use ember_fs::tar::{self, Confinement, Entry, ErrorKind, Extractor, FsSink, Limits, Protection};
use ember_proto::manifest::{Envelope, PublicKey, PUBLIC_KEY_PATH};
use ember_proto::sealed::Opener;
use rustix::time::{clock_gettime, ClockId};

use crate::{fsutil, Error};

/// The manifest key the initrd carries: every overlay, from the network or
/// from last-known-good, must have a manifest it signed.
pub fn trusted_key() -> Result<PublicKey, Error> {
    let pem = fsutil::read_file_raw(PUBLIC_KEY_PATH).map_err(|e| {
        crate::error!("overlay: {PUBLIC_KEY_PATH}: {e}; build the initrd with --file STATE/manifest.pub:{PUBLIC_KEY_PATH}");
        Error::new(crate::ErrorKind::Missing("manifest public key (/etc/ember/manifest.pub) in the initrd"))
    })?;
    PublicKey::from_pem(&pem).map_err(Error::from)
}

/// CPU nanoseconds and bytes of each stage of one overlay's opening.
#[derive(Default)]
pub struct Stages {
    receive_ns: u64,
    open_ns: u64,
    unpack_ns: u64,
    write_ns: Cell<u64>,
    sealed_bytes: u64,
    plain_bytes: u64,
}

/// PID 1's CPU time in nanoseconds (it is single-threaded).
pub fn cpu_ns() -> u64 {
    let ts = clock_gettime(ClockId::ProcessCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Stages {
    /// One metrics line an operator (and `qemu/bench`) can read; the same
    /// counters go into this boot's phase table for the report.
    pub fn log(&self) {
        let ms = |ns: u64| ns / 1_000_000;
        crate::phase::record_overlay(&ember_proto::timeline::OverlayStages {
            sealed_bytes: self.sealed_bytes,
            plain_bytes: self.plain_bytes,
            receive_ms: ms(self.receive_ns),
            open_ms: ms(self.open_ns),
            unpack_ms: ms(self.unpack_ns),
            write_ms: ms(self.write_ns.get()),
        });
        crate::info!(
            "metrics: overlay_sealed_bytes={} overlay_plain_bytes={} overlay_receive_ms={} overlay_open_ms={} overlay_unpack_ms={} overlay_write_ms={}",
            self.sealed_bytes,
            self.plain_bytes,
            ms(self.receive_ns),
            ms(self.open_ns),
            ms(self.unpack_ns),
            ms(self.write_ns.get())
        );
    }
}

/// Opens the sealed stream that `feed` produces into `/`. `feed` gets the
/// writer to hand each piece of ciphertext to, in order, and returns once
/// the stream ended (or failed). Time outside the writer counts as
/// `receive`.
pub fn open_into_root(
    envelope: &Envelope,
    stages: &mut Stages,
    feed: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), ember_proto::Error>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut feed = Some(feed);
    open_into_root_dyn(envelope, stages, &mut |write| match feed.take() {
        Some(feed) => feed(write),
        None => Ok(()),
    })
}

/// The piece writer [`open_into_root`] hands its `feed`.
type PieceWriter<'a> = dyn FnMut(&[u8]) -> Result<(), ember_proto::Error> + 'a;

/// [`open_into_root`]'s body, emitted once rather than per caller (about
/// 1.7 KB of /init each); `feed` is called once.
#[inline(never)]
fn open_into_root_dyn(
    envelope: &Envelope,
    stages: &mut Stages,
    feed: &mut dyn FnMut(&mut PieceWriter<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    // Confined: nothing under /proc, /sys, /dev, /boot or /run/ember, and
    // no crossing into another mount (every API filesystem is one by now).
    let sink = FsSink::open("/", Confinement::InRoot)
        .and_then(|s| s.protect(Protection::SYSTEM))
        .map_err(|kind| Error::from(tar::Error::from(kind)))?;
    let write_ns = Cell::new(0);
    let timed = TimedSink {
        inner: sink,
        spent: &write_ns,
    };
    // Every byte the extractor sees was authenticated by the AEAD, and the
    // signed manifest says how it is compressed.
    let mut extractor = Extractor::authenticated(
        timed,
        Limits::default(),
        envelope.manifest.compression.into(),
    );
    let mut opener = Opener::for_manifest(envelope);
    let mut open_and_unpack_ns = 0u64;
    let mut extractor_ns = 0u64;
    let mut last = cpu_ns();
    let result = feed(&mut |piece| {
        let entered = cpu_ns();
        stages.receive_ns += entered.saturating_sub(last);
        stages.sealed_bytes += piece.len() as u64;
        let mut sink = Counted {
            inner: &mut extractor,
            spent: &mut extractor_ns,
        };
        let r = opener.write(piece, &mut sink);
        last = cpu_ns();
        open_and_unpack_ns += last.saturating_sub(entered);
        r
    });
    stages.plain_bytes = opener.written();
    result?;
    opener.finish(&mut Counted {
        inner: &mut extractor,
        spent: &mut extractor_ns,
    })?;
    // The last chunk is handed on only here, once the stream has ended.
    stages.plain_bytes = opener.written();
    stages.open_ns = open_and_unpack_ns.saturating_sub(extractor_ns);
    stages.unpack_ns = extractor_ns.saturating_sub(write_ns.get());
    stages.write_ns = write_ns;
    Ok(())
}

/// The extractor, timed as a whole (unpack + write).
struct Counted<'a, 'b> {
    inner: &'a mut Extractor<TimedSink<'b>>,
    spent: &'a mut u64,
}

impl ember_proto::sealed::Sink for Counted<'_, '_> {
    type Error = tar::Error;

    fn write(&mut self, plaintext: &[u8]) -> Result<(), tar::Error> {
        let start = cpu_ns();
        let r = self.inner.write(plaintext);
        *self.spent += cpu_ns().saturating_sub(start);
        r
    }

    fn finish(&mut self) -> Result<(), tar::Error> {
        let start = cpu_ns();
        let r = self.inner.finish().map(|_| ());
        *self.spent += cpu_ns().saturating_sub(start);
        r
    }
}

/// The filesystem sink, timed: what creating and writing files costs.
struct TimedSink<'a> {
    inner: FsSink,
    spent: &'a Cell<u64>,
}

impl TimedSink<'_> {
    fn timed<T>(&mut self, f: impl FnOnce(&mut FsSink) -> T) -> T {
        let start = cpu_ns();
        let r = f(&mut self.inner);
        self.spent
            .set(self.spent.get() + cpu_ns().saturating_sub(start));
        r
    }
}

impl tar::Sink for TimedSink<'_> {
    fn begin(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        self.timed(|s| s.begin(entry))
    }
    fn data(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        self.timed(|s| s.data(bytes))
    }
    fn end(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        self.timed(|s| s.end(entry))
    }
    fn skipped(&mut self, name: &[u8], typeflag: u8) {
        self.inner.skipped(name, typeflag)
    }
    fn finish(&mut self) -> Result<(), ErrorKind> {
        self.timed(|s| s.finish())
    }
    fn abort(&mut self) {
        self.inner.abort()
    }
}
