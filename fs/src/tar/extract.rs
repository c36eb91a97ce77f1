//! The one-pass pipeline: hash the stream as it arrives, inflate it if it is
//! gzip (detected by magic), and feed the tar state machine. An
//! [`Extractor::authenticated`] one is told the compression (gzip, LZ4
//! frame or none: the signed manifest says which), hashes nothing and skips
//! gzip's CRC: its caller authenticated every byte already (the sealed
//! overlay's AEAD).

use alloc::boxed::Box;
use sha2::{Digest, Sha256};

use super::error::{Error, ErrorKind, Part};
use super::gzip::Gunzip;
use super::lz4::Lz4;
use super::machine::Machine;
use super::sink::Sink;
use super::{Compression, Limits};

/// What an extraction saw, for the caller to check and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// SHA-256 of the bytes given to `write` (the compressed stream); all
    /// zero from an [`Extractor::authenticated`], which hashes nothing.
    pub sha256: [u8; 32],
    /// Bytes given to `write`.
    pub stream_bytes: u64,
    /// Bytes of the tar stream (after inflating).
    pub tar_bytes: u64,
    /// How the stream was compressed.
    pub compression: Compression,
    /// Members created.
    pub entries: u64,
    /// Members skipped with a warning (unsupported types).
    pub skipped: u64,
}

impl Summary {
    /// Fails with [`ErrorKind::DigestMismatch`] unless the stream's digest is `expected`.
    pub fn check_sha256(&self, expected: &[u8; 32]) -> Result<(), Error> {
        if &self.sha256 == expected {
            Ok(())
        } else {
            Err(ErrorKind::DigestMismatch {
                expected: Box::new(*expected),
                actual: Box::new(self.sha256),
            }
            .into())
        }
    }
}

enum Format {
    /// Not enough bytes yet to tell (`n` of the first two buffered).
    Undecided {
        first: [u8; 2],
        n: usize,
    },
    Plain,
    Gzip(Box<Gunzip>),
    Lz4(Box<Lz4>),
}

/// Push-style extractor: `write` chunks as they arrive (any boundaries),
/// then `finish`.
pub struct Extractor<S: Sink> {
    sink: S,
    limits: Limits,
    /// `None` for an authenticated stream: nothing to hash.
    sha: Option<Sha256>,
    format: Format,
    tar: Machine,
    stream_bytes: u64,
    tar_bytes: u64,
    failed: bool,
}

impl<S: Sink> Extractor<S> {
    pub fn new(sink: S, limits: Limits) -> Self {
        Extractor {
            sink,
            limits,
            sha: Some(Sha256::new()),
            format: Format::Undecided {
                first: [0; 2],
                n: 0,
            },
            tar: Machine::new(limits),
            stream_bytes: 0,
            tar_bytes: 0,
            failed: false,
        }
    }

    /// An extractor for a stream whose every byte the caller authenticated
    /// (an AEAD, chunk by chunk, in order, to its final chunk) and whose
    /// compression it knows: no SHA-256 of the stream and no gzip CRC-32 or
    /// LZ4 checksums, which could only repeat the AEAD's verdict. The tar,
    /// gzip and LZ4 frame structure are still checked.
    pub fn authenticated(sink: S, limits: Limits, compression: Compression) -> Self {
        Extractor {
            sha: None,
            format: match compression {
                Compression::None => Format::Plain,
                Compression::Gzip => Format::Gzip(Box::new(Gunzip::authenticated())),
                Compression::Lz4 => Format::Lz4(Box::new(Lz4::new())),
            },
            ..Self::new(sink, limits)
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Feeds the next bytes of the (possibly gzip-compressed) stream.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Err(ErrorKind::Finished.into());
        }
        if let Some(sha) = &mut self.sha {
            sha.update(chunk);
        }
        self.stream_bytes += chunk.len() as u64;
        let r = self.route(chunk);
        if r.is_err() {
            self.fail();
        }
        r
    }

    /// The stream ended: checks that the archive (and gzip trailer) were
    /// complete, applies deferred metadata and returns the summary.
    pub fn finish(&mut self) -> Result<Summary, Error> {
        if self.failed {
            return Err(ErrorKind::Finished.into());
        }
        let r = self.finish_inner();
        if r.is_err() {
            self.fail();
        }
        r
    }

    fn fail(&mut self) {
        if !self.failed {
            self.failed = true;
            self.sink.abort();
        }
    }

    fn finish_inner(&mut self) -> Result<Summary, Error> {
        if let Format::Undecided { first, n } = self.format {
            if n == 0 {
                return Err(ErrorKind::Truncated { part: Part::Header }.into());
            }
            self.format = Format::Plain;
            self.route(&first[..n])?;
        }
        let (compression, part) = match &self.format {
            Format::Gzip(g) => (
                Compression::Gzip,
                (!g.at_member_end()).then_some(Part::Gzip),
            ),
            Format::Lz4(l) => (Compression::Lz4, (!l.at_frame_end()).then_some(Part::Lz4)),
            _ => (Compression::None, None),
        };
        if let Some(part) = part {
            return Err(Error::at_byte(
                ErrorKind::Truncated { part },
                self.tar_bytes,
            ));
        }
        self.failed = true; // a second finish is an error
        let counts = self.tar.finish(&mut self.sink)?;
        let sha = self.sha.take().map(|h| h.finalize().into());
        Ok(Summary {
            sha256: sha.unwrap_or([0; 32]),
            stream_bytes: self.stream_bytes,
            tar_bytes: self.tar_bytes,
            compression,
            entries: counts.entries,
            skipped: counts.skipped,
        })
    }

    fn route(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        let Extractor {
            sink,
            limits,
            format,
            tar,
            tar_bytes,
            sha,
            ..
        } = self;
        let mut feed = |bytes: &[u8]| -> Result<(), Error> {
            *tar_bytes += bytes.len() as u64;
            if *tar_bytes > limits.max_tar_bytes {
                return Err(Error::at_byte(
                    ErrorKind::TooLarge {
                        limit: limits.max_tar_bytes,
                    },
                    *tar_bytes,
                ));
            }
            tar.write(bytes, sink)
        };
        match format {
            Format::Plain => feed(chunk),
            Format::Gzip(g) => g.write(chunk, &mut feed),
            Format::Lz4(l) => l.write(chunk, &mut feed),
            Format::Undecided { first, n } => {
                let take = (2 - *n).min(chunk.len());
                first[*n..*n + take].copy_from_slice(&chunk[..take]);
                *n += take;
                if *n < 2 && first[0] == Gunzip::MAGIC[0] {
                    return Ok(());
                }
                let head = *first;
                let head = &head[..*n];
                let rest = &chunk[take..];
                if head == Gunzip::MAGIC {
                    let mut g = Box::new(if sha.is_some() {
                        Gunzip::new()
                    } else {
                        Gunzip::authenticated()
                    });
                    g.write(head, &mut feed)?;
                    g.write(rest, &mut feed)?;
                    *format = Format::Gzip(g);
                } else {
                    *format = Format::Plain;
                    feed(head)?;
                    feed(rest)?;
                }
                Ok(())
            }
        }
    }
}
