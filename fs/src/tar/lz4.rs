//! Streaming LZ4 frame decoder (the lz4 frame format, v1.6.x) over
//! lz4_flex's block decoder. Each block is gathered whole (a compressed
//! block can only be decoded whole), decoded into a fixed output buffer
//! and handed on. Linked blocks (matches reaching into the previous 64 KiB)
//! and independent blocks, block sizes 64 KiB to 4 MiB, concatenated
//! frames. Its only caller authenticated every input byte (an AEAD), so
//! the optional xxHash-32 checksums (header, blocks, content) are skipped
//! unread: they could only repeat that verdict. Frame structure is still
//! checked, and a block's output can never exceed its declared maximum.

use alloc::vec;
use alloc::vec::Vec;

use super::error::{Error, ErrorKind};

pub const MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
/// How far back a match may reach: the history a linked block needs.
const HISTORY: usize = 64 * 1024;
/// Magic, FLG, BD, content size (8), header checksum (a dictionary id is
/// refused before it is read).
const MAX_HEADER: usize = 15;

const FLG_VERSION_MASK: u8 = 0xc0;
const FLG_VERSION_1: u8 = 0x40;
const FLG_INDEPENDENT: u8 = 0x20;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_RESERVED: u8 = 0x02;
const FLG_DICT_ID: u8 = 0x01;
/// A block size word with this bit holds its bytes uncompressed.
const UNCOMPRESSED: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Gathering the frame header into `small` (`n` of `need` bytes; `need`
    /// grows once FLG says which optional fields follow).
    Header { n: usize, need: usize },
    /// Gathering a block's 4-byte size into `small`.
    BlockSize { n: usize },
    /// Gathering a block's `len` bytes into `input`.
    Block { len: usize, raw: bool },
    /// Skipping `left` checksum bytes, then `next`.
    Skip { left: usize, after: After },
    /// A frame ended: the stream may end, or another frame start.
    FrameEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Block,
    Frame,
}

pub struct Lz4 {
    state: State,
    small: [u8; MAX_HEADER],
    flags: u8,
    block_max: usize,
    /// The current block's bytes as gathered.
    input: Vec<u8>,
    /// `HISTORY` bytes of history, then room for one block's output.
    window: Vec<u8>,
    /// Valid bytes of history at the end of `window[..HISTORY]`.
    history: usize,
}

fn header_err(reason: &'static str) -> Error {
    ErrorKind::Lz4Header { reason }.into()
}

impl Lz4 {
    pub fn new() -> Self {
        Lz4 {
            state: State::Header { n: 0, need: 7 },
            small: [0; MAX_HEADER],
            flags: 0,
            block_max: 0,
            input: Vec::new(),
            window: Vec::new(),
            history: 0,
        }
    }

    /// True between frames (the stream may end here).
    pub fn at_frame_end(&self) -> bool {
        self.state == State::FrameEnd
    }

    /// Decodes `input`, handing every decoded block to `out` in order.
    pub fn write(
        &mut self,
        mut input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        while !input.is_empty() {
            let take;
            self.state = match self.state {
                State::FrameEnd => {
                    take = 0;
                    State::Header { n: 0, need: 7 }
                }
                State::Header { n, need } => {
                    take = (need - n).min(input.len());
                    self.small[n..n + take].copy_from_slice(&input[..take]);
                    self.header(n + take, need)?
                }
                State::BlockSize { n } => {
                    take = (4 - n).min(input.len());
                    self.small[n..n + take].copy_from_slice(&input[..take]);
                    if n + take < 4 {
                        State::BlockSize { n: n + take }
                    } else {
                        self.block_size()?
                    }
                }
                State::Block { len, raw } => {
                    take = (len - self.input.len()).min(input.len());
                    self.input.extend_from_slice(&input[..take]);
                    if self.input.len() < len {
                        State::Block { len, raw }
                    } else {
                        self.decode(raw, out)?;
                        self.after_block()
                    }
                }
                State::Skip { left, after } => {
                    take = left.min(input.len());
                    match (left - take, after) {
                        (0, After::Block) => State::BlockSize { n: 0 },
                        (0, After::Frame) => State::FrameEnd,
                        (left, after) => State::Skip { left, after },
                    }
                }
            };
            input = &input[take..];
        }
        Ok(())
    }

