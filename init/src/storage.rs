//! Minimal mutability and node storage, applied after the overlay is in
//! place and before the runtime starts:
//!
//! 1. the scratch disk, when node.conf names one, is formatted (every boot:
//!    its contents are ephemeral) with the image's mkfs;
//! 2. each writable path becomes its own size-limited tmpfs (or the scratch
//!    disk, at `scratch_mount`), with what the initrd and the overlay put
//!    there moved onto it, so a runaway log fills its own mount and not the
//!    node's RAM;
//! 3. /etc/resolv.conf becomes a link into /run, where lease renewals write;
//! 4. sysctls for a Kubernetes node are set;
//! 5. `/` (the tmpfs holding the initrd and the overlay) is remounted
//!    read-only: /init, the modules and the overlay's files stay as booted.
//!
//! /proc, /sys, /dev, /run and /tmp are separate mounts from the first
//! phase on and stay writable; listing /run or /tmp only sets their size.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use ember_fs::gpt::{Guid, ESP_TYPE};
use rustix::fd::AsFd;
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{mount, mount_remount, MountFlags};

use crate::supervisor::{self, Event, Supervisor};
use crate::{clock, disks, fsutil, kmod, mounts, rootfs, Error, ErrorKind};

/// What rke2 writes to on a node, with tmpfs size limits (`25%` is of RAM).
/// The paths are rke2's data-dir (/var/lib/rancher/rke2), its config
/// (/etc/rancher), kubelet's root (/var/lib/kubelet), CNI (/etc/cni,
/// /opt/cni/bin, /var/lib/cni) and pod/container logs (/var/log); the
/// book's "Node storage" page cites rke2's documentation for each.
pub const DEFAULT_WRITABLE: &[(&str, &str)] = &[
    ("/run", "25%"),
    ("/tmp", "10%"),
    ("/root", "64m"),
    ("/etc/rancher", "64m"),
    ("/etc/cni", "16m"),
    ("/opt/cni", "256m"),
    ("/var", "10%"),
    ("/var/lib/rancher", "50%"),
    ("/var/lib/kubelet", "25%"),
    ("/var/lib/cni", "64m"),
    ("/var/log", "512m"),
];

