//! PE/COFF (PE32+) images: a checked view of the headers a UKI needs, and
//! the one edit `ember uki build` makes to systemd-stub: appending
//! initialised-data sections after the stub's last one.
//!
//! Layout (Microsoft PE/COFF specification):
//!
//! ```text
//! 0x00  DOS header, e_lfanew (u32) at 0x3c
//! e_lfanew: "PE\0\0", COFF header (20 bytes), optional header
//!           (SizeOfOptionalHeader bytes, magic 0x20b = PE32+),
//!           section table (40 bytes per section)
//! ...       section data at PointerToRawData (FileAlignment multiples)
//! ```
//!
//! Every offset read from the file is bounds checked once in
//! [`PeImage::parse`]; the accessors after that cannot go out of range.

use std::fmt;

use ember_tpm::HashAlg;

/// COFF header fields, relative to the COFF header (after "PE\0\0").
mod coff {
    use std::ops::Range;
    pub const MACHINE: Range<usize> = 0..2;
    pub const NUMBER_OF_SECTIONS: Range<usize> = 2..4;
    pub const POINTER_TO_SYMBOL_TABLE: Range<usize> = 8..12;
    pub const NUMBER_OF_SYMBOLS: Range<usize> = 12..16;
    pub const SIZE_OF_OPTIONAL_HEADER: Range<usize> = 16..18;
    pub const LEN: usize = 20;
}

/// PE32+ optional header fields, relative to the optional header.
mod opt {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const SIZE_OF_INITIALIZED_DATA: Range<usize> = 8..12;
    pub const SECTION_ALIGNMENT: Range<usize> = 32..36;
    pub const FILE_ALIGNMENT: Range<usize> = 36..40;
    pub const SIZE_OF_IMAGE: Range<usize> = 56..60;
    pub const SIZE_OF_HEADERS: Range<usize> = 60..64;
    pub const CHECKSUM: Range<usize> = 64..68;
    pub const NUMBER_OF_RVA_AND_SIZES: Range<usize> = 108..112;
    pub const DATA_DIRECTORIES: usize = 112;
    /// Data directory 4: the Authenticode certificate table (file offsets).
    pub const CERTIFICATE_TABLE: usize = 4;
    pub const PE32_PLUS: u16 = 0x20b;
}

/// Section header fields, relative to one 40-byte section header.
mod sect {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..8;
    pub const VIRTUAL_SIZE: Range<usize> = 8..12;
    pub const VIRTUAL_ADDRESS: Range<usize> = 12..16;
    pub const SIZE_OF_RAW_DATA: Range<usize> = 16..20;
    pub const POINTER_TO_RAW_DATA: Range<usize> = 20..24;
    pub const CHARACTERISTICS: Range<usize> = 36..40;
    pub const LEN: usize = 40;
    /// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ.
    pub const READ_ONLY_DATA: u32 = 0x0000_0040 | 0x4000_0000;
}

const MACHINE_AMD64: u16 = 0x8664;
/// Page size: appended sections start on page boundaries whatever the
/// stub's own SectionAlignment, as ukify places them (firmware that maps
/// sections with page permissions needs it).
const PAGE: u32 = 0x1000;

/// Why a file is not a PE image Ember can use, or cannot take more sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeError {
    /// The file ends before a header or section that it declares.
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    BadMagic {
        what: &'static str,
    },
    UnsupportedMachine(u16),
    NotPe32Plus(u16),
    /// An alignment that is zero or not a power of two.
    BadAlignment {
        what: &'static str,
        value: u32,
    },
    /// The header area cannot hold the new section headers.
    NoRoomForHeaders {
        need: usize,
        have: usize,
    },
    /// The stub carries an Authenticode signature: appending sections would
    /// break it. Sign the finished UKI instead.
    Signed,
    BadSectionName(String),
    /// An image larger than PE's 32-bit fields allow.
    TooLarge,
    /// A hash bank Ember does not compute (sha1).
    UnsupportedHash(&'static str),
}

