//! Orderly shutdown: stop every process, flush and unmount filesystems,
//! then ask the kernel to halt, power off or reboot. Never returns.

use alloc::string::String;
use alloc::vec::Vec;

use rustix::mount::{mount_remount, unmount, MountFlags, UnmountFlags};
use rustix::process::{Pid, Signal};
use rustix::system::RebootCommand;

use crate::supervisor::{Request, Supervisor};
use crate::{clock, fsutil};

/// How long processes get between SIGTERM and SIGKILL.
const GRACE_MS: u64 = 5_000;

pub fn shutdown(sup: &mut Supervisor, request: Request) -> ! {
    crate::info!(
        "shutdown: {} requested; stopping all processes",
        name(request)
    );
    signal_all(Signal::TERM);
    let deadline = clock::now_ms() + GRACE_MS;
    while clock::now_ms() < deadline && !other_pids().is_empty() {
        let _ = sup.wait(100);
    }
    let left = other_pids();
    if !left.is_empty() {
        crate::warn!(
            "shutdown: {} processes ignored SIGTERM; sending SIGKILL",
            left.len()
        );
        signal_all(Signal::KILL);
        let deadline = clock::now_ms() + 1_000;
        while clock::now_ms() < deadline && !other_pids().is_empty() {
            let _ = sup.wait(50);
        }
    }
    rustix::fs::sync();
    unmount_all();
    rustix::fs::sync();
    let cmd = match request {
        Request::Halt => RebootCommand::Halt,
        Request::Poweroff => RebootCommand::PowerOff,
        Request::Reboot => RebootCommand::Restart,
    };
    crate::info!("shutdown: {}", name(request));
    // Only returns if the kernel refused; PID 1 must not exit.
    if let Err(err) = rustix::system::reboot(cmd) {
        crate::error!("reboot(2) failed: {err}; halting here");
    }
    loop {
        clock::sleep_ms(60_000);
    }
}

fn name(r: Request) -> &'static str {
    match r {
        Request::Halt => "halt",
        Request::Poweroff => "power off",
        Request::Reboot => "reboot",
    }
}

/// User-space processes other than us: numeric /proc entries whose
/// cmdline is not empty (kernel threads have an empty one).
fn other_pids() -> Vec<Pid> {
    let mut pids = Vec::new();
    for entry in fsutil::list_dir("/proc").unwrap_or_default() {
        let Ok(n) = entry.parse::<i32>() else {
            continue;
        };
        if n <= 1 {
            continue;
        }
        let cmdline =
            fsutil::read_file_raw(&alloc::format!("/proc/{n}/cmdline")).unwrap_or_default();
        if cmdline.is_empty() {
            continue;
        }
        if let Some(pid) = Pid::from_raw(n) {
            pids.push(pid);
        }
    }
    pids
}

fn signal_all(sig: Signal) {
    for pid in other_pids() {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Unmounts everything but the API filesystems, deepest first; what cannot
/// be unmounted is remounted read-only so its data is consistent.
fn unmount_all() {
    let table = fsutil::read_text("/proc/self/mounts").unwrap_or_default();
    let mut targets: Vec<String> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(String::from)
        .collect();
    targets.reverse();
    for t in targets {
        if t == "/"
            || t == "/proc"
            || t == "/sys"
            || t == "/dev"
            || t.starts_with("/dev/")
            || t.starts_with("/sys/")
        {
            continue;
        }
        if unmount(t.as_str(), UnmountFlags::empty()).is_err() {
            let _ = mount_remount(t.as_str(), MountFlags::RDONLY, "");
        }
    }
}
