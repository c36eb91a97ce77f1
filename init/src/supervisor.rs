//! PID 1's duties towards processes: signals arrive synchronously (blocked,
//! then collected with sigtimedwait), every zombie is reaped, and children
//! are started with a clean signal mask in their own session.

use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec::Vec;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use rustix::runtime::{How, KernelSigSet};

use crate::Error;

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
        // Safety: PID 1 is single-threaded here and installs no handlers
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
        let ts = rustix::time::Timespec {
            tv_sec: (timeout_ms / 1000) as i64,
            tv_nsec: ((timeout_ms % 1000) * 1_000_000) as i64,
        };
        // Safety: the set only holds signals we blocked above.
        let info = unsafe { rustix::runtime::kernel_sigtimedwait(&self.set, Some(&ts)) };
        let signal = match info {
            // Safety: the kernel always fills si_signo, the first field.
            Ok(info) => {
                Signal::from_named_raw(unsafe { info.__bindgen_anon_1.__bindgen_anon_1.si_signo })
            }
            Err(_) => {
                // Timeout or EINTR: still reap, a SIGCHLD may have been merged.
                return self.reap().unwrap_or(Event::Timeout);
            }
        };
        match signal {
            Some(s) if s == Signal::CHILD => self.reap().unwrap_or(Event::Timeout),
            Some(s) if s == Signal::USR1 => Event::Shutdown(Request::Halt),
            Some(s) if s == Signal::USR2 => Event::Shutdown(Request::Poweroff),
            Some(s) if s == Signal::TERM || s == Signal::INT => Event::Shutdown(Request::Reboot),
            _ => Event::Timeout,
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
                            log::info!("{name} (pid {}) exited: {status:?}", pid.as_raw_nonzero());
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
        let spawn_err = |errno| Error::Spawn {
            program: String::from(program),
            errno,
        };
        let to_c = |s: &&str| CString::new(*s).map_err(|_| spawn_err(Errno::INVAL));
        let c_argv: Vec<CString> = argv.iter().map(to_c).collect::<Result<_, _>>()?;
        let c_env: Vec<CString> = env.iter().map(to_c).collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const u8> = c_argv.iter().map(|s| s.as_ptr().cast()).collect();
        argv_ptrs.push(core::ptr::null());
        let mut env_ptrs: Vec<*const u8> = c_env.iter().map(|s| s.as_ptr().cast()).collect();
        env_ptrs.push(core::ptr::null());
        let path = c_argv.first().ok_or(spawn_err(Errno::INVAL))?;

        // Safety: PID 1 is single-threaded; the child only makes syscalls
        // on memory prepared before the fork, then execs or exits.
        match unsafe { rustix::runtime::kernel_fork() }.map_err(spawn_err)? {
            rustix::runtime::Fork::Child(_) => unsafe {
                let _ =
                    rustix::runtime::kernel_sigprocmask(How::SETMASK, Some(&KernelSigSet::empty()));
                let _ = rustix::process::setsid();
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
