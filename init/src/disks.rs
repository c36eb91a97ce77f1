//! The node's disks and their GPT partitions: what the last-known-good ESP
//! search and the storage phase's scratch-disk search both walk.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use ember_fs::gpt::{self, Guid};
use rustix::fs::{open, Mode, OFlags};

use crate::{fsutil, Error};

/// A partition device, e.g. `/dev/vda1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDevice {
    pub disk: String,
    pub partition: String,
    pub type_guid: Guid,
}

/// The whole disks' names in /sys/class/block (`vda`, `nvme0n1`), sorted,
/// without loop and RAM disks.
pub fn whole_disks() -> Result<Vec<String>, Error> {
    let mut disks = fsutil::list_dir("/sys/class/block")?;
    // Partitions have a `partition` attribute; whole disks do not.
    disks.retain(|disk| {
        !fsutil::exists(&format!("/sys/class/block/{disk}/partition"))
            && !disk.starts_with("loop")
            && !disk.starts_with("ram")
    });
    Ok(disks)
}

/// The first partition, on any whole disk with a valid GPT, that `wanted`
/// accepts.
pub fn find_partition(
    wanted: impl Fn(&gpt::Partition) -> bool,
) -> Result<Option<PartitionDevice>, Error> {
    find_partition_dyn(&wanted)
}

/// [`find_partition`]'s body, emitted once rather than per caller's
/// predicate (about 1.4 KB of /init each).
#[inline(never)]
fn find_partition_dyn(
    wanted: &dyn Fn(&gpt::Partition) -> bool,
) -> Result<Option<PartitionDevice>, Error> {
    for disk in whole_disks()? {
        let partitions = read_gpt(&disk).unwrap_or_default();
        let Some(part) = partitions.into_iter().find(|p| wanted(p)) else {
            continue;
        };
        let number = part.number;
        for child in fsutil::list_dir(&format!("/sys/class/block/{disk}")).unwrap_or_default() {
            let attr = format!("/sys/class/block/{disk}/{child}/partition");
            if fsutil::read_text(&attr)
                .map(|s| s.trim().parse::<u32>().ok() == Some(number))
                .unwrap_or(false)
            {
                return Ok(Some(PartitionDevice {
                    disk: format!("/dev/{disk}"),
                    partition: format!("/dev/{child}"),
                    type_guid: part.type_guid,
                }));
            }
        }
    }
    Ok(None)
}

/// The partitions of `disk`'s GPT; `None` for disks without a GPT, or with
/// a damaged one (logged at debug).
fn read_gpt(disk: &str) -> Option<Vec<gpt::Partition>> {
    let sector = fsutil::read_text(&format!("/sys/class/block/{disk}/queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|s| (512..=4096).contains(s))
        .unwrap_or(512);
    let fd = open(
        format!("/dev/{disk}").as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut head = vec![0u8; sector];
    rustix::io::pread(&fd, &mut head, sector as u64).ok()?;
    let header = match gpt::Header::parse(&head) {
        Ok(h) => h,
        Err(e) => {
            log::debug!("esp: /dev/{disk}: {e}");
            return None;
        }
    };
    let mut entries = vec![0u8; header.entries_len()];
    let mut done = 0;
    while done < entries.len() {
        match rustix::io::pread(
            &fd,
            &mut entries[done..],
            header.entries_lba * sector as u64 + done as u64,
        ) {
            Ok(0) | Err(_) => return None,
            Ok(n) => done += n,
        }
    }
    gpt::parse_entries(&header, &entries).ok()
}
