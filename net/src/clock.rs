//! Clocks and waits on rustix: monotonic milliseconds for DHCP timers and
//! timeouts, wall-clock seconds for certificate validity.

use core::time::Duration;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::BorrowedFd;
use rustix::time::{clock_gettime, ClockId, Timespec};

pub fn monotonic_ms() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1000) + (t.tv_nsec as u64) / 1_000_000
}

/// Seconds since the Unix epoch, or `None` while the clock still reads 1970
/// (no RTC and no time source yet): then validity cannot be judged.
pub fn unix_seconds() -> Option<u64> {
    let t = clock_gettime(ClockId::Realtime);
    // 2020-01-01: anything earlier means the clock was never set.
    (t.tv_sec >= 1_577_836_800).then_some(t.tv_sec as u64)
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Waits until `fd` has `events` or `timeout` passes; true when ready.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: Duration,
) -> rustix::io::Result<bool> {
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    loop {
        match rustix::event::poll(&mut fds, Some(&timespec(timeout))) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

pub fn sleep(d: Duration) {
    let _ = rustix::event::poll(&mut [], Some(&timespec(d)));
}

/// Waits until `fd` is readable or `timeout` passes (for callers that do not
/// use rustix themselves).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> rustix::io::Result<bool> {
    wait_fd(fd, PollFlags::IN, timeout)
}
