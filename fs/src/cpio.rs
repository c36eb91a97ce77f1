//! The "newc" cpio format (SVR4 with no CRC), the only one the kernel's
//! initramfs unpacker reads.
//!
//! Each entry is a 110-byte ASCII header (magic `070701` then thirteen 8-digit
//! hex fields), the NUL-terminated name padded to 4 bytes, then the data
//! padded to 4 bytes. The archive ends with an entry named `TRAILER!!!`.
//! The writer is deterministic: it writes exactly what it is given, and the
//! caller controls order, inode numbers and times.

use alloc::vec::Vec;

use crate::Error;

pub const MAGIC: &[u8; 6] = b"070701";
pub const HEADER_LEN: usize = 110;
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`, as cpio carries them.
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFIFO: u32 = 0o010000;
}

/// Field order in a newc header, after the magic.
mod field {
    pub const INO: usize = 0;
    pub const MODE: usize = 1;
    pub const UID: usize = 2;
    pub const GID: usize = 3;
    pub const NLINK: usize = 4;
    pub const MTIME: usize = 5;
    pub const FILESIZE: usize = 6;
    pub const DEVMAJOR: usize = 7;
    pub const DEVMINOR: usize = 8;
    pub const RDEVMAJOR: usize = 9;
    pub const RDEVMINOR: usize = 10;
    pub const NAMESIZE: usize = 11;
    pub const CHECK: usize = 12;
    pub const COUNT: usize = 13;
}

/// The metadata of one cpio entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Path inside the archive, without a leading `/` (`init`, `lib/modules`).
    pub name: &'a str,
    pub ino: u32,
    /// Type and permission bits (`mode::S_IFREG | 0o755`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl<'a> Header<'a> {
    /// A header with the fields a reproducible image wants fixed: root-owned,
    /// one link, the given inode, mode and time.
    pub fn new(name: &'a str, ino: u32, mode: u32, mtime: u32) -> Self {
        let nlink = if mode & mode::S_IFMT == mode::S_IFDIR {
            2
        } else {
            1
        };
        Header {
            name,
            ino,
            mode,
            uid: 0,
            gid: 0,
            nlink,
            mtime,
            rdev_major: 0,
            rdev_minor: 0,
        }
    }
}

/// Where encoded bytes go: a `Vec`, a file, a compressor.
pub trait Output {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

impl Output for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writes newc entries to an [`Output`].
pub struct Writer<O: Output> {
    out: O,
    offset: u64,
}

impl<O: Output> Writer<O> {
    pub fn new(out: O) -> Self {
        Writer { out, offset: 0 }
    }

    /// Appends one entry. `data` is the file content, or the target for a
    /// symlink; it must be empty for directories and device nodes.
    pub fn entry(&mut self, header: &Header<'_>, data: &[u8]) -> Result<(), Error> {
        self.begin(header, data.len() as u64)?;
        self.put(data)?;
        self.pad()
    }

    /// Starts an entry whose `size` bytes of data follow through
    /// [`data`](Self::data), then [`end`](Self::end): large files need not
    /// be in memory at once.
    pub fn begin(&mut self, header: &Header<'_>, size: u64) -> Result<(), Error> {
        let kind = header.mode & mode::S_IFMT;
        if size != 0 && kind != mode::S_IFREG && kind != mode::S_IFLNK {
            return Err(Error::CpioDataOnNonFile);
        }
        if header.name.is_empty() || header.name.as_bytes().contains(&0) {
            return Err(Error::CpioBadName);
        }
        let size = u32::try_from(size).map_err(|_| Error::CpioTooLarge)?;
        let namesize = u32::try_from(header.name.len() + 1).map_err(|_| Error::CpioBadName)?;

        let mut fields = [0u32; field::COUNT];
        fields[field::INO] = header.ino;
        fields[field::MODE] = header.mode;
        fields[field::UID] = header.uid;
        fields[field::GID] = header.gid;
        fields[field::NLINK] = header.nlink;
        fields[field::MTIME] = header.mtime;
        fields[field::FILESIZE] = size;
        fields[field::DEVMAJOR] = 0;
        fields[field::DEVMINOR] = 0;
        fields[field::RDEVMAJOR] = header.rdev_major;
        fields[field::RDEVMINOR] = header.rdev_minor;
        fields[field::NAMESIZE] = namesize;
        fields[field::CHECK] = 0;

        let mut head = [0u8; HEADER_LEN];
        head[..6].copy_from_slice(MAGIC);
        for (i, value) in fields.iter().enumerate() {
            write_hex8(&mut head[6 + i * 8..6 + (i + 1) * 8], *value);
        }
        self.put(&head)?;
        self.put(header.name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// Data of the entry begun last; the caller gives exactly its size.
    pub fn data(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.put(bytes)
    }

    /// Ends the entry begun last (pads its data).
    pub fn end(&mut self) -> Result<(), Error> {
        self.pad()
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> Result<O, Error> {
        let trailer = Header {
            nlink: 1,
            ..Header::new(TRAILER, 0, 0, 0)
        };
        self.entry(&trailer, &[])?;
        Ok(self.out)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.offset += bytes.len() as u64;
        self.out.put(bytes)
    }

    fn pad(&mut self) -> Result<(), Error> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 3][..4 - rem])?;
        }
        Ok(())
    }
}

fn write_hex8(out: &mut [u8], value: u32) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = DIGITS[((value >> (28 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn header_layout_matches_newc() {
        let mut w = Writer::new(Vec::new());
        w.entry(&Header::new("init", 1, mode::S_IFREG | 0o755, 0), b"hi")
            .unwrap();
        let out = w.finish().unwrap();
        let expected_head = concat!(
            "070701", "00000001", "000081ED", "00000000", "00000000", "00000001", "00000000",
            "00000002", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"
        );
        assert_eq!(&out[..110], expected_head.as_bytes());
        // name "init\0" (5 bytes) after a 110-byte header pads to 116, data to 120.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..120], b"hi\0\0");
        assert_eq!(&out[120..126], MAGIC);
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn refuses_data_on_directories() {
        let mut w = Writer::new(Vec::new());
        let err = w
            .entry(&Header::new("d", 1, mode::S_IFDIR | 0o755, 0), b"x")
            .unwrap_err();
        assert_eq!(err, Error::CpioDataOnNonFile);
    }

    #[test]
    fn system_cpio_reads_back_what_we_wrote() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            panic!("cpio(1) is required for this test: run scripts/install-deps");
        };
        assert!(status.status.success());
        let mut w = Writer::new(Vec::new());
        w.entry(
            &Header::new("etc", 1, mode::S_IFDIR | 0o755, 1_700_000_000),
            &[],
        )
        .unwrap();
        w.entry(
            &Header::new("etc/hello", 2, mode::S_IFREG | 0o640, 1_700_000_000),
            b"hello world\n",
        )
        .unwrap();
        w.entry(
            &Header::new("etc/link", 3, mode::S_IFLNK | 0o777, 1_700_000_000),
            b"hello",
        )
        .unwrap();
        w.entry(
            &Header::new("odd", 4, mode::S_IFREG | 0o600, 5),
            &vec![7u8; 4097],
        )
        .unwrap();
        let archive = w.finish().unwrap();

        let dir = std::env::temp_dir().join(format!("ember-cpio-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let archive_path = dir.join("a.cpio");
        std::fs::write(&archive_path, &archive).unwrap();

        let list = std::process::Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&archive_path)
            .output()
            .unwrap();
        assert!(list.status.success());
        assert_eq!(
            String::from_utf8_lossy(&list.stdout),
            "etc\netc/hello\netc/link\nodd\n"
        );

        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let extract = std::process::Command::new("cpio")
            .args(["-i", "--quiet", "-d", "--preserve-modification-time", "-F"])
            .arg(&archive_path)
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(extract.success());
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(
            std::fs::read(root.join("etc/hello")).unwrap(),
            b"hello world\n"
        );
        let meta = std::fs::metadata(root.join("etc/hello")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::read_link(root.join("etc/link")).unwrap().to_str(),
            Some("hello")
        );
        assert_eq!(std::fs::read(root.join("odd")).unwrap(), vec![7u8; 4097]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
