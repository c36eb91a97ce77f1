//! The tar state machine: consumes the (inflated) tar stream in chunks of any
//! size and drives a [`Sink`]. Memory is the 512-byte header, the current
//! entry's names and its pax payloads (each capped by [`Limits`]).

use alloc::vec::Vec;

use super::entry::{normalize_into, Entry, Kind, Meta, Time};
use super::error::{Error, ErrorKind, Field, Part};
use super::header::{Dialect, HeaderBlock, BLOCK};
use super::pax;
use super::sink::Sink;
use super::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    LocalPax,
    GlobalPax,
    LongName,
    LongLink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Filling the header block (`hdr_fill` bytes so far).
    Header,
    /// Collecting a pax or GNU long-name payload, then its padding.
    Payload {
        into: Payload,
        remaining: u64,
        pad: u64,
    },
    /// Streaming a file's data to the sink, then its padding.
    Data { remaining: u64, pad: u64 },
    /// Discarding bytes (padding, data of skipped members).
    Skip { remaining: u64 },
    /// A zero block was read: the archive is over; the rest is ignored.
    End,
    /// An error happened; nothing more is accepted.
    Failed,
}

/// Counts reported at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub skipped: u64,
}

pub struct Machine {
    state: State,
    limits: Limits,
    hdr: [u8; BLOCK],
    hdr_fill: usize,
    /// Tar bytes consumed so far.
    offset: u64,
    /// Offset of the first header of the current member (pax/long-name
    /// headers included), for error messages.
    entry_offset: Option<u64>,
    path: Vec<u8>,
    link: Vec<u8>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    local_pax: Vec<u8>,
    global_pax: Vec<u8>,
    /// Reused allocations for the long names.
    spare: [Vec<u8>; 2],
    meta: Option<Meta>,
    counts: Counts,
}

