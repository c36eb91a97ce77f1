//! GUID Partition Table views (UEFI spec §5.3): the header at LBA 1 and its
//! partition entries, parsed from byte slices with every offset checked.
//! Enough to find the EFI System Partition by type GUID on any disk.

use alloc::string::String;
use alloc::vec::Vec;

use crate::crc32::Crc32;
use crate::Error;

pub const SIGNATURE: &[u8; 8] = b"EFI PART";

/// A GUID in its on-disk byte order (first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the textual form `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub const fn from_str_const(s: &str) -> Guid {
        let b = s.as_bytes();
        let mut raw = [0u8; 16];
        // Text order of the 16 bytes; the first three groups are stored reversed.
        const ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut i = 0;
        let mut pos = 0;
        while i < 16 {
            if b[pos] == b'-' {
                pos += 1;
            }
            raw[ORDER[i]] = hex(b[pos]) << 4 | hex(b[pos + 1]);
            pos += 2;
            i += 1;
        }
        Guid(raw)
    }

    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses the textual form, refusing anything but 8-4-4-4-12 hex digits.
    pub fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        let well_formed = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        well_formed.then(|| Guid::from_str_const(s))
    }
}

impl core::fmt::Display for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        for (i, &at) in ORDER.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{:02X}", self.0[at])?;
        }
        Ok(())
    }
}

const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// The EFI System Partition type.
pub const ESP_TYPE: Guid = Guid::from_str_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");

mod field {
    use core::ops::Range;
    pub const SIGNATURE: Range<usize> = 0..8;
    pub const HEADER_SIZE: Range<usize> = 12..16;
    pub const HEADER_CRC: Range<usize> = 16..20;
    pub const ENTRIES_LBA: Range<usize> = 72..80;
    pub const ENTRY_COUNT: Range<usize> = 80..84;
    pub const ENTRY_SIZE: Range<usize> = 84..88;
    pub const ENTRIES_CRC: Range<usize> = 88..92;
    pub const MIN_HEADER: usize = 92;

    pub const E_TYPE: Range<usize> = 0..16;
    pub const E_UNIQUE: Range<usize> = 16..32;
    pub const E_FIRST: Range<usize> = 32..40;
    pub const E_LAST: Range<usize> = 40..48;
    pub const E_NAME: Range<usize> = 56..128;
    pub const MIN_ENTRY: usize = 128;
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The primary GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Parses the header sector (LBA 1) and checks its signature and CRC.
    pub fn parse(sector: &[u8]) -> Result<Header, Error> {
        if sector.len() < field::MIN_HEADER || &sector[field::SIGNATURE] != SIGNATURE {
            return Err(Error::GptNoSignature);
        }
        let size = le32(&sector[field::HEADER_SIZE]) as usize;
        if !(field::MIN_HEADER..=sector.len()).contains(&size) {
            return Err(Error::GptBadHeader("header size out of range"));
        }
        let mut copy = [0u8; 512];
        let n = size.min(copy.len());
        copy[..n].copy_from_slice(&sector[..n]);
        copy[field::HEADER_CRC].fill(0);
        let mut crc = Crc32::new();
        crc.update(&copy[..n]);
        if crc.value() != le32(&sector[field::HEADER_CRC]) {
            return Err(Error::GptBadHeader("header CRC mismatch"));
        }
        let header = Header {
            entries_lba: le64(&sector[field::ENTRIES_LBA]),
            entry_count: le32(&sector[field::ENTRY_COUNT]),
            entry_size: le32(&sector[field::ENTRY_SIZE]),
            entries_crc: le32(&sector[field::ENTRIES_CRC]),
        };
        if (header.entry_size as usize) < field::MIN_ENTRY
            || !header.entry_size.is_multiple_of(8)
            || header.entry_count > 1024
        {
            return Err(Error::GptBadHeader(
                "partition entry size or count out of range",
            ));
        }
        Ok(header)
    }

    /// Bytes of the partition entry array.
    pub fn entries_len(&self) -> usize {
        self.entry_count as usize * self.entry_size as usize
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as the kernel numbers partitions (`vda1`).
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

/// Parses the partition entry array (checked against the header's CRC);
/// unused (zero type) entries are skipped.
pub fn parse_entries(header: &Header, array: &[u8]) -> Result<Vec<Partition>, Error> {
    let len = header.entries_len();
    if array.len() < len {
        return Err(Error::GptBadHeader("partition entry array truncated"));
    }
    let mut crc = Crc32::new();
    crc.update(&array[..len]);
    if crc.value() != header.entries_crc {
        return Err(Error::GptBadHeader("partition entry array CRC mismatch"));
    }
    let mut parts = Vec::new();
    for (i, e) in array[..len]
        .chunks_exact(header.entry_size as usize)
        .enumerate()
    {
        let mut type_guid = [0u8; 16];
        type_guid.copy_from_slice(&e[field::E_TYPE]);
        if type_guid == [0; 16] {
            continue;
        }
        let mut unique = [0u8; 16];
        unique.copy_from_slice(&e[field::E_UNIQUE]);
        let units: Vec<u16> = e[field::E_NAME]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        parts.push(Partition {
            number: i as u32 + 1,
            type_guid: Guid(type_guid),
            unique_guid: Guid(unique),
            first_lba: le64(&e[field::E_FIRST]),
            last_lba: le64(&e[field::E_LAST]),
            name: char::decode_utf16(units)
                .map(|c| c.unwrap_or('\u{fffd}'))
                .collect(),
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_parse_checks_the_text_form() {
        assert_eq!(
            Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            Some(ESP_TYPE)
        );
        assert_eq!(ESP_TYPE.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B00-A0C93EC93B",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn esp_guid_has_the_on_disk_byte_order() {
        assert_eq!(
            ESP_TYPE.0,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
    }

    #[test]
    fn reads_a_table_written_by_sgdisk() {
        let dir = std::env::temp_dir().join(format!("ember-gpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let status = std::process::Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:+4M",
                "-t",
                "1:ef00",
                "-c",
                "1:EFI System",
                "-n",
                "2:0:0",
                "-t",
                "2:8300",
                "-c",
                "2:scratch",
            ])
            .arg(&img)
            .output()
            .expect("sgdisk (gdisk package) is required: run scripts/install-deps");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let disk = std::fs::read(&img).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let header = Header::parse(&disk[512..1024]).unwrap();
        let start = header.entries_lba as usize * 512;
        let parts = parse_entries(&header, &disk[start..start + header.entries_len()]).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].type_guid, ESP_TYPE);
        assert_eq!(parts[0].first_lba, 2048);
        assert_eq!(parts[0].last_lba, 2048 + 8192 - 1);
        assert_eq!(parts[0].name, "EFI System");
        assert_eq!(parts[1].name, "scratch");
        assert_ne!(parts[1].type_guid, ESP_TYPE);

        let mut corrupt = disk[512..1024].to_vec();
        corrupt[100] ^= 1;
        corrupt[72] ^= 1;
        assert_eq!(
            Header::parse(&corrupt),
            Err(Error::GptBadHeader("header CRC mismatch"))
        );
        let mut entries = disk[start..start + header.entries_len()].to_vec();
        entries[5] ^= 0xff;
        assert!(parse_entries(&header, &entries).is_err());
        assert_eq!(Header::parse(&[0u8; 512]), Err(Error::GptNoSignature));
        assert!(Header::parse(&disk[512..560]).is_err());
    }
}
