//! An EFI variable as the kernel's efivarfs shows it (one file per
//! variable, `Name-GUID`): a 32-bit little-endian attributes word, then
//! the variable's bytes. [`Variable`] is the view (length checked once),
//! [`LoaderEntry`] the one variable the init reads from it: systemd-boot's
//! `LoaderEntrySelected`, the identifier of the loader entry it booted, as
//! UTF-16LE with a terminating NUL (systemd's boot loader interface).
//!
//! Everything here is hostile input to the init: the firmware's store is
//! shared with whatever ran on the machine before, so a value is accepted
//! only in the shape systemd-boot writes it (volatile, boot service and
//! runtime access, a short printable entry identifier).

use alloc::string::String;

use crate::Error;

/// systemd-boot's vendor GUID (the boot loader interface's variables).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// Where efivarfs shows `LoaderEntrySelected`.
pub const LOADER_ENTRY_SELECTED: &str =
    "/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// EFI_VARIABLE_NON_VOLATILE: kept across resets.
pub const NON_VOLATILE: u32 = 0x1;
/// EFI_VARIABLE_BOOTSERVICE_ACCESS.
pub const BOOTSERVICE_ACCESS: u32 = 0x2;
/// EFI_VARIABLE_RUNTIME_ACCESS.
pub const RUNTIME_ACCESS: u32 = 0x4;

/// An entry identifier longer than this (UTF-16 code units, NUL excluded)
/// is refused: systemd-boot's are file names (`ember-a+3.conf`).
pub const MAX_ENTRY_UNITS: usize = 255;

mod field {
    use core::ops::{Range, RangeFrom};
    pub const ATTRIBUTES: Range<usize> = 0..4;
    pub const DATA: RangeFrom<usize> = 4..;
}

/// A zero-copy view of an efivarfs file: attributes, then data.
#[derive(Debug, Clone, Copy)]
pub struct Variable<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Variable<T> {
    /// Checks that the attributes word is there.
    pub fn new_checked(buffer: T) -> Result<Variable<T>, Error> {
        if buffer.as_ref().len() < field::ATTRIBUTES.end {
            return Err(Error::EfiVarTruncated);
        }
        Ok(Variable { buffer })
    }

    pub fn attributes(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::ATTRIBUTES];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

/// `LoaderEntrySelected`: the loader entry systemd-boot booted this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderEntry {
    /// The entry's identifier: its file name, with or without the boot
    /// counting suffix and `.conf` (`ember-a+2-1.conf`, `ember-a.conf`).
    pub id: String,
}

impl LoaderEntry {
    /// Parses the efivarfs file's bytes. Refused: a non-volatile variable
    /// (systemd-boot sets it volatile on every boot; one that survives a
    /// reset was written by something else, and keeps systemd-boot from
    /// setting its own), one without boot service and runtime access, an
    /// odd length, no terminating NUL, a NUL inside, and anything but
    /// printable ASCII (no separators, controls or other scripts to smuggle
    /// into the log or a path).
    pub fn parse(bytes: &[u8]) -> Result<LoaderEntry, Error> {
        let var = Variable::new_checked(bytes)?;
        let attrs = var.attributes();
        if attrs != BOOTSERVICE_ACCESS | RUNTIME_ACCESS {
            return Err(Error::EfiVarAttributes(attrs));
        }
        let data = var.data();
        if data.len() % 2 != 0 {
            return Err(Error::EfiVarOddLength);
        }
        let units = data.len() / 2;
        if units == 0 || units > MAX_ENTRY_UNITS + 1 {
            return Err(Error::EfiVarBadEntryId("empty or too long"));
        }
        let unit = |i: usize| u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        if unit(units - 1) != 0 {
            return Err(Error::EfiVarBadEntryId("no terminating NUL"));
        }
        let mut id = String::with_capacity(units - 1);
        for i in 0..units - 1 {
            match unit(i) {
                0 => return Err(Error::EfiVarBadEntryId("a NUL inside")),
                u @ 0x21..=0x7e if u != u16::from(b'/') && u != u16::from(b'\\') => {
                    id.push(char::from(u as u8))
                }
                _ => return Err(Error::EfiVarBadEntryId("not printable ASCII")),
            }
        }
        if id.is_empty() {
            return Err(Error::EfiVarBadEntryId("empty or too long"));
        }
        Ok(LoaderEntry { id })
    }

    /// The entry's name without `.conf` and the boot counting suffix
    /// (`+LEFT` or `+LEFT-DONE`): `ember-a+2-1.conf` → `ember-a`.
    pub fn base_name(&self) -> &str {
        let id = self.id.strip_suffix(".conf").unwrap_or(&self.id);
        match id.rsplit_once('+') {
            Some((base, count)) if is_boot_count(count) => base,
            _ => id,
        }
    }
}