impl fmt::Display for PeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeError::Truncated { what, need, have } => {
                write!(
                    f,
                    "truncated PE image: {what} needs {need} bytes, the file has {have}"
                )
            }
            PeError::BadMagic { what } => write!(f, "not a PE image: bad {what} signature"),
            PeError::UnsupportedMachine(m) => {
                write!(f, "PE machine {m:#06x} is not x86_64 (0x8664)")
            }
            PeError::NotPe32Plus(m) => {
                write!(f, "optional header magic {m:#06x} is not PE32+ (0x20b)")
            }
            PeError::BadAlignment { what, value } => {
                write!(f, "{what} {value:#x} is not a power of two")
            }
            PeError::NoRoomForHeaders { need, have } => write!(
                f,
                "the stub's header area ({have} bytes) cannot hold the section table ({need} bytes)"
            ),
            PeError::Signed => write!(
                f,
                "the stub is Authenticode-signed; use an unsigned stub and sign the finished UKI"
            ),
            PeError::BadSectionName(n) => {
                write!(f, "section name {n:?} must be 1-8 bytes and start with '.'")
            }
            PeError::TooLarge => write!(f, "image larger than 4 GiB"),
            PeError::UnsupportedHash(b) => write!(f, "the {b} bank cannot be computed"),
        }
    }
}

impl std::error::Error for PeError {}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn align_up(v: u64, to: u32) -> u64 {
    v.div_ceil(u64::from(to)) * u64::from(to)
}

/// One section header, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name without its NUL padding (".linux").
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

impl Section {
    /// End of the section's bytes in the file.
    fn raw_end(&self) -> u64 {
        u64::from(self.pointer_to_raw_data) + u64::from(self.size_of_raw_data)
    }

    /// End of the section in memory (the loader maps the larger of the two sizes).
    fn virtual_end(&self) -> u64 {
        u64::from(self.virtual_address) + u64::from(self.virtual_size.max(self.size_of_raw_data))
    }
}

/// A parsed PE32+ image: header offsets and section table, checked against
/// the file length.
#[derive(Debug, Clone)]
pub struct PeImage {
    /// Offset of the COFF header (after "PE\0\0").
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    /// Offset of the section table.
    table: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_headers: u32,
    pub sections: Vec<Section>,
    /// File offset and size of the certificate table (0, 0 when unsigned).
    pub certificate_table: (u32, u32),
}

