//! PID 1's duties towards processes: signals arrive synchronously (blocked,
//! then collected with sigtimedwait), every zombie is reaped, and children
//! are started with a clean signal mask in their own session.

use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec::Vec;

use rustix::event::{PollFd, PollFlags};
use rustix::fd::BorrowedFd;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use rustix::runtime::{How, KernelSigSet};

use crate::{Error, ErrorKind};

/// Longest a signal waits while PID 1 polls an fd.
const SIGNAL_SLICE_MS: u64 = 200;

fn timespec(ms: u64) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    }
}

/// The signals PID 1 acts on. SIGINT is ctrl-alt-del once CAD is off.
const HANDLED: [Signal; 6] = [
    Signal::CHILD,
    Signal::TERM,
    Signal::INT,
    Signal::USR1,
    Signal::USR2,
    Signal::HUP,
];

/// What the operator or the kernel asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGUSR1 (halt, as sysvinit/busybox do).
    Halt,
    /// SIGUSR2.
    Poweroff,
    /// SIGTERM, or SIGINT from ctrl-alt-del.
    Reboot,
}

#[derive(Debug, Clone)]
pub enum Event {
    Shutdown(Request),
    /// A child we started exited (orphans are reaped silently).
    Exited {
        pid: Pid,
        name: String,
        status: WaitStatus,
    },
    /// The fd given to `wait_fd` has input.
    Readable,
    Timeout,
}

fn handled_set() -> KernelSigSet {
    let mut set = KernelSigSet::empty();
    for s in HANDLED {
        set.insert(s);
    }
    set
}

pub struct Supervisor {
    children: Vec<(Pid, String)>,
    set: KernelSigSet,
}

impl Supervisor {
    /// Blocks the handled signals (so none is lost before we wait for it)
    /// and turns ctrl-alt-del into SIGINT instead of an immediate reboot.
    pub fn new() -> Self {
        let set = handled_set();
        // SAFETY: PID 1 is single-threaded here and installs no handlers
        // that could rely on these signals being deliverable.
        let _ = unsafe { rustix::runtime::kernel_sigprocmask(How::BLOCK, Some(&set)) };
        let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
        Supervisor {
            children: Vec::new(),
            set,
        }
    }

    /// Waits up to `timeout_ms` for a signal; reaps whatever exited.
    pub fn wait(&mut self, timeout_ms: u64) -> Event {
        self.take_signal(timeout_ms).unwrap_or(Event::Timeout)
    }

    /// Like [`wait`](Self::wait), but also returns `Readable` when `fd` has
    /// input (the DHCP socket). Signals are checked at least every
    /// `SIGNAL_SLICE_MS`, since poll cannot wait on blocked signals.
    pub fn wait_fd(&mut self, fd: BorrowedFd<'_>, timeout_ms: u64) -> Event {
        if let Some(ev) = self.take_signal(0) {
            return ev;
        }
        let slice = timeout_ms.min(SIGNAL_SLICE_MS);
        let ts = timespec(slice);
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        if let Ok(n) = rustix::event::poll(&mut fds, Some(&ts)) {
            if n > 0 {
                return Event::Readable;
            }
        }
        self.take_signal(0).unwrap_or(Event::Timeout)
    }

    fn take_signal(&mut self, timeout_ms: u64) -> Option<Event> {
        let ts = timespec(timeout_ms);
        // SAFETY: the set only holds signals blocked in `new`, so waiting
        // for them cannot race a handler (PID 1 installs none).
        let info = unsafe { rustix::runtime::kernel_sigtimedwait(&self.set, Some(&ts)) };
        let signal = match info {
            Ok(info) => {
                // SAFETY: the kernel always fills si_signo, the first field
                // of every variant of the siginfo union.
                let signo = unsafe { info.__bindgen_anon_1.__bindgen_anon_1.si_signo };
                Signal::from_named_raw(signo)
            }
            // Timeout or EINTR: still reap, a SIGCHLD may have been merged.
            Err(_) => return self.reap(),
        };
        match signal {
            Some(s) if s == Signal::CHILD => self.reap(),
            Some(s) if s == Signal::USR1 => Some(Event::Shutdown(Request::Halt)),
            Some(s) if s == Signal::USR2 => Some(Event::Shutdown(Request::Poweroff)),
            Some(s) if s == Signal::TERM || s == Signal::INT => {
                Some(Event::Shutdown(Request::Reboot))
            }
            _ => None,
        }
    }

