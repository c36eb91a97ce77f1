//! A small PNG reader for tests that look at rendered pictures: 8-bit
//! RGB or RGBA, not interlaced (what rsvg-convert writes). Pixels come back
//! as RGBA.

use std::fmt;

pub struct Image {
    pub width: usize,
    pub height: usize,
    /// Row-major RGBA.
    pub pixels: Vec<[u8; 4]>,
}

impl Image {
    pub fn at(&self, x: usize, y: usize) -> [u8; 4] {
        self.pixels[y * self.width + x]
    }
}

#[derive(Debug)]
pub enum Error {
    NotPng,
    Truncated,
    /// Only 8-bit RGB (2) and RGBA (6), not interlaced.
    Unsupported {
        bit_depth: u8,
        colour_type: u8,
        interlace: u8,
    },
    Inflate(String),
    BadFilter(u8),
    WrongDataLength {
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotPng => write!(f, "no PNG signature"),
            Error::Truncated => write!(f, "PNG chunk runs past the end"),
            Error::Unsupported { bit_depth, colour_type, interlace } => write!(
                f,
                "unsupported PNG: bit depth {bit_depth}, colour type {colour_type}, interlace {interlace}"
            ),
            Error::Inflate(e) => write!(f, "IDAT does not inflate: {e}"),
            Error::BadFilter(t) => write!(f, "unknown PNG row filter {t}"),
            Error::WrongDataLength { expected, got } => {
                write!(f, "image data is {got} bytes, expected {expected}")
            }
        }
    }
}

impl std::error::Error for Error {}

pub fn decode(bytes: &[u8]) -> Result<Image, Error> {
    const SIG: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    if bytes.len() < 8 || bytes[..8] != SIG {
        return Err(Error::NotPng);
    }
    let mut pos = 8;
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let body = bytes.get(pos + 8..pos + 8 + len).ok_or(Error::Truncated)?;
        match kind {
            b"IHDR" => {
                if body.len() < 13 {
                    return Err(Error::Truncated);
                }
                width = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                let (depth, colour, interlace) = (body[8], body[9], body[12]);
                channels = match (depth, colour, interlace) {
                    (8, 2, 0) => 3,
                    (8, 6, 0) => 4,
                    _ => {
                        return Err(Error::Unsupported {
                            bit_depth: depth,
                            colour_type: colour,
                            interlace,
                        })
                    }
                };
            }
            b"IDAT" => idat.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    if channels == 0 {
        return Err(Error::Truncated);
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat)
        .map_err(|e| Error::Inflate(format!("{e:?}")))?;
    let stride = width * channels;
    let expected = height * (stride + 1);
    if raw.len() != expected {
        return Err(Error::WrongDataLength {
            expected,
            got: raw.len(),
        });
    }
    let mut out = vec![0u8; height * stride];
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        let src = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for i in 0..stride {
            let a = if i >= channels {
                out[y * stride + i - channels]
            } else {
                0
            };
            let b = if y > 0 { out[(y - 1) * stride + i] } else { 0 };
            let c = if y > 0 && i >= channels {
                out[(y - 1) * stride + i - channels]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                t => return Err(Error::BadFilter(t)),
            };
            out[y * stride + i] = src[i].wrapping_add(predicted);
        }
    }
    let pixels = out
        .chunks_exact(channels)
        .map(|p| {
            if channels == 4 {
                [p[0], p[1], p[2], p[3]]
            } else {
                [p[0], p[1], p[2], 255]
            }
        })
        .collect();
    Ok(Image {
        width,
        height,
        pixels,
    })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
