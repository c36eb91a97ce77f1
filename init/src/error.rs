//! The init's one error type: each variant names what failed and where.

use alloc::boxed::Box;
use core::fmt;

use rustix::io::Errno;

/// Every `?`, `map_err` and `Result` of the init moves the whole enum, so
/// it is kept at 24 bytes: the library errors (24-56 bytes) are boxed and
/// texts are `Box<str>` (56 bytes before: /init was 5.5 KB larger).
#[derive(Debug)]
pub enum Error {
    /// mount(2) of `target` failed.
    Mount { target: &'static str, errno: Errno },
    /// A file the boot needs could not be read.
    Read { path: Box<str>, errno: Errno },
    /// A file could not be written.
    Write { path: Box<str>, errno: Errno },
    /// modules.dep or the module list is unusable.
    Modules(Box<ember_fs::Error>),
    /// fork/exec of a child failed.
    Spawn { program: Box<str>, errno: Errno },
    /// A phase needs a cmdline key that is missing or malformed.
    Cmdline(Box<str>),
    /// Network bring-up, DHCP, DNS or HTTPS.
    Net(Box<ember_net::Error>),
    /// A TPM command failed.
    Tpm(Box<ember_tpm::Error>),
    /// The TPM answered, but not what the boot needs.
    TpmAnswer(&'static str),
    /// A phase needs something an earlier one did not provide (a TPM, the
    /// network, an EFI System Partition): names what is missing.
    Missing(&'static str),
    /// Last-known-good exists but cannot be used (no slot, a bad key).
    Lkg(&'static str),
    /// The boot server conversation failed.
    Attest(Box<ember_proto::Error>),
    /// The overlay could not be extracted.
    Extract(Box<ember_fs::tar::Error>),
    /// The node configuration in the overlay is unusable.
    NodeConf(Box<crate::nodeconf::ConfError>),
    /// The runtime exited or did not become Ready.
    Runtime(Box<str>),
    /// Read-only root, writable paths, scratch disk or sysctls.
    Storage(Box<str>),
    /// Something else failed in a named step.
    Step { step: &'static str, errno: Errno },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Mount { target, errno } => write!(f, "mount {target}: {errno}"),
            Error::Read { path, errno } => write!(f, "read {path}: {errno}"),
            Error::Write { path, errno } => write!(f, "write {path}: {errno}"),
            Error::Modules(e) => write!(f, "kernel modules: {e}"),
            Error::Spawn { program, errno } => write!(f, "start {program}: {errno}"),
            Error::Cmdline(msg) => write!(f, "kernel command line: {msg}"),
            Error::Net(e) => write!(f, "{e}"),
            Error::Tpm(e) => write!(f, "TPM: {e}"),
            Error::TpmAnswer(why) => write!(f, "TPM: {why}"),
            Error::Missing(what) => write!(f, "no {what}"),
            Error::Lkg(why) => write!(f, "last-known-good: {why}"),
            Error::Attest(e) => write!(f, "{e}"),
            Error::Extract(e) => write!(f, "overlay: {e}"),
            Error::NodeConf(e) => write!(f, "{e}"),
            Error::Runtime(why) => write!(f, "runtime: {why}"),
            Error::Storage(why) => write!(f, "storage: {why}"),
            Error::Step { step, errno } => write!(f, "{step}: {errno}"),
        }
    }
}

impl From<ember_fs::Error> for Error {
    fn from(e: ember_fs::Error) -> Self {
        Error::Modules(Box::new(e))
    }
}

impl From<ember_net::Error> for Error {
    fn from(e: ember_net::Error) -> Self {
        Error::Net(Box::new(e))
    }
}

impl From<ember_tpm::Error> for Error {
    fn from(e: ember_tpm::Error) -> Self {
        Error::Tpm(Box::new(e))
    }
}

impl From<ember_proto::Error> for Error {
    fn from(e: ember_proto::Error) -> Self {
        Error::Attest(Box::new(e))
    }
}

impl From<ember_fs::tar::Error> for Error {
    fn from(e: ember_fs::tar::Error) -> Self {
        Error::Extract(Box::new(e))
    }
}

impl From<crate::nodeconf::ConfError> for Error {
    fn from(e: crate::nodeconf::ConfError) -> Self {
        Error::NodeConf(Box::new(e))
    }
}