    /// Reaps every exited process; returns the first of ours.
    pub fn reap(&mut self) -> Option<Event> {
        let mut ours = None;
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    if let Some(i) = self.children.iter().position(|(p, _)| *p == pid) {
                        let (_, name) = self.children.swap_remove(i);
                        if ours.is_none() {
                            ours = Some(Event::Exited { pid, name, status });
                        } else {
                            crate::info!(
                                "{name} (pid {}) {}",
                                pid.as_raw_nonzero(),
                                describe(status)
                            );
                        }
                    }
                }
                Ok(None) | Err(_) => return ours,
            }
        }
    }

    pub fn children(&self) -> &[(Pid, String)] {
        &self.children
    }

    /// Starts `argv[0]` with `argv` and `env` in a new session, stdio on the
    /// console, the signal mask cleared.
    pub fn spawn(&mut self, argv: &[&str], env: &[&str]) -> Result<Pid, Error> {
        let program = argv.first().copied().unwrap_or("");
        let spawn_err = |errno| {
            Error::new(ErrorKind::Spawn {
                program: program.into(),
                errno,
            })
        };
        let to_c = |s: &&str| CString::new(*s).map_err(|_| spawn_err(Errno::INVAL));
        let c_argv: Vec<CString> = argv.iter().map(to_c).collect::<Result<_, _>>()?;
        let c_env: Vec<CString> = env.iter().map(to_c).collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const u8> = c_argv.iter().map(|s| s.as_ptr().cast()).collect();
        argv_ptrs.push(core::ptr::null());
        let mut env_ptrs: Vec<*const u8> = c_env.iter().map(|s| s.as_ptr().cast()).collect();
        env_ptrs.push(core::ptr::null());
        let path = c_argv.first().ok_or(spawn_err(Errno::INVAL))?;

        // SAFETY: PID 1 is single-threaded; the child only makes syscalls
        // on memory prepared before the fork, then execs or exits.
        match unsafe { rustix::runtime::kernel_fork() }.map_err(spawn_err)? {
            // SAFETY: in the forked child, before exec: only raw syscalls
            // (no allocation, no locks another thread could hold), and
            // `path`, `argv_ptrs` and `env_ptrs` point to NUL-terminated
            // strings and NULL-terminated pointer arrays built above.
            rustix::runtime::Fork::Child(_) => unsafe {
                let _ =
                    rustix::runtime::kernel_sigprocmask(How::SETMASK, Some(&KernelSigSet::empty()));
                let _ = rustix::process::setsid();
                // Nothing PID 1 holds (netlink, packet socket, the TPM, the
                // ESP) leaks into the runtime, CLOEXEC or not.
                // PID 1 runs with the kernel's default limit of 1024 files.
                for fd in 3..1024 {
                    rustix::io::close(fd);
                }
                let errno = rustix::runtime::execve(path, argv_ptrs.as_ptr(), env_ptrs.as_ptr());
                let msg = b"ember: exec failed\n";
                let _ = rustix::io::write(rustix::stdio::stderr(), msg);
                rustix::runtime::exit_group(126 + (errno == Errno::NOENT) as i32)
            },
            rustix::runtime::Fork::ParentOf(pid) => {
                self.children.push((pid, String::from(program)));
                Ok(pid)
            }
        }
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

/// "exited with status 1" / "killed by signal 9", for log lines.
pub fn describe(status: WaitStatus) -> alloc::string::String {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => alloc::format!("exited with status {code}"),
        (None, Some(sig)) => alloc::format!("killed by signal {sig}"),
        _ => alloc::string::String::from("stopped"),
    }
}