    /// `n` header bytes are in `small`: checks what they say, and either
    /// asks for more or starts the first block.
    fn header(&mut self, n: usize, need: usize) -> Result<State, Error> {
        if n < need {
            return Ok(State::Header { n, need });
        }
        if need == 7 {
            if self.small[..4] != MAGIC {
                return Err(header_err("bad magic"));
            }
            let flg = self.small[4];
            if flg & FLG_VERSION_MASK != FLG_VERSION_1 {
                return Err(header_err("unknown frame version"));
            }
            if flg & FLG_RESERVED != 0 || self.small[5] & 0x8f != 0 {
                return Err(header_err("reserved bits set"));
            }
            if flg & FLG_DICT_ID != 0 {
                return Err(header_err("needs a dictionary"));
            }
            let block_max = match self.small[5] >> 4 {
                4 => 64 << 10,
                5 => 256 << 10,
                6 => 1 << 20,
                7 => 4 << 20,
                _ => return Err(header_err("unknown block size")),
            };
            self.flags = flg;
            if block_max != self.block_max {
                self.block_max = block_max;
                self.input = Vec::with_capacity(block_max);
                self.window = vec![0; HISTORY + block_max];
            }
            self.history = 0;
            if flg & FLG_CONTENT_SIZE != 0 {
                // The content size is not needed: the tar stream ends itself
                // and its length is capped by `Limits::max_tar_bytes`.
                return Ok(State::Header { n, need: 15 });
            }
        }
        // The last header byte is its checksum, skipped (see the module).
        Ok(State::BlockSize { n: 0 })
    }

    fn block_size(&mut self) -> Result<State, Error> {
        let word = u32::from_le_bytes([self.small[0], self.small[1], self.small[2], self.small[3]]);
        if word == 0 {
            return Ok(if self.flags & FLG_CONTENT_CHECKSUM != 0 {
                State::Skip {
                    left: 4,
                    after: After::Frame,
                }
            } else {
                State::FrameEnd
            });
        }
        let len = (word & !UNCOMPRESSED) as usize;
        if len > self.block_max {
            return Err(ErrorKind::Lz4Block {
                reason: "block larger than the frame's block size",
            }
            .into());
        }
        self.input.clear();
        Ok(State::Block {
            len,
            raw: word & UNCOMPRESSED != 0,
        })
    }

    fn after_block(&self) -> State {
        if self.flags & FLG_BLOCK_CHECKSUM != 0 {
            State::Skip {
                left: 4,
                after: After::Block,
            }
        } else {
            State::BlockSize { n: 0 }
        }
    }

    /// Decodes the gathered block after the history and hands it on; a
    /// linked frame then keeps the last 64 KiB as the next block's history.
    fn decode(
        &mut self,
        raw: bool,
        out: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (history, room) = self.window.split_at_mut(HISTORY);
        let n = if raw {
            room[..self.input.len()].copy_from_slice(&self.input);
            self.input.len()
        } else {
            lz4_flex::block::decompress_into_with_dict(
                &self.input,
                room,
                &history[HISTORY - self.history..],
            )
            .map_err(|_| ErrorKind::Lz4Block {
                reason: "corrupt block",
            })?
        };
        out(&room[..n])?;
        if self.flags & FLG_INDEPENDENT == 0 {
            // The last HISTORY bytes of history ‖ this block.
            self.window.copy_within(n..HISTORY + n, 0);
            self.history = (self.history + n).min(HISTORY);
        }
        Ok(())
    }
}