/// Kernel settings for a Kubernetes node. A default the kernel lacks is a
/// warning; a node.conf `sysctl.*` that cannot be set fails the boot.
pub const DEFAULT_SYSCTLS: &[(&str, &str)] = &[
    ("kernel.kptr_restrict", "1"),
    ("kernel.dmesg_restrict", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("fs.inotify.max_user_instances", "8192"),
    ("fs.inotify.max_user_watches", "524288"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

/// The filesystem label that marks a disk as Ember's scratch disk.
pub const SCRATCH_LABEL: &str = "ember-scratch";
/// Where resolv.conf lives once /etc is read-only.
const RESOLV_CONF: &str = "/run/ember/resolv.conf";
/// How long mkfs may take before the boot gives up on the disk.
const MKFS_TIMEOUT_MS: u64 = 300_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writable {
    pub path: String,
    /// tmpfs `size=`: bytes with k/m/g, or a percentage of RAM.
    pub size: String,
}

/// Which disk or partition becomes scratch storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A GPT partition by its name (`partlabel:NAME`).
    Label(String),
    /// A GPT partition by its type GUID (`parttype:GUID`).
    Type(Guid),
    /// The first whole disk with no partitions and nothing on it, or one
    /// already carrying Ember's scratch label (`first-empty`).
    FirstEmpty,
}

/// node.conf's storage keys.
impl core::fmt::Display for Selector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Selector::Label(label) => write!(f, "partlabel:{label}"),
            Selector::Type(guid) => write!(f, "parttype:{guid}"),
            Selector::FirstEmpty => f.write_str("first-empty"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConf {
    /// `writable`: replaces the default list.
    pub replace: Option<Vec<Writable>>,
    /// `writable_extra`: added to (or overriding sizes in) the list.
    pub extra: Vec<Writable>,
    /// `scratch_disk`.
    pub scratch: Option<Selector>,
    /// `scratch_mount`: where the scratch disk goes.
    pub scratch_mount: String,
    /// `mkfs`: the mkfs program carried in the image.
    pub mkfs: String,
    /// `sysctl.KEY = VALUE` lines.
    pub sysctls: Vec<(String, String)>,
}

impl Default for StorageConf {
    fn default() -> Self {
        StorageConf {
            replace: None,
            extra: Vec::new(),
            scratch: None,
            scratch_mount: String::from("/var/lib/rancher"),
            mkfs: String::from("/sbin/mkfs.ext4"),
            sysctls: Vec::new(),
        }
    }
}

impl StorageConf {
    /// Takes one node.conf line; `Ok(false)` when `key` is not a storage key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, &'static str> {
        match key {
            "writable" => self.replace = Some(parse_writable(value)?),
            "writable_extra" => self.extra.extend(parse_writable(value)?),
            "scratch_disk" => self.scratch = parse_selector(value)?,
            "scratch_mount" => self.scratch_mount = absolute_path(value)?,
            "mkfs" => self.mkfs = absolute_path(value)?,
            _ => match key.strip_prefix("sysctl.") {
                Some(name) if valid_sysctl_name(name) => {
                    self.sysctls.push((String::from(name), String::from(value)))
                }
                Some(_) => return Err("sysctl.NAME: NAME must be dotted words"),
                None => return Ok(false),
            },
        }
        Ok(true)
    }

    /// The effective writable list, parents before children (so /var/log
    /// mounts on top of /var), the scratch mount included.
    pub fn writable(&self) -> Vec<Writable> {
        let mut list: Vec<Writable> = match &self.replace {
            Some(list) => list.clone(),
            None => DEFAULT_WRITABLE
                .iter()
                .map(|(p, s)| Writable {
                    path: String::from(*p),
                    size: String::from(*s),
                })
                .collect(),
        };
        for w in &self.extra {
            match list.iter().position(|x| x.path == w.path) {
                Some(at) => list[at] = w.clone(),
                None => list.push(w.clone()),
            }
        }
        if self.scratch.is_some() && !list.iter().any(|w| w.path == self.scratch_mount) {
            list.push(Writable {
                path: self.scratch_mount.clone(),
                size: String::from("100%"),
            });
        }
        // Parents before children, by insertion: a sort's code would cost
        // more of /init's size budget than these few entries justify.
        let mut ordered: Vec<Writable> = Vec::with_capacity(list.len());
        for w in list {
            let at = ordered
                .iter()
                .position(|o| (depth(&o.path), o.path.as_str()) > (depth(&w.path), w.path.as_str()))
                .unwrap_or(ordered.len());
            ordered.insert(at, w);
        }
        ordered
    }
}

fn depth(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

fn absolute_path(value: &str) -> Result<String, &'static str> {
    let path = value.trim_end_matches('/');
    let clean = path.starts_with('/')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    match clean {
        true => Ok(String::from(path)),
        false => Err("expected an absolute path without . or .. components, not /"),
    }
}

/// `PATH[:SIZE], ...`; SIZE defaults to 10% of RAM.
fn parse_writable(text: &str) -> Result<Vec<Writable>, &'static str> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (path, size) = item.split_once(':').unwrap_or((item, "10%"));
        let digits = size.trim_end_matches(['k', 'm', 'g', '%']);
        let suffix_ok = size.len() - digits.len() <= 1;
        if digits.is_empty() || !suffix_ok || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("writable: SIZE must be a number with k, m, g or %");
        }
        out.push(Writable {
            path: absolute_path(path)?,
            size: String::from(size),
        });
    }
    Ok(out)
}