/// `LEFT` or `LEFT-DONE`, decimal digits each.
fn is_boot_count(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        Some((left, done)) => digits(left) && digits(done),
        None => digits(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// An efivarfs file: `attrs`, then `text` as UTF-16LE with its NUL.
    fn file(attrs: u32, text: &str) -> Vec<u8> {
        let mut v = attrs.to_le_bytes().to_vec();
        for u in text.encode_utf16().chain([0]) {
            v.extend(u.to_le_bytes());
        }
        v
    }

    #[test]
    fn systemd_boots_entry_parses_and_names_its_base() {
        // The layout systemd-boot 252 writes (efivar_set with flags 0:
        // boot service and runtime access, volatile), spelled out.
        let bytes = [
            0x06, 0, 0, 0, b'e', 0, b'm', 0, b'b', 0, b'e', 0, b'r', 0, b'-', 0, b'a', 0, b'+', 0,
            b'3', 0, b'.', 0, b'c', 0, b'o', 0, b'n', 0, b'f', 0, 0, 0,
        ];
        let e = LoaderEntry::parse(&bytes).unwrap();
        assert_eq!(e.id, "ember-a+3.conf");
        assert_eq!(e.base_name(), "ember-a");
        for (id, base) in [
            ("ember-b+2-1.conf", "ember-b"),
            ("ember-b.conf", "ember-b"),
            ("ember-b", "ember-b"),
            ("ember-b+0-3", "ember-b"),
            ("ember-b+x.conf", "ember-b+x"),
            ("ember-b+1-.conf", "ember-b+1-"),
            ("auto-windows", "auto-windows"),
        ] {
            assert_eq!(
                LoaderEntry::parse(&file(6, id)).unwrap().base_name(),
                base,
                "{id}"
            );
        }
    }

    #[test]
    fn hostile_variables_are_refused_with_their_reason() {
        assert_eq!(LoaderEntry::parse(&[]), Err(Error::EfiVarTruncated));
        assert_eq!(LoaderEntry::parse(&[6, 0, 0]), Err(Error::EfiVarTruncated));
        // Non-volatile: planted by an earlier runtime, survives resets.
        assert_eq!(
            LoaderEntry::parse(&file(7, "ember-a.conf")),
            Err(Error::EfiVarAttributes(7))
        );
        assert_eq!(
            LoaderEntry::parse(&file(2, "ember-a.conf")),
            Err(Error::EfiVarAttributes(2))
        );
        assert_eq!(
            LoaderEntry::parse(&file(0x46, "ember-a.conf")),
            Err(Error::EfiVarAttributes(0x46))
        );
        let mut odd = file(6, "ember-a");
        odd.push(0);
        assert_eq!(LoaderEntry::parse(&odd), Err(Error::EfiVarOddLength));
        let mut unterminated = file(6, "ember-a");
        unterminated.truncate(unterminated.len() - 2);
        assert_eq!(
            LoaderEntry::parse(&unterminated),
            Err(Error::EfiVarBadEntryId("no terminating NUL"))
        );
        assert_eq!(
            LoaderEntry::parse(&6u32.to_le_bytes()),
            Err(Error::EfiVarBadEntryId("empty or too long"))
        );
        assert_eq!(
            LoaderEntry::parse(&file(6, "")),
            Err(Error::EfiVarBadEntryId("empty or too long"))
        );
        assert_eq!(
            LoaderEntry::parse(&file(6, "ember-a\0ember-b")),
            Err(Error::EfiVarBadEntryId("a NUL inside"))
        );
        for bad in [
            "ember a",
            "ember-a\n",
            "émber-a",
            "ember-\u{202e}a",
            "../a",
            "a\\b",
        ] {
            assert_eq!(
                LoaderEntry::parse(&file(6, bad)),
                Err(Error::EfiVarBadEntryId("not printable ASCII")),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_ENTRY_UNITS);
        assert!(LoaderEntry::parse(&file(6, &long)).is_ok());
        let longer = "a".repeat(MAX_ENTRY_UNITS + 1);
        assert_eq!(
            LoaderEntry::parse(&file(6, &longer)),
            Err(Error::EfiVarBadEntryId("empty or too long"))
        );
        // A lone surrogate half is not ASCII either.
        let mut v = 6u32.to_le_bytes().to_vec();
        v.extend([0x00, 0xd8, 0, 0]);
        assert_eq!(
            LoaderEntry::parse(&v),
            Err(Error::EfiVarBadEntryId("not printable ASCII"))
        );
    }
}
