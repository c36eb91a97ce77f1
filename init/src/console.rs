//! The init's `log` backend: every record goes to /dev/console (what an
//! operator at a serial console reads) and to /dev/kmsg (so it is in
//! `dmesg` and survives with the kernel's ring buffer), stamped with
//! milliseconds since the kernel started: `[    2345] ember: ...`.

use core::fmt::Write;
use core::sync::atomic::{AtomicI32, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use rustix::fd::BorrowedFd;

use crate::clock;

/// -1 until /dev/kmsg is open (it needs devtmpfs).
static KMSG_FD: AtomicI32 = AtomicI32::new(-1);

struct Console;

static LOGGER: Console = Console;

/// Installs the logger. stdout is the kernel-opened /dev/console.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Opens /dev/kmsg once devtmpfs is mounted. Failure only loses the copy
/// in the kernel's ring buffer, so it is not an error.
pub fn attach_kmsg() {
    use rustix::fs::{open, Mode, OFlags};
    if KMSG_FD.load(Ordering::Relaxed) >= 0 {
        return;
    }
    if let Ok(fd) = open(
        "/dev/kmsg",
        OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        KMSG_FD.store(rustix::fd::IntoRawFd::into_raw_fd(fd), Ordering::Relaxed);
    }
}

/// Writes one line at `level`: what the init's [`info!`](crate::info),
/// [`warn!`](crate::warn) and [`error!`](macro@crate::error) expand to. The
/// `log` crate's macros build a target, module path and source location at
/// every call site, which this console never prints (about 50 bytes of
/// code at each of the init's ~95 log lines); these pass only the level and
/// the message. Libraries' records still arrive through [`Log::log`].
#[inline(never)]
pub fn emit(level: Level, args: core::fmt::Arguments<'_>) {
    if level <= log::max_level() {
        LOGGER.log(&Record::builder().level(level).args(args).build());
    }
}

/// `info!("...", args)`: a line on the console and in the kernel log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::console::emit(::log::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// `warn!("...", args)`: a line tagged `warning:`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::console::emit(::log::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// `error!("...", args)`: a line tagged `error:`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::console::emit(::log::Level::Error, ::core::format_args!($($arg)+))
    };
}

/// A fixed-size line buffer: logging must not allocate or fail.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Line {
            buf: [0; 512],
            len: 0,
        };
        let tag = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        let _ = write!(
            line,
            "[{:>8}] ember: {}{}",
            clock::now_ms(),
            tag,
            record.args()
        );
        if line.len == line.buf.len() {
            line.buf[line.len - 3..].copy_from_slice(b"...");
        }
        let body_len = line.len;
        let _ = line.write_str("\n");
        // SAFETY: fd 1 is the console the kernel opened for PID 1 and is
        // never closed by the init.
        // (rustix makes this call safe when a std build unifies its `std`
        // feature in, as in host unit tests.)
        #[allow(unused_unsafe)]
        let stdout = unsafe { rustix::stdio::stdout() };
        // A console that fails takes the line with it; PID 1 goes on.
        let _ = crate::fsutil::write_all(stdout, &line.buf[..line.len]);

        let kmsg = KMSG_FD.load(Ordering::Relaxed);
        if kmsg >= 0 {
            // Facility user (1), debug priority (7): kept in the ring buffer
            // but below the console loglevel, so the console shows each
            // line once.
            let mut k = Line {
                buf: [0; 512],
                len: 0,
            };
            let _ = write!(k, "<15>ember: {}{}", tag, record.args());
            let _ = body_len;
            // SAFETY: a non-negative KMSG_FD is the /dev/kmsg descriptor
            // `attach_kmsg` opened and leaked into the static; nothing
            // closes it, so it stays open for the rest of PID 1's life.
            let fd = unsafe { BorrowedFd::borrow_raw(kmsg) };
            let _ = rustix::io::write(fd, &k.buf[..k.len]);
        }
    }

    fn flush(&self) {}
}