impl PeImage {
    pub fn parse(b: &[u8]) -> Result<PeImage, PeError> {
        let need = |what, need: usize| {
            if b.len() < need {
                Err(PeError::Truncated {
                    what,
                    need,
                    have: b.len(),
                })
            } else {
                Ok(())
            }
        };
        need("DOS header", 0x40)?;
        if &b[..2] != b"MZ" {
            return Err(PeError::BadMagic { what: "DOS (MZ)" });
        }
        let pe = u32_at(b, 0x3c) as usize;
        need("PE signature", pe.saturating_add(4 + coff::LEN))?;
        if &b[pe..pe + 4] != b"PE\0\0" {
            return Err(PeError::BadMagic { what: "PE" });
        }
        let coff = pe + 4;
        let machine = u16_at(b, coff + coff::MACHINE.start);
        if machine != MACHINE_AMD64 {
            return Err(PeError::UnsupportedMachine(machine));
        }
        let nsections = u16_at(b, coff + coff::NUMBER_OF_SECTIONS.start) as usize;
        let opt_len = u16_at(b, coff + coff::SIZE_OF_OPTIONAL_HEADER.start) as usize;
        let opt = coff + coff::LEN;
        need("optional header", opt + opt_len.max(opt::DATA_DIRECTORIES))?;
        let magic = u16_at(b, opt + opt::MAGIC.start);
        if magic != opt::PE32_PLUS {
            return Err(PeError::NotPe32Plus(magic));
        }
        let section_alignment = u32_at(b, opt + opt::SECTION_ALIGNMENT.start);
        let file_alignment = u32_at(b, opt + opt::FILE_ALIGNMENT.start);
        for (what, value) in [
            ("SectionAlignment", section_alignment),
            ("FileAlignment", file_alignment),
        ] {
            if !value.is_power_of_two() {
                return Err(PeError::BadAlignment { what, value });
            }
        }
        let ndirs = u32_at(b, opt + opt::NUMBER_OF_RVA_AND_SIZES.start) as usize;
        let certificate_table = if ndirs > opt::CERTIFICATE_TABLE
            && opt::DATA_DIRECTORIES + 8 * (opt::CERTIFICATE_TABLE + 1) <= opt_len
        {
            let at = opt + opt::DATA_DIRECTORIES + 8 * opt::CERTIFICATE_TABLE;
            (u32_at(b, at), u32_at(b, at + 4))
        } else {
            (0, 0)
        };
        let table = opt + opt_len;
        need("section table", table + nsections * sect::LEN)?;
        let mut sections = Vec::with_capacity(nsections);
        for i in 0..nsections {
            let h = &b[table + i * sect::LEN..table + (i + 1) * sect::LEN];
            let raw_name = &h[sect::NAME];
            let len = raw_name.iter().position(|&c| c == 0).unwrap_or(8);
            let s = Section {
                name: String::from_utf8_lossy(&raw_name[..len]).into_owned(),
                virtual_size: u32_at(h, sect::VIRTUAL_SIZE.start),
                virtual_address: u32_at(h, sect::VIRTUAL_ADDRESS.start),
                size_of_raw_data: u32_at(h, sect::SIZE_OF_RAW_DATA.start),
                pointer_to_raw_data: u32_at(h, sect::POINTER_TO_RAW_DATA.start),
                characteristics: u32_at(h, sect::CHARACTERISTICS.start),
            };
            if s.raw_end() > b.len() as u64 {
                return Err(PeError::Truncated {
                    what: "section data",
                    need: s.raw_end() as usize,
                    have: b.len(),
                });
            }
            sections.push(s);
        }
        Ok(PeImage {
            coff,
            opt,
            table,
            section_alignment,
            file_alignment,
            size_of_headers: u32_at(b, opt + opt::SIZE_OF_HEADERS.start),
            sections,
            certificate_table,
        })
    }

    /// The section called `name`, if any.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The bytes the loader maps for `s`: VirtualSize bytes, the part past
    /// the raw data zero-filled (as the firmware's loader does).
    pub fn section_bytes(&self, file: &[u8], s: &Section) -> Vec<u8> {
        let start = s.pointer_to_raw_data as usize;
        let raw = s.size_of_raw_data.min(s.virtual_size) as usize;
        let mut out = file[start..start + raw].to_vec();
        out.resize(s.virtual_size as usize, 0);
        out
    }

    /// Offset of the CheckSum field (skipped by the checksum and by
    /// Authenticode).
    pub fn checksum_offset(&self) -> usize {
        self.opt + opt::CHECKSUM.start
    }

    /// The Authenticode digest of the image (what UEFI firmware extends
    /// into PCR 4 for an image it loads, EV_EFI_BOOT_SERVICES_APPLICATION):
    /// the headers without the CheckSum field and the certificate table's
    /// directory entry, the sections' raw data in file order, then any
    /// data after them except the certificate table.
    pub fn authenticode(&self, file: &[u8], bank: HashAlg) -> Result<Vec<u8>, PeError> {
        let sum_at = self.checksum_offset();
        let cert_entry = self.opt + opt::DATA_DIRECTORIES + 8 * opt::CERTIFICATE_TABLE;
        let headers_end = (self.size_of_headers as usize).min(file.len());
        if cert_entry + 8 > headers_end {
            return Err(PeError::Truncated {
                what: "headers (certificate table entry)",
                need: cert_entry + 8,
                have: headers_end,
            });
        }
        let mut parts: Vec<&[u8]> = vec![
            &file[..sum_at],
            &file[sum_at + 4..cert_entry],
            &file[cert_entry + 8..headers_end],
        ];
        let mut sections: Vec<&Section> = self
            .sections
            .iter()
            .filter(|s| s.size_of_raw_data > 0)
            .collect();
        sections.sort_by_key(|s| s.pointer_to_raw_data);
        let mut hashed = headers_end;
        for s in sections {
            let start = s.pointer_to_raw_data as usize;
            parts.push(&file[start..start + s.size_of_raw_data as usize]);
            hashed += s.size_of_raw_data as usize;
        }
        let cert_size = self.certificate_table.1 as usize;
        let extra_end = file.len().saturating_sub(cert_size);
        if extra_end > hashed {
            parts.push(&file[hashed..extra_end]);
        }
        bank.digest(&parts)
            .map_err(|_| PeError::UnsupportedHash(bank.name()))
    }
}