fn pad_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl Machine {
    pub fn new(limits: Limits) -> Self {
        Machine {
            state: State::Header,
            limits,
            hdr: [0; BLOCK],
            hdr_fill: 0,
            offset: 0,
            entry_offset: None,
            path: Vec::new(),
            link: Vec::new(),
            long_name: None,
            long_link: None,
            local_pax: Vec::new(),
            global_pax: Vec::new(),
            spare: [Vec::new(), Vec::new()],
            meta: None,
            counts: Counts::default(),
        }
    }

    /// Feeds the next bytes of the tar stream.
    pub fn write<S: Sink + ?Sized>(&mut self, input: &[u8], sink: &mut S) -> Result<(), Error> {
        match self.step_all(input, sink) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state = State::Failed;
                sink.abort();
                Err(e)
            }
        }
    }

    /// The stream ended: succeeds only after the end-of-archive block.
    pub fn finish<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<Counts, Error> {
        let part = match self.state {
            State::End => {
                return match sink.finish() {
                    Ok(()) => Ok(self.counts),
                    Err(k) => {
                        self.state = State::Failed;
                        Err(Error::from(k))
                    }
                }
            }
            State::Failed => return Err(ErrorKind::Finished.into()),
            State::Header if self.hdr_fill == 0 && self.entry_offset.is_none() => Part::EndMarker,
            State::Header => Part::Header,
            _ => Part::Data,
        };
        self.state = State::Failed;
        sink.abort();
        let kind = ErrorKind::Truncated { part };
        Err(match (self.meta.is_some(), self.entry_offset) {
            (true, Some(off)) => Error::from(kind).at(&self.path, off),
            _ => Error::at_byte(kind, self.offset),
        })
    }

    fn step_all<S: Sink + ?Sized>(&mut self, mut input: &[u8], sink: &mut S) -> Result<(), Error> {
        while !input.is_empty() {
            let used = self.step(input, sink)?;
            self.offset += used as u64;
            input = &input[used..];
        }
        Ok(())
    }

    /// Consumes a prefix of `input`; returns its length (> 0 unless ended).
    fn step<S: Sink + ?Sized>(&mut self, input: &[u8], sink: &mut S) -> Result<usize, Error> {
        match self.state {
            State::Header => {
                let n = (BLOCK - self.hdr_fill).min(input.len());
                self.hdr[self.hdr_fill..self.hdr_fill + n].copy_from_slice(&input[..n]);
                self.hdr_fill += n;
                if self.hdr_fill == BLOCK {
                    self.hdr_fill = 0;
                    let header_offset = self.offset + n as u64 - BLOCK as u64;
                    self.on_header(header_offset, sink)?;
                }
                Ok(n)
            }
            State::Payload {
                into,
                remaining,
                pad,
            } => {
                let n = remaining.min(input.len() as u64) as usize;
                self.payload_buf(into).extend_from_slice(&input[..n]);
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.on_payload(into)?;
                    self.state = State::Skip { remaining: pad };
                } else {
                    self.state = State::Payload {
                        into,
                        remaining,
                        pad,
                    };
                }
                Ok(n)
            }
            State::Data { remaining, pad } => {
                let n = remaining.min(input.len() as u64) as usize;
                if let Err(k) = sink.data(&input[..n]) {
                    return Err(self.entry_error(k));
                }
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.end_entry(sink)?;
                    self.state = State::Skip { remaining: pad };
                } else {
                    self.state = State::Data { remaining, pad };
                }
                Ok(n)
            }
            State::Skip { remaining } => {
                let n = remaining.min(input.len() as u64) as usize;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::Header
                } else {
                    State::Skip { remaining }
                };
                Ok(n)
            }
            State::End => Ok(input.len()),
            State::Failed => Err(ErrorKind::Finished.into()),
        }
    }

    fn payload_buf(&mut self, into: Payload) -> &mut Vec<u8> {
        match into {
            Payload::LocalPax => &mut self.local_pax,
            Payload::GlobalPax => &mut self.global_pax,
            Payload::LongName => self.long_name.get_or_insert_with(Vec::new),
            Payload::LongLink => self.long_link.get_or_insert_with(Vec::new),
        }
    }

    fn on_payload(&mut self, into: Payload) -> Result<(), Error> {
        let off = self.entry_offset.unwrap_or(0);
        match into {
            Payload::LocalPax | Payload::GlobalPax => {
                let buf = if into == Payload::LocalPax {
                    &self.local_pax
                } else {
                    &self.global_pax
                };
                if let Err(k) = pax::validate(buf) {
                    // The pax header block is still in `hdr`: name it.
                    let hdr = self.hdr;
                    return Err(Error::from(k).at(HeaderBlock::new(&hdr).name(), off));
                }
            }
            Payload::LongName | Payload::LongLink => {
                let buf = self.payload_buf(into);
                while buf.last() == Some(&0) {
                    buf.pop();
                }
            }
        }
        Ok(())
    }

    fn entry_error(&self, k: ErrorKind) -> Error {
        Error::from(k).at(&self.path, self.entry_offset.unwrap_or(0))
    }

    /// The name as the archive gives it, before normalization (for errors).
    fn raw_name<'a>(&'a self, h: &HeaderBlock<'a>) -> &'a [u8] {
        if let Some(p) = pax::get(&self.local_pax, b"path") {
            p
        } else if let Some(n) = &self.long_name {
            n
        } else {
            h.name()
        }
    }

    fn on_header<S: Sink + ?Sized>(
        &mut self,
        header_offset: u64,
        sink: &mut S,
    ) -> Result<(), Error> {
        let hdr = self.hdr;
        let h = HeaderBlock::new(&hdr);
        if h.is_zero() {
            if self.entry_offset.is_some() {
                // pax or long-name headers with no member after them
                return Err(Error::at_byte(
                    ErrorKind::Truncated { part: Part::Header },
                    header_offset,
                ));
            }
            self.state = State::End;
            return Ok(());
        }
        let off = *self.entry_offset.get_or_insert(header_offset);
        h.verify_checksum()
            .map_err(|k| Error::from(k).at(self.raw_name(&h), off))?;
        let typeflag = h.typeflag();
        let into = match typeflag {
            b'x' => Some(Payload::LocalPax),
            b'g' => Some(Payload::GlobalPax),
            b'L' => Some(Payload::LongName),
            b'K' => Some(Payload::LongLink),
            _ => None,
        };
        let Some(into) = into else {
            return self.begin_entry(&h, off, sink);
        };
        let size = h
            .size()
            .map_err(|k| Error::from(k).at(self.raw_name(&h), off))?;
        let limit = match into {
            Payload::LocalPax | Payload::GlobalPax => self.limits.max_pax,
            Payload::LongName | Payload::LongLink => self.limits.max_name + 1,
        };
        if size > limit as u64 {
            let kind = match into {
                Payload::LocalPax | Payload::GlobalPax => ErrorKind::PaxTooLarge { size, limit },
                _ => ErrorKind::NameTooLong {
                    len: size,
                    limit: self.limits.max_name,
                },
            };
            return Err(Error::from(kind).at(self.raw_name(&h), off));
        }
        match into {
            Payload::LocalPax => self.local_pax.clear(),
            Payload::GlobalPax => self.global_pax.clear(),
            Payload::LongName => {
                let mut v = self
                    .long_name
                    .take()
                    .unwrap_or_else(|| core::mem::take(&mut self.spare[0]));
                v.clear();
                self.long_name = Some(v);
            }
            Payload::LongLink => {
                let mut v = self
                    .long_link
                    .take()
                    .unwrap_or_else(|| core::mem::take(&mut self.spare[1]));
                v.clear();
                self.long_link = Some(v);
            }
        }
        if size == 0 {
            self.on_payload(into)?;
            self.state = State::Header;
        } else {
            self.state = State::Payload {
                into,
                remaining: size,
                pad: pad_of(size),
            };
        }
        Ok(())
    }

    fn begin_entry<S: Sink + ?Sized>(
        &mut self,
        h: &HeaderBlock<'_>,
        off: u64,
        sink: &mut S,
    ) -> Result<(), Error> {
        let meta = match self.parse_entry(h) {
            Ok(m) => m,
            Err(k) => return Err(Error::from(k).at(self.raw_name(h), off)),
        };
        let typeflag = h.typeflag();
        let Some(meta) = meta else {
            // Unsupported member: its data (if any) is skipped, with a warning.
            let size = self
                .header_or_pax_size(h)
                .map_err(|k| Error::from(k).at(self.raw_name(h), off))?;
            sink.skipped(self.raw_name(h), typeflag);
            self.counts.skipped += 1;
            self.clear_member();
            self.state = State::Skip {
                remaining: size + pad_of(size),
            };
            return Ok(());
        };
        // The data that follows: all of it goes to files; other kinds'
        // data (GNU dumpdirs, pax hard links with contents) is skipped.
        let stored = self
            .header_or_pax_size(h)
            .map_err(|k| Error::from(k).at(self.raw_name(h), off))?;
        self.meta = Some(meta);
        let entry = self.entry(meta);
        if let Err(k) = sink.begin(&entry) {
            return Err(self.entry_error(k));
        }
        self.counts.entries += 1;
        if meta.kind == Kind::File && stored > 0 {
            self.state = State::Data {
                remaining: stored,
                pad: pad_of(stored),
            };
        } else {
            self.end_entry(sink)?;
            self.state = State::Skip {
                remaining: stored + pad_of(stored),
            };
        }
        Ok(())
    }

    fn entry(&self, meta: Meta) -> Entry<'_> {
        Entry {
            path: &self.path,
            link: &self.link,
            meta,
            global_pax: &self.global_pax,
            local_pax: &self.local_pax,
        }
    }

    fn end_entry<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), Error> {
        if let Some(meta) = self.meta {
            let entry = self.entry(meta);
            if let Err(k) = sink.end(&entry) {
                return Err(self.entry_error(k));
            }
        }
        self.clear_member();
        Ok(())
    }

    /// Forgets per-member metadata (pax, long names), keeping allocations.
    fn clear_member(&mut self) {
        self.local_pax.clear();
        if let Some(v) = self.long_name.take() {
            self.spare[0] = v;
        }
        if let Some(v) = self.long_link.take() {
            self.spare[1] = v;
        }
        self.meta = None;
        self.entry_offset = None;
    }

    fn header_or_pax_size(&self, h: &HeaderBlock<'_>) -> Result<u64, ErrorKind> {
        match pax::get(&self.local_pax, b"size") {
            Some(v) => pax::parse_u64(v, "bad size value"),
            None => h.size(),
        }
    }

    /// A pax value from this member's header, else from the global header.
    fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        pax::get(&self.local_pax, key).or_else(|| pax::get(&self.global_pax, key))
    }

    fn pax_id(
        &self,
        key: &[u8],
        header: impl FnOnce() -> Result<u64, ErrorKind>,
        field: Field,
    ) -> Result<u32, ErrorKind> {
        let v = match self.pax_value(key) {
            Some(v) => pax::parse_u64(v, "bad uid/gid value")?,
            None => header()?,
        };
        u32::try_from(v).map_err(|_| ErrorKind::BadNumber { field })
    }

    /// Decodes the member's metadata into `self.path`/`self.link`;
    /// `None` for member types that are skipped.
    fn parse_entry(&mut self, h: &HeaderBlock<'_>) -> Result<Option<Meta>, ErrorKind> {
        self.check_name_len(h)?;
        let Some(kind) = self.member_kind(h) else {
            return Ok(None);
        };
        self.decode_path(h, kind)?;
        self.decode_link(h, kind)?;
        let mode = (h.mode()? & 0o7777) as u32;
        let uid = self.pax_id(b"uid", || h.uid(), Field::Uid)?;
        let gid = self.pax_id(b"gid", || h.gid(), Field::Gid)?;
        let mtime = self.mtime(h)?;
        let (dev_major, dev_minor) = self.device_numbers(h, kind)?;
        let size = if kind == Kind::File {
            self.header_or_pax_size(h)?
        } else {
            0
        };
        Ok(Some(Meta {
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            dev_major,
            dev_minor,
        }))
    }

    /// Refuses a name longer than the limit before any work on it.
    fn check_name_len(&self, h: &HeaderBlock<'_>) -> Result<(), ErrorKind> {
        let raw_len = self.raw_name(h).len() + h.prefix().len();
        if raw_len > self.limits.max_name {
            return Err(ErrorKind::NameTooLong {
                len: raw_len as u64,
                limit: self.limits.max_name,
            });
        }
        Ok(())
    }

    /// The member's kind from its typeflag (old-style files named with a
    /// trailing slash are directories); `None` for types that are skipped,
    /// GNU sparse files included.
    fn member_kind(&self, h: &HeaderBlock<'_>) -> Option<Kind> {
        let trailing_slash = self.raw_name(h).last() == Some(&b'/');
        let kind = match h.typeflag() {
            b'0' | b'\0' | b'7' if trailing_slash => Kind::Directory,
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' | b'D' => Kind::Directory,
            b'6' => Kind::Fifo,
            _ => return None,
        };
        let sparse = pax::get(&self.local_pax, b"GNU.sparse.major").is_some()
            || pax::get(&self.local_pax, b"GNU.sparse.size").is_some();
        (!sparse).then_some(kind)
    }

    /// Normalizes the member's name into `self.path` (reusing its
    /// allocation); only a directory may name the root itself.
    fn decode_path(&mut self, h: &HeaderBlock<'_>, kind: Kind) -> Result<(), ErrorKind> {
        let mut path = core::mem::take(&mut self.path);
        path.clear();
        let res = self.normalize_name(h, &mut path);
        self.path = path;
        res?;
        if self.path.is_empty() && kind != Kind::Directory {
            return Err(ErrorKind::EmptyName);
        }
        Ok(())
    }

    /// Decodes the member's link target into `self.link` (reusing its
    /// allocation); empty for kinds that are not links.
    fn decode_link(&mut self, h: &HeaderBlock<'_>, kind: Kind) -> Result<(), ErrorKind> {
        let mut link = core::mem::take(&mut self.link);
        link.clear();
        let res = self.link_into(h, kind, &mut link);
        self.link = link;
        res
    }

    /// A hard link's target is a path inside the root, normalized like a
    /// name; a symlink's is kept as written (it resolves at use).
    fn link_into(
        &self,
        h: &HeaderBlock<'_>,
        kind: Kind,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorKind> {
        let raw_link = self.raw_link(h);
        if raw_link.len() > self.limits.max_name {
            return Err(ErrorKind::NameTooLong {
                len: raw_link.len() as u64,
                limit: self.limits.max_name,
            });
        }
        match kind {
            Kind::Hardlink => match normalize_into(out, raw_link) {
                Ok(()) if out.is_empty() => Err(ErrorKind::LinkOutsideRoot),
                Ok(()) => Ok(()),
                Err(_) => Err(ErrorKind::LinkOutsideRoot),
            },
            Kind::Symlink if raw_link.is_empty() || raw_link.contains(&0) => {
                Err(ErrorKind::EmptyName)
            }
            Kind::Symlink => {
                out.extend_from_slice(raw_link);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The link target as the archive gives it: pax, GNU long link, header.
    fn raw_link<'a>(&'a self, h: &HeaderBlock<'a>) -> &'a [u8] {
        if let Some(l) = pax::get(&self.local_pax, b"linkpath") {
            l
        } else if let Some(l) = &self.long_link {
            l
        } else {
            h.linkname()
        }
    }

    /// The modification time: pax (with nanoseconds), else the header's.
    fn mtime(&self, h: &HeaderBlock<'_>) -> Result<Time, ErrorKind> {
        Ok(match self.pax_value(b"mtime") {
            Some(v) => {
                let (secs, nanos) = pax::parse_time(v)?;
                Time { secs, nanos }
            }
            None => Time {
                secs: h.mtime()?,
                nanos: 0,
            },
        })
    }

    /// A device node's major and minor numbers; (0, 0) for other kinds.
    fn device_numbers(&self, h: &HeaderBlock<'_>, kind: Kind) -> Result<(u32, u32), ErrorKind> {
        if !matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            return Ok((0, 0));
        }
        let major = match pax::get(&self.local_pax, b"SCHILY.devmajor") {
            Some(v) => pax::parse_u64(v, "bad devmajor value")?,
            None => h.devmajor()?,
        };
        let minor = match pax::get(&self.local_pax, b"SCHILY.devminor") {
            Some(v) => pax::parse_u64(v, "bad devminor value")?,
            None => h.devminor()?,
        };
        Ok((
            u32::try_from(major).map_err(|_| ErrorKind::BadNumber {
                field: Field::DevMajor,
            })?,
            u32::try_from(minor).map_err(|_| ErrorKind::BadNumber {
                field: Field::DevMinor,
            })?,
        ))
    }

    fn normalize_name(&self, h: &HeaderBlock<'_>, out: &mut Vec<u8>) -> Result<(), ErrorKind> {
        if let Some(p) = pax::get(&self.local_pax, b"path") {
            return normalize_into(out, p);
        }
        if let Some(n) = &self.long_name {
            return normalize_into(out, n);
        }
        let prefix = if h.dialect() == Dialect::Ustar {
            h.prefix()
        } else {
            &[]
        };
        if prefix.is_empty() {
            return normalize_into(out, h.name());
        }
        normalize_into(out, prefix)?;
        // The name continues the prefix, so a leading '/' there is a separator.
        let name = h.name();
        let name = &name[name.iter().take_while(|&&b| b == b'/').count()..];
        if prefix.first() == Some(&b'/') {
            return Err(ErrorKind::AbsolutePath);
        }
        normalize_into(out, name)
    }
}
