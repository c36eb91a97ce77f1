//! Time since the kernel started, the stamp on every log line.

use rustix::time::{clock_gettime, ClockId};

/// Milliseconds of CLOCK_BOOTTIME: comparable with the kernel's own log
/// timestamps, and still right after a suspend.
pub fn now_ms() -> u64 {
    let ts = clock_gettime(ClockId::Boottime);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// CPU time PID 1 itself has used (all its threads, not its children), in
/// milliseconds: the init's own work, as opposed to waiting on the network,
/// the TPM or a child.
pub fn cpu_ms() -> u64 {
    let ts = clock_gettime(ClockId::ProcessCPUTime);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Sleeps, retrying if a signal interrupts.
pub fn sleep_ms(ms: u64) {
    let mut req = rustix::time::Timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    loop {
        match rustix::thread::nanosleep(&req) {
            rustix::thread::NanosleepRelativeResult::Interrupted(rem) => req = rem,
            _ => return,
        }
    }
}