/// Returns `stub` with `sections` (name, bytes) appended after its last
/// section: each at the next page-aligned virtual address and the next
/// FileAlignment-aligned file offset, zero padded, read-only initialised
/// data. The stub's trailing COFF symbol table (debug data, not loaded) is
/// dropped; SizeOfImage, SizeOfInitializedData, NumberOfSections and the
/// checksum are recomputed. The output depends only on the inputs.
pub fn append_sections(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>, PeError> {
    let img = PeImage::parse(stub)?;
    if img.certificate_table != (0, 0) {
        return Err(PeError::Signed);
    }
    for (name, _) in sections {
        if name.is_empty() || name.len() > 8 || !name.starts_with('.') {
            return Err(PeError::BadSectionName((*name).to_string()));
        }
    }
    let table_end = img.table + (img.sections.len() + sections.len()) * sect::LEN;
    let first_data = img
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data as usize)
        .min()
        .unwrap_or(usize::MAX)
        .min(img.size_of_headers as usize);
    if table_end > first_data {
        return Err(PeError::NoRoomForHeaders {
            need: table_end,
            have: first_data,
        });
    }

    let raw_end = img.sections.iter().map(Section::raw_end).max().unwrap_or(0);
    let raw_end = raw_end.max(u64::from(img.size_of_headers));
    let mut out = stub[..raw_end as usize].to_vec();
    let page = PAGE.max(img.section_alignment);
    let mut vaddr = align_up(
        img.sections
            .iter()
            .map(Section::virtual_end)
            .max()
            .unwrap_or(0),
        page,
    );
    let mut added_data = 0u64;
    for (i, (name, data)) in sections.iter().enumerate() {
        let offset = align_up(out.len() as u64, img.file_alignment);
        let raw_size = align_up(data.len() as u64, img.file_alignment);
        if offset + raw_size > u64::from(u32::MAX) || vaddr + raw_size > u64::from(u32::MAX) {
            return Err(PeError::TooLarge);
        }
        out.resize(offset as usize, 0);
        out.extend_from_slice(data);
        out.resize((offset + raw_size) as usize, 0);

        let h = img.table + (img.sections.len() + i) * sect::LEN;
        out[h..h + sect::LEN].fill(0);
        out[h..h + name.len()].copy_from_slice(name.as_bytes());
        put_u32(&mut out, h + sect::VIRTUAL_SIZE.start, data.len() as u32);
        put_u32(&mut out, h + sect::VIRTUAL_ADDRESS.start, vaddr as u32);
        put_u32(&mut out, h + sect::SIZE_OF_RAW_DATA.start, raw_size as u32);
        put_u32(&mut out, h + sect::POINTER_TO_RAW_DATA.start, offset as u32);
        put_u32(
            &mut out,
            h + sect::CHARACTERISTICS.start,
            sect::READ_ONLY_DATA,
        );
        vaddr = align_up(vaddr + data.len().max(1) as u64, page);
        added_data += raw_size;
    }
    if vaddr > u64::from(u32::MAX) {
        return Err(PeError::TooLarge);
    }

    let n = (img.sections.len() + sections.len()) as u16;
    put_u16(&mut out, img.coff + coff::NUMBER_OF_SECTIONS.start, n);
    put_u32(&mut out, img.coff + coff::POINTER_TO_SYMBOL_TABLE.start, 0);
    put_u32(&mut out, img.coff + coff::NUMBER_OF_SYMBOLS.start, 0);
    let init_at = img.opt + opt::SIZE_OF_INITIALIZED_DATA.start;
    let init = u64::from(u32_at(&out, init_at)) + added_data;
    put_u32(&mut out, init_at, init.min(u64::from(u32::MAX)) as u32);
    let size_of_image = align_up(vaddr, img.section_alignment);
    put_u32(
        &mut out,
        img.opt + opt::SIZE_OF_IMAGE.start,
        size_of_image as u32,
    );
    let sum = checksum(&out, img.checksum_offset());
    put_u32(&mut out, img.checksum_offset(), sum);
    Ok(out)
}