fn parse_selector(value: &str) -> Result<Option<Selector>, &'static str> {
    Ok(Some(match value {
        "none" => return Ok(None),
        "first-empty" => Selector::FirstEmpty,
        _ => match value.split_once(':') {
            Some(("partlabel", label)) if !label.is_empty() => Selector::Label(String::from(label)),
            Some(("parttype", guid)) => match Guid::parse(guid) {
                Some(g) if g == ESP_TYPE => return Err("scratch_disk: the ESP is never scratch"),
                Some(g) => Selector::Type(g),
                None => return Err("scratch_disk parttype: expected a GUID"),
            },
            _ => {
                return Err(
                    "scratch_disk must be partlabel:NAME, parttype:GUID, first-empty or none",
                )
            }
        },
    }))
}

fn valid_sysctl_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Applies the storage configuration; see the module comment for the order.
/// Returns the path of resolv.conf from now on.
pub fn apply(conf: &StorageConf, sup: &mut Supervisor) -> Result<&'static str, Error> {
    let list = conf.writable();
    let scratch = match &conf.scratch {
        Some(selector) => Some(prepare_scratch(selector, &conf.mkfs, sup)?),
        None => None,
    };
    let table = fsutil::read_text("/proc/self/mounts")?;
    for w in &list {
        let device = scratch.as_deref().filter(|_| w.path == conf.scratch_mount);
        make_writable(&table, w, device)?;
    }
    if scratch.is_none() {
        let ram = limit_mib(&conf.scratch_mount);
        crate::info!(
            "storage: no scratch disk; {} is RAM (tmpfs, up to {ram} MiB): container images and writable layers count against the node's memory",
            conf.scratch_mount
        );
    }
    let resolv = match list.iter().any(|w| w.path == "/etc") {
        true => ember_net::resolv::PATH,
        false => move_resolv_conf()?,
    };
    set_sysctls(&conf.sysctls)?;
    mount_remount("/", MountFlags::RDONLY, "").map_err(|errno| {
        Error::new(ErrorKind::Mount {
            target: "/ (read-only)",
            errno,
        })
    })?;
    let mut summary = String::new();
    for w in &list {
        let _ = write!(summary, " {} ({} MiB)", w.path, limit_mib(&w.path));
    }
    crate::info!("storage: / is read-only; writable:{summary}");
    Ok(resolv)
}

/// The size of the filesystem at `path`, in MiB (a tmpfs's limit).
fn limit_mib(path: &str) -> u64 {
    rfs::statfs(path)
        .map(|s| s.f_blocks.saturating_mul(s.f_bsize as u64) >> 20)
        .unwrap_or(0)
}

