//! A deterministic gzip encoder on miniz_oxide's streaming deflate: fixed
//! header (no name, mtime 0, OS "unknown"), so the same input always gives
//! the same bytes.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
};

use crate::cpio::Output;
use crate::crc32::Crc32;
use crate::Error;

const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
const OUT_CHUNK: usize = 64 * 1024;

/// Compresses everything `put` into it and forwards the gzip stream to `O`.
pub struct GzipWriter<O: Output> {
    out: O,
    deflate: Box<CompressorOxide>,
    crc: Crc32,
    len: u32,
    buf: Vec<u8>,
    header_written: bool,
}

impl<O: Output> GzipWriter<O> {
    /// `level` is 0..=10 as in zlib (9 is a good size/speed balance for initrds).
    pub fn new(out: O, level: u8) -> Self {
        let flags = create_comp_flags_from_zip_params(level.min(10) as i32, -15, 0);
        GzipWriter {
            out,
            deflate: Box::new(CompressorOxide::new(flags)),
            crc: Crc32::new(),
            len: 0,
            buf: vec![0u8; OUT_CHUNK],
            header_written: false,
        }
    }

    fn run(&mut self, mut input: &[u8], flush: TDEFLFlush) -> Result<(), Error> {
        if !self.header_written {
            self.out.put(&HEADER)?;
            self.header_written = true;
        }
        loop {
            let (status, consumed, produced) =
                compress(&mut self.deflate, input, &mut self.buf, flush);
            input = &input[consumed..];
            self.out.put(&self.buf[..produced])?;
            match status {
                TDEFLStatus::Okay if input.is_empty() && produced < self.buf.len() => return Ok(()),
                TDEFLStatus::Okay => continue,
                TDEFLStatus::Done => return Ok(()),
                TDEFLStatus::BadParam | TDEFLStatus::PutBufFailed => return Err(Error::Deflate),
            }
        }
    }

    /// Ends the deflate stream, writes the CRC/size trailer, returns the output.
    pub fn finish(mut self) -> Result<O, Error> {
        self.run(&[], TDEFLFlush::Finish)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.value().to_le_bytes());
        trailer[4..].copy_from_slice(&self.len.to_le_bytes());
        self.out.put(&trailer)?;
        Ok(self.out)
    }
}

impl<O: Output> Output for GzipWriter<O> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.crc.update(bytes);
        self.len = self.len.wrapping_add(bytes.len() as u32);
        self.run(bytes, TDEFLFlush::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_gzip_decodes_our_stream() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect();
        let mut w = GzipWriter::new(Vec::new(), 9);
        for chunk in data.chunks(7777) {
            w.put(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut child = std::process::Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&gz).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn same_input_same_bytes() {
        let run = || {
            let mut w = GzipWriter::new(Vec::new(), 9);
            w.put(b"reproducible").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(run(), run());
    }
}
