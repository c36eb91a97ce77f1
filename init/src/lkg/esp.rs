//! The EFI System Partition that holds last-known-good: the first partition
//! of type C12A7328-F81F-11D2-BA4B-00A0C93EC93B on any disk, mounted while
//! the init reads or writes a slot.

use alloc::format;
use alloc::string::String;

use ember_fs::gpt::ESP_TYPE;
use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::disks::{self, PartitionDevice};
use crate::{Error, ErrorKind};

/// Where the init mounts the ESP while it reads or writes last-known-good.
pub const MOUNT_POINT: &str = "/run/ember/esp";

/// Scans every whole disk's GPT for an ESP. `None` means diskless mode.
pub fn find() -> Result<Option<PartitionDevice>, Error> {
    disks::find_partition(|p| p.type_guid == ESP_TYPE)
}

/// The ESP mounted at [`MOUNT_POINT`]; unmounted (and so flushed) on drop.
pub struct Mounted {
    _private: (),
}

impl Mounted {
    pub fn mount(dev: &PartitionDevice, writable: bool) -> Result<Mounted, Error> {
        let _ = rustix::fs::mkdir("/run/ember", Mode::from_raw_mode(0o700));
        match rustix::fs::mkdir(MOUNT_POINT, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(errno) => {
                return Err(Error::new(ErrorKind::Mount {
                    target: MOUNT_POINT,
                    errno,
                }))
            }
        }
        let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        if !writable {
            flags |= MountFlags::RDONLY;
        }
        // flush: write back each file on close, so a power cut loses at most
        // the file being written; the A/B scheme covers that one.
        let data = if writable {
            c"umask=0077,flush"
        } else {
            c"umask=0077"
        };
        mount(
            dev.partition.as_str(),
            MOUNT_POINT,
            "vfat",
            flags,
            Some(data),
        )
        .map_err(|errno| {
            Error::new(ErrorKind::Mount {
                target: MOUNT_POINT,
                errno,
            })
        })?;
        Ok(Mounted { _private: () })
    }

    pub fn path(&self, rel: &str) -> String {
        format!("{MOUNT_POINT}/{rel}")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        rustix::fs::sync();
        if let Err(e) = unmount(MOUNT_POINT, UnmountFlags::empty()) {
            crate::warn!("esp: unmount {MOUNT_POINT}: {e}; detaching");
            let _ = unmount(MOUNT_POINT, UnmountFlags::DETACH);
        }
    }
}