/// Mounts a fresh tmpfs (or `device`) at `w.path`, keeping what was there.
fn make_writable(table: &str, w: &Writable, device: Option<&str>) -> Result<(), Error> {
    let fail = |what: &str, errno: Errno| {
        Error::new(ErrorKind::Storage(
            format!("{}: {what}: {errno}", w.path).into(),
        ))
    };
    if device.is_none() && mounts::is_mount_point(table, &w.path) {
        // An API filesystem of the first phase (/run, /tmp): only the limit.
        let data = format!("size={}", w.size);
        return mount_remount(
            w.path.as_str(),
            MountFlags::NOSUID | MountFlags::NODEV,
            data.as_str(),
        )
        .map_err(|e| fail("set tmpfs size", e));
    }
    fsutil::mkdir_all(&w.path, 0o755)?;
    let st = rfs::lstat(w.path.as_str()).map_err(|e| fail("stat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(fail("not a directory in the image", Errno::NOTDIR));
    }
    // The old contents go aside on the same filesystem (a rename), the new
    // mount takes the path, and the contents move onto it.
    let stage = format!("{}.ember-stage", w.path);
    rfs::rename(w.path.as_str(), stage.as_str()).map_err(|e| fail("set contents aside", e))?;
    rfs::mkdir(w.path.as_str(), Mode::from_raw_mode(st.st_mode & 0o7777))
        .map_err(|e| fail("recreate", e))?;
    match device {
        Some(dev) => mount(dev, w.path.as_str(), "ext4", MountFlags::NODEV, None)
            .map_err(|e| fail(&format!("mount scratch disk {dev}"), e))?,
        None => {
            let data = format!("mode={:o},size={}", st.st_mode & 0o7777, w.size);
            let data = alloc::ffi::CString::new(data).map_err(|_| fail("size", Errno::INVAL))?;
            mount(
                "tmpfs",
                w.path.as_str(),
                "tmpfs",
                MountFlags::NODEV,
                Some(data.as_c_str()),
            )
            .map_err(|e| fail("mount tmpfs", e))?
        }
    }
    let open = |p: &str| {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", e))
    };
    let (from, to) = (open(&stage)?, open(&w.path)?);
    rootfs::move_tree(from.as_fd(), to.as_fd())?;
    let _ = rfs::fchmod(&to, Mode::from_raw_mode(st.st_mode & 0o7777));
    let _ = rfs::fchown(
        &to,
        Some(rustix::process::Uid::from_raw(st.st_uid)),
        Some(rustix::process::Gid::from_raw(st.st_gid)),
    );
    rfs::rmdir(stage.as_str()).map_err(|e| fail("remove staging directory", e))
}

/// Finds and formats the scratch disk; returns its device path.
fn prepare_scratch(selector: &Selector, mkfs: &str, sup: &mut Supervisor) -> Result<String, Error> {
    let device = match selector {
        Selector::Label(label) => disks::find_partition(|p| p.name == *label)?,
        Selector::Type(guid) => disks::find_partition(|p| p.type_guid == *guid)?,
        Selector::FirstEmpty => first_empty_disk()?.map(|disk| disks::PartitionDevice {
            partition: disk.clone(),
            disk,
            type_guid: Guid::ZERO,
        }),
    };
    let Some(device) = device else {
        return Err(Error::new(ErrorKind::Storage(
            format!(
                "scratch disk {selector}: no such disk or partition (no silent fallback to RAM)"
            )
            .into(),
        )));
    };
    if device.type_guid == ESP_TYPE {
        return Err(Error::new(ErrorKind::Storage(
            format!(
                "scratch disk {selector} is the ESP {}: refused",
                device.partition
            )
            .into(),
        )));
    }
    let dev = device.partition;
    // Carried in the initrd but loaded only now (modules.list `ext4?`):
    // diskless nodes do not pay for them at boot.
    let fs_modules = [String::from("crc32c_generic"), String::from("ext4")];
    let report = kmod::load_names(&fs_modules)?;
    if !report.missing.is_empty() || !report.failed.is_empty() {
        return Err(Error::new(ErrorKind::Storage(
            format!(
            "scratch disk {dev}: the ext4 modules are not in the initrd or the kernel refused them"
        )
            .into(),
        )));
    }
    // No journal: the disk is wiped on every boot, so crash recovery buys
    // nothing; lazy init keeps mkfs to seconds on large disks.
    let argv = [
        mkfs,
        "-F",
        "-q",
        "-L",
        SCRATCH_LABEL,
        "-O",
        "^has_journal",
        "-E",
        "lazy_itable_init=1,nodiscard",
        dev.as_str(),
    ];
    let start = clock::now_ms();
    let status = run(sup, &argv)?;
    if status != 0 {
        return Err(Error::new(ErrorKind::Storage(
            format!("scratch disk {dev}: {mkfs} exited with status {status}").into(),
        )));
    }
    crate::info!(
        "storage: scratch disk {dev} wiped and formatted in {} ms",
        clock::now_ms().saturating_sub(start)
    );
    Ok(dev)
}

/// Runs a program to completion; its exit status (128+signal if killed).
fn run(sup: &mut Supervisor, argv: &[&str]) -> Result<i32, Error> {
    let pid = sup.spawn(argv, &["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])?;
    let deadline = clock::now_ms() + MKFS_TIMEOUT_MS;
    while clock::now_ms() < deadline {
        match sup.wait(deadline.saturating_sub(clock::now_ms())) {
            Event::Exited { pid: p, status, .. } if p == pid => {
                return Ok(status
                    .exit_status()
                    .or(status.terminating_signal().map(|s| 128 + s))
                    .unwrap_or(1));
            }
            Event::Exited { name, status, .. } => {
                crate::info!("{name} {}", supervisor::describe(status))
            }
            _ => {}
        }
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    Err(Error::new(ErrorKind::Storage(
        format!("{} did not finish in {} s", argv[0], MKFS_TIMEOUT_MS / 1000).into(),
    )))
}

/// The first whole disk that has no partitions and whose first 256 KiB are
/// zeros (no partition table, LVM, RAID or filesystem signature there), or
/// that already carries Ember's scratch filesystem.
fn first_empty_disk() -> Result<Option<String>, Error> {
    for disk in disks::whole_disks()? {
        let sys = format!("/sys/class/block/{disk}");
        let attr = |name: &str| fsutil::read_text(&format!("{sys}/{name}")).unwrap_or_default();
        let virtual_dev = ["zram", "sr", "nbd", "dm-", "md"]
            .iter()
            .any(|p| disk.starts_with(p));
        if virtual_dev
            || attr("ro").trim() != "0"
            || attr("size").trim() == "0"
            || fsutil::list_dir(&sys)
                .unwrap_or_default()
                .iter()
                .any(|child| fsutil::exists(&format!("{sys}/{child}/partition")))
        {
            continue;
        }
        let dev = format!("/dev/{disk}");
        let Ok(fd) = rfs::open(
            dev.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let mut head = alloc::vec![0u8; 256 * 1024];
        let mut done = 0;
        while done < head.len() {
            match rustix::io::pread(&fd, &mut head[done..], done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(_) => break,
            }
        }
        if done == head.len() && (head.iter().all(|&b| b == 0) || is_ember_scratch(&head)) {
            return Ok(Some(dev));
        }
        crate::info!("storage: {dev} is not empty; not taken as scratch");
    }
    Ok(None)
}

/// An ext2/3/4 superblock (at 1024) with magic 0xEF53 and Ember's label.
fn is_ember_scratch(head: &[u8]) -> bool {
    let Some(sb) = head.get(1024..1024 + 136) else {
        return false;
    };
    let label = &sb[120..136];
    let len = label.iter().position(|&b| b == 0).unwrap_or(16);
    sb[56..58] == [0x53, 0xEF] && &label[..len] == SCRATCH_LABEL.as_bytes()
}

/// Moves resolv.conf to /run and leaves a link, so lease renewals can
/// still rewrite it once /etc is read-only.
fn move_resolv_conf() -> Result<&'static str, Error> {
    let etc = ember_net::resolv::PATH;
    let current = fsutil::read_file(etc).unwrap_or_default();
    fsutil::mkdir_all("/run/ember", 0o755)?;
    fsutil::write_file(RESOLV_CONF, &current, 0o644)?;
    match rfs::unlink(etc) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(errno) => {
            return Err(Error::new(ErrorKind::Write {
                path: etc.into(),
                errno,
            }))
        }
    }
    rfs::symlink(RESOLV_CONF, etc).map_err(|errno| {
        Error::new(ErrorKind::Write {
            path: etc.into(),
            errno,
        })
    })?;
    Ok(RESOLV_CONF)
}

fn set_sysctls(configured: &[(String, String)]) -> Result<(), Error> {
    let defaults = DEFAULT_SYSCTLS.iter().map(|(k, v)| (*k, *v, false));
    let ours = configured
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str(), true));
    for (key, value, required) in defaults.chain(ours) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        match fsutil::write_file(&path, value.as_bytes(), 0o644) {
            Ok(()) => {}
            Err(e) if required => {
                return Err(Error::new(ErrorKind::Storage(
                    format!("node.conf sysctl.{key} = {value}: {e}").into(),
                )))
            }
            Err(e) => crate::warn!("storage: default sysctl {key}={value} not set: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(lines: &[(&str, &str)]) -> Result<StorageConf, &'static str> {
        let mut c = StorageConf::default();
        for (k, v) in lines {
            assert!(c.set(k, v)?, "{k} is a storage key");
        }
        Ok(c)
    }

    fn paths(c: &StorageConf) -> Vec<(String, String)> {
        c.writable().into_iter().map(|w| (w.path, w.size)).collect()
    }

    #[test]
    fn defaults_mount_parents_before_children() {
        let list = StorageConf::default().writable();
        let at = |p: &str| list.iter().position(|w| w.path == p).unwrap();
        assert!(at("/var") < at("/var/log"));
        assert!(at("/var") < at("/var/lib/rancher"));
        assert!(at("/etc/rancher") < at("/var/lib/kubelet"));
    }

    #[test]
    fn node_conf_replaces_extends_and_adds_the_scratch_mount() {
        let c = conf(&[
            ("writable", "/run:16m, /var/log:8m"),
            ("writable_extra", "/srv/data:1g,/var/log:32m"),
            ("scratch_disk", "partlabel:ember-scratch"),
            ("scratch_mount", "/var/lib/containerd/"),
        ])
        .unwrap();
        let want = [
            ("/run", "16m"),
            ("/srv/data", "1g"),
            ("/var/log", "32m"),
            ("/var/lib/containerd", "100%"),
        ];
        let got = paths(&c);
        let got: Vec<(&str, &str)> = got.iter().map(|(p, s)| (p.as_str(), s.as_str())).collect();
        assert_eq!(got, want);
        assert_eq!(
            c.scratch,
            Some(Selector::Label(String::from("ember-scratch")))
        );
    }

    #[test]
    fn selectors_and_sysctls_parse() {
        let c = conf(&[
            (
                "scratch_disk",
                "parttype:0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            ),
            ("sysctl.vm.max_map_count", "262144"),
        ])
        .unwrap();
        assert!(matches!(c.scratch, Some(Selector::Type(_))));
        assert_eq!(
            c.sysctls,
            [(String::from("vm.max_map_count"), String::from("262144"))]
        );
        assert_eq!(
            conf(&[("scratch_disk", "first-empty")]).unwrap().scratch,
            Some(Selector::FirstEmpty)
        );
        assert_eq!(conf(&[("scratch_disk", "none")]).unwrap().scratch, None);
        assert!(!StorageConf::default().set("role", "agent").unwrap());
    }

    #[test]
    fn bad_values_are_refused() {
        for (k, v) in [
            ("writable", "relative:1m"),
            ("writable", "/:1m"),
            ("writable", "/a/../b"),
            ("writable", "/x:lots"),
            ("writable", "/x:m"),
            ("writable", "/x:1mm"),
            (
                "scratch_disk",
                "parttype:C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            ),
            ("scratch_disk", "parttype:nope"),
            ("scratch_disk", "partlabel:"),
            ("scratch_disk", "sda"),
            ("scratch_mount", "var"),
            ("sysctl.", "1"),
            ("sysctl.a..b", "1"),
            ("sysctl.a/b", "1"),
        ] {
            assert!(StorageConf::default().set(k, v).is_err(), "{k} = {v}");
        }
    }

    #[test]
    fn ember_scratch_is_recognised_by_its_superblock() {
        let mut head = alloc::vec![0u8; 4096];
        head[1024 + 56] = 0x53;
        head[1024 + 57] = 0xEF;
        head[1024 + 120..1024 + 120 + SCRATCH_LABEL.len()]
            .copy_from_slice(SCRATCH_LABEL.as_bytes());
        assert!(is_ember_scratch(&head));
        head[1024 + 120] = b'x';
        assert!(!is_ember_scratch(&head));
        assert!(!is_ember_scratch(&head[..1500]));
    }
}