/// The PE checksum (as imagehlp's CheckSumMappedFile): 16-bit one's-
/// complement-style sum of the file with the CheckSum field read as zero,
/// folded to 16 bits, plus the file length.
pub fn checksum(file: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, pair) in file.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_at && at < checksum_at + 4 {
            continue;
        }
        let word = u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(file.len() as u32)
}

/// A minimal PE32+ image: headers in 0x400 bytes, one .text section of
/// 0x10 bytes at RVA 0x1000, SectionAlignment 0x200 like Debian's stub.
#[cfg(any(test, feature = "test-support"))]
pub fn test_stub() -> Vec<u8> {
    let mut b = vec![0u8; 0x600];
    b[..2].copy_from_slice(b"MZ");
    put_u32(&mut b, 0x3c, 0x80);
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    put_u16(&mut b, coff, MACHINE_AMD64);
    put_u16(&mut b, coff + 2, 1);
    put_u32(&mut b, coff + 8, 0x500); // a symbol table to drop
    put_u32(&mut b, coff + 12, 1);
    put_u16(&mut b, coff + 16, 240);
    let o = coff + 20;
    put_u16(&mut b, o, 0x20b);
    put_u32(&mut b, o + 32, 0x200);
    put_u32(&mut b, o + 36, 0x200);
    put_u32(&mut b, o + 56, 0x1200);
    put_u32(&mut b, o + 60, 0x400);
    put_u32(&mut b, o + 108, 16);
    let t = o + 240;
    b[t..t + 5].copy_from_slice(b".text");
    put_u32(&mut b, t + 8, 0x10);
    put_u32(&mut b, t + 12, 0x1000);
    put_u32(&mut b, t + 16, 0x200);
    put_u32(&mut b, t + 20, 0x400);
    put_u32(&mut b, t + 36, 0x6000_0020);
    b[0x400..0x410].fill(0xcc);
    b[0x500..0x512].copy_from_slice(b"symbols+stringtab!");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_sections_are_aligned_and_the_headers_follow() {
        let stub = test_stub();
        let out = append_sections(
            &stub,
            &[(".osrel", b"ID=ember\n"), (".linux", &[7u8; 0x1234])],
        )
        .unwrap();
        let img = PeImage::parse(&out).unwrap();
        assert_eq!(img.sections.len(), 3);
        let osrel = img.section(".osrel").unwrap();
        assert_eq!(osrel.virtual_address, 0x2000, "first page after .text");
        assert_eq!(
            osrel.pointer_to_raw_data,
            0x400 + 0x200,
            "symbol table dropped"
        );
        assert_eq!(osrel.virtual_size, 9);
        assert_eq!(osrel.size_of_raw_data, 0x200);
        let linux = img.section(".linux").unwrap();
        assert_eq!(linux.virtual_address, 0x3000);
        assert_eq!(linux.pointer_to_raw_data, 0x800);
        assert_eq!(linux.size_of_raw_data, 0x1400);
        assert_eq!(img.section_bytes(&out, linux), vec![7u8; 0x1234]);
        assert_eq!(u32_at(&out, img.opt + opt::SIZE_OF_IMAGE.start), 0x5000);
        assert_eq!(
            u32_at(&out, img.coff + coff::POINTER_TO_SYMBOL_TABLE.start),
            0
        );
        assert_eq!(out.len(), 0x800 + 0x1400);
        for s in &img.sections[1..] {
            assert_eq!(s.virtual_address % PAGE, 0);
            assert_eq!(s.pointer_to_raw_data % img.file_alignment, 0);
        }
        let at = img.checksum_offset();
        assert_eq!(u32_at(&out, at), checksum(&out, at));
        // Same inputs, same bytes.
        let again = append_sections(
            &stub,
            &[(".osrel", b"ID=ember\n"), (".linux", &[7u8; 0x1234])],
        )
        .unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn the_checksum_matches_a_known_image() {
        // Debian's systemd-stub (systemd 252) declares CheckSum 0x1aa6c.
        let path = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
        let Ok(stub) = std::fs::read(path) else {
            panic!("{path} missing: scripts/install-deps installs systemd-boot-efi");
        };
        let img = PeImage::parse(&stub).unwrap();
        let at = img.checksum_offset();
        assert_eq!(checksum(&stub, at), u32_at(&stub, at));
    }

    #[test]
    fn authenticode_skips_the_checksum_and_certificate_entry_only() {
        let uki = append_sections(&test_stub(), &[(".linux", b"kernel")]).unwrap();
        let img = PeImage::parse(&uki).unwrap();
        let digest = |b: &[u8]| img.authenticode(b, HashAlg::Sha256).unwrap();
        let genuine = digest(&uki);
        let mut other_sum = uki.clone();
        other_sum[img.checksum_offset()] ^= 0xff;
        assert_eq!(digest(&other_sum), genuine);
        let mut patched = uki.clone();
        let linux = img.section(".linux").unwrap();
        patched[linux.pointer_to_raw_data as usize] ^= 1;
        assert_ne!(digest(&patched), genuine);
        let mut appended = uki.clone();
        appended.extend_from_slice(b"trailing data is hashed too");
        assert_ne!(digest(&appended), genuine);
        assert!(img.authenticode(&uki, HashAlg::Sha1).is_err());
    }

    #[test]
    fn hostile_headers_are_refused_not_panicked_on() {
        let stub = test_stub();
        for cut in [0, 0x3f, 0x85, 0x100, 0x3a0, 0x500] {
            assert!(
                matches!(PeImage::parse(&stub[..cut]), Err(PeError::Truncated { .. })),
                "cut at {cut:#x}"
            );
        }
        let mut bad = stub.clone();
        put_u32(&mut bad, 0x3c, u32::MAX);
        assert!(matches!(
            PeImage::parse(&bad),
            Err(PeError::Truncated { .. })
        ));
        let mut bad = stub.clone();
        put_u16(&mut bad, 0x84, 0x14c);
        assert_eq!(
            PeImage::parse(&bad).unwrap_err(),
            PeError::UnsupportedMachine(0x14c)
        );
        let mut bad = stub.clone();
        put_u32(&mut bad, 0x84 + 20 + 36, 0x300);
        assert!(matches!(
            PeImage::parse(&bad),
            Err(PeError::BadAlignment { .. })
        ));
        let mut bad = stub.clone();
        // A section whose data lies past the end of the file.
        put_u32(&mut bad, 0x84 + 20 + 240 + 20, 0x10_0000);
        assert!(matches!(
            PeImage::parse(&bad),
            Err(PeError::Truncated { .. })
        ));
        let mut signed = stub.clone();
        put_u32(&mut signed, 0x84 + 20 + 112 + 32, 0x500);
        put_u32(&mut signed, 0x84 + 20 + 112 + 36, 0x10);
        assert_eq!(append_sections(&signed, &[]).unwrap_err(), PeError::Signed);
        assert!(matches!(
            append_sections(&stub, &[("linux", b"x")]),
            Err(PeError::BadSectionName(_))
        ));
        // Header area: the table starts at 0x188 and one header is used, so
        // 0x400 bytes of headers leave room for 14 more.
        let many: Vec<(&str, &[u8])> = (0..16).map(|_| (".x", &b"1"[..])).collect();
        assert!(matches!(
            append_sections(&stub, &many),
            Err(PeError::NoRoomForHeaders { .. })
        ));
    }
}
