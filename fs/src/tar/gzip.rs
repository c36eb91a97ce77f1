//! Streaming gunzip (RFC 1952) on miniz_oxide's core inflater: the header is
//! parsed byte by byte, the deflate output goes through one fixed wrapping
//! buffer (which is also the 32 KiB history window), and the trailer's
//! CRC-32 and ISIZE are checked. Concatenated members are accepted.
//! [`Gunzip::authenticated`] skips the CRC-32 (its ISIZE is still
//! checked): for a stream whose every byte an AEAD already authenticated.

use alloc::boxed::Box;
use alloc::vec;

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use super::error::{Error, ErrorKind};
use crate::crc32::Crc32;

/// Output window; a power of two ≥ 32 KiB. Larger means fewer, larger
/// chunks handed on (and so larger write(2)s).
const WINDOW: usize = 128 * 1024;

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The 10 fixed header bytes (`n` read).
    Fixed {
        n: usize,
    },
    ExtraLen {
        n: usize,
        len: u16,
    },
    Extra {
        remaining: u16,
    },
    Name,
    Comment,
    HeaderCrc {
        n: usize,
    },
    Body,
    Trailer {
        n: usize,
    },
    /// A member ended; more input must be another member.
    MemberEnd,
}

pub struct Gunzip {
    state: State,
    fixed: [u8; 10],
    trailer: [u8; 8],
    inflater: Box<DecompressorOxide>,
    window: Box<[u8]>,
    pos: usize,
    /// `None` when the caller authenticated the stream (no CRC-32).
    crc: Option<Crc32>,
    size: u32,
}

fn header_err(reason: &'static str) -> Error {
    ErrorKind::GzipHeader { reason }.into()
}

impl Gunzip {
    pub const MAGIC: [u8; 2] = [0x1f, 0x8b];

    pub fn new() -> Self {
        Gunzip {
            state: State::Fixed { n: 0 },
            fixed: [0; 10],
            trailer: [0; 8],
            inflater: Box::default(),
            window: vec![0u8; WINDOW].into_boxed_slice(),
            pos: 0,
            crc: Some(Crc32::new()),
            size: 0,
        }
    }

    /// A gunzip that does not compute the CRC-32: the caller authenticated
    /// every input byte (an AEAD), so a CRC could only repeat that verdict.
    pub fn authenticated() -> Self {
        Gunzip {
            crc: None,
            ..Self::new()
        }
    }

    /// True between members (the stream may end here).
    pub fn at_member_end(&self) -> bool {
        self.state == State::MemberEnd
    }

    /// Inflates `input`, handing every inflated chunk to `out` in order.
    pub fn write(
        &mut self,
        mut input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        while !input.is_empty() {
            if self.state == State::Body {
                input = self.inflate(input, out)?;
                continue;
            }
            let b = input[0];
            input = &input[1..];
            self.header_byte(b)?;
        }
        Ok(())
    }

    fn header_byte(&mut self, b: u8) -> Result<(), Error> {
        self.state = match self.state {
            State::MemberEnd => {
                if b != Self::MAGIC[0] {
                    return Err(ErrorKind::TrailingGarbage.into());
                }
                self.fixed[0] = b;
                State::Fixed { n: 1 }
            }
            State::Fixed { n } => {
                self.fixed[n] = b;
                if n + 1 < 10 {
                    State::Fixed { n: n + 1 }
                } else {
                    self.check_fixed()?;
                    self.after(0)
                }
            }
            State::ExtraLen { n: 0, .. } => State::ExtraLen {
                n: 1,
                len: u16::from(b),
            },
            State::ExtraLen { len, .. } => {
                let len = len | (u16::from(b) << 8);
                if len == 0 {
                    self.after(FEXTRA)
                } else {
                    State::Extra { remaining: len }
                }
            }
            State::Extra { remaining: 1 } => self.after(FEXTRA),
            State::Extra { remaining } => State::Extra {
                remaining: remaining - 1,
            },
            State::Name if b == 0 => self.after(FNAME),
            State::Name => State::Name,
            State::Comment if b == 0 => self.after(FCOMMENT),
            State::Comment => State::Comment,
            // The header CRC is optional and rarely written; it is skipped.
            State::HeaderCrc { n: 0 } => State::HeaderCrc { n: 1 },
            State::HeaderCrc { .. } => self.start_body(),
            State::Trailer { n } => {
                self.trailer[n] = b;
                if n + 1 < 8 {
                    State::Trailer { n: n + 1 }
                } else {
                    self.check_trailer()?;
                    State::MemberEnd
                }
            }
            State::Body => unreachable!("body bytes go to the inflater"),
        };
        Ok(())
    }

    fn check_fixed(&self) -> Result<(), Error> {
        if self.fixed[..2] != Self::MAGIC {
            return Err(header_err("bad magic"));
        }
        if self.fixed[2] != 8 {
            return Err(header_err("compression method is not deflate"));
        }
        if self.fixed[3] & FRESERVED != 0 {
            return Err(header_err("reserved flag bits set"));
        }
        Ok(())
    }

    /// The header state after the optional field `done` (0: the fixed part);
    /// optional fields come in the order FEXTRA, FNAME, FCOMMENT, FHCRC.
    fn after(&mut self, done: u8) -> State {
        const ORDER: [u8; 4] = [FEXTRA, FNAME, FCOMMENT, FHCRC];
        let start = ORDER.iter().position(|&f| f == done).map_or(0, |i| i + 1);
        let flags = self.fixed[3];
        match ORDER[start..].iter().find(|&&f| flags & f != 0) {
            Some(&FEXTRA) => State::ExtraLen { n: 0, len: 0 },
            Some(&FNAME) => State::Name,
            Some(&FCOMMENT) => State::Comment,
            Some(_) => State::HeaderCrc { n: 0 },
            None => self.start_body(),
        }
    }

    fn start_body(&mut self) -> State {
        *self.inflater = DecompressorOxide::new();
        self.pos = 0;
        if let Some(crc) = &mut self.crc {
            *crc = Crc32::new();
        }
        self.size = 0;
        State::Body
    }

    fn check_trailer(&self) -> Result<(), Error> {
        let stored_crc = u32::from_le_bytes([
            self.trailer[0],
            self.trailer[1],
            self.trailer[2],
            self.trailer[3],
        ]);
        let stored_size = u32::from_le_bytes([
            self.trailer[4],
            self.trailer[5],
            self.trailer[6],
            self.trailer[7],
        ]);
        if let Some(crc) = &self.crc {
            let crc = crc.value();
            if stored_crc != crc {
                return Err(ErrorKind::GzipCrc {
                    stored: stored_crc,
                    computed: crc,
                }
                .into());
            }
        }
        if stored_size != self.size {
            return Err(ErrorKind::GzipSize {
                stored: stored_size,
                computed: self.size,
            }
            .into());
        }
        Ok(())
    }

    /// Runs the inflater over `input`; returns what is left after the deflate
    /// stream ended (the trailer and beyond), or an empty slice.
    fn inflate<'a>(
        &mut self,
        mut input: &'a [u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<&'a [u8], Error> {
        loop {
            let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
            let (status, used, written) =
                decompress(&mut self.inflater, input, &mut self.window, self.pos, flags);
            input = &input[used..];
            if written > 0 {
                let chunk = &self.window[self.pos..self.pos + written];
                if let Some(crc) = &mut self.crc {
                    crc.update(chunk);
                }
                self.size = self.size.wrapping_add(written as u32);
                out(chunk)?;
                self.pos = (self.pos + written) & (WINDOW - 1);
            }
            match status {
                TINFLStatus::Done => {
                    self.state = State::Trailer { n: 0 };
                    return Ok(input);
                }
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput => {
                    if input.is_empty() {
                        return Ok(input);
                    }
                    // Progress is guaranteed while input remains.
                    if used == 0 && written == 0 {
                        return Err(ErrorKind::Inflate {
                            reason: "no progress",
                        }
                        .into());
                    }
                }
                TINFLStatus::Failed | TINFLStatus::FailedCannotMakeProgress => {
                    return Err(ErrorKind::Inflate {
                        reason: "invalid deflate data",
                    }
                    .into())
                }
                TINFLStatus::BadParam | TINFLStatus::Adler32Mismatch => {
                    return Err(ErrorKind::Inflate {
                        reason: "inflater refused its parameters",
                    }
                    .into())
                }
                #[allow(unreachable_patterns)]
                _ => continue,
            }
        }
    }
}

impl Default for Gunzip {
    fn default() -> Self {
        Self::new()
    }
}
