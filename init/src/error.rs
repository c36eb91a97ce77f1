//! The init's one error type: each variant names what failed and where.

use alloc::boxed::Box;
use core::fmt;

use rustix::io::Errno;

/// Every `?`, `map_err` and `Result` of the init moves the error, so it is
/// one pointer: `Result<(), Error>` comes back in a register (the kind was
/// 24 bytes inline, with its library errors boxed a second time).
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(kind))
    }

    /// What failed.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What an [`Error`] is: each variant names what failed and where.
#[derive(Debug)]
pub enum ErrorKind {
    /// mount(2) of `target` failed.
    Mount { target: &'static str, errno: Errno },
    /// A file the boot needs could not be read.
    Read { path: Box<str>, errno: Errno },
    /// A file could not be written.
    Write { path: Box<str>, errno: Errno },
    /// modules.dep or the module list is unusable.
    Modules(ember_fs::Error),
    /// fork/exec of a child failed.
    Spawn { program: Box<str>, errno: Errno },
    /// A phase needs a cmdline key that is missing or malformed.
    Cmdline(Box<str>),
    /// Network bring-up, DHCP, DNS or HTTPS.
    Net(ember_net::Error),
    /// A TPM command failed.
    Tpm(ember_tpm::Error),
    /// The TPM answered, but not what the boot needs.
    TpmAnswer(&'static str),
    /// A phase needs something an earlier one did not provide (a TPM, the
    /// network, an EFI System Partition): names what is missing.
    Missing(&'static str),
    /// Last-known-good exists but cannot be used (no slot, a bad key).
    Lkg(&'static str),
    /// The boot server conversation failed.
    Attest(ember_proto::Error),
    /// The overlay could not be extracted.
    Extract(ember_fs::tar::Error),
    /// The node configuration in the overlay is unusable.
    NodeConf(crate::nodeconf::ConfError),
    /// The runtime exited or did not become Ready.
    Runtime(Box<str>),
    /// Read-only root, writable paths, scratch disk or sysctls.
    Storage(Box<str>),
    /// Something else failed in a named step.
    Step { step: &'static str, errno: Errno },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match &*self.0 {
            Mount { target, errno } => write!(f, "mount {target}: {errno}"),
            Read { path, errno } => write!(f, "read {path}: {errno}"),
            Write { path, errno } => write!(f, "write {path}: {errno}"),
            Modules(e) => write!(f, "kernel modules: {e}"),
            Spawn { program, errno } => write!(f, "start {program}: {errno}"),
            Cmdline(msg) => write!(f, "kernel command line: {msg}"),
            Net(e) => write!(f, "{e}"),
            Tpm(e) => write!(f, "TPM: {e}"),
            TpmAnswer(why) => write!(f, "TPM: {why}"),
            Missing(what) => write!(f, "no {what}"),
            Lkg(why) => write!(f, "last-known-good: {why}"),
            Attest(e) => write!(f, "{e}"),
            Extract(e) => write!(f, "overlay: {e}"),
            NodeConf(e) => write!(f, "{e}"),
            Runtime(why) => write!(f, "runtime: {why}"),
            Storage(why) => write!(f, "storage: {why}"),
            Step { step, errno } => write!(f, "{step}: {errno}"),
        }
    }
}

impl From<ember_fs::Error> for Error {
    fn from(e: ember_fs::Error) -> Self {
        Error::new(ErrorKind::Modules(e))
    }
}

impl From<ember_net::Error> for Error {
    fn from(e: ember_net::Error) -> Self {
        Error::new(ErrorKind::Net(e))
    }
}

impl From<ember_tpm::Error> for Error {
    fn from(e: ember_tpm::Error) -> Self {
        Error::new(ErrorKind::Tpm(e))
    }
}

impl From<ember_proto::Error> for Error {
    fn from(e: ember_proto::Error) -> Self {
        Error::new(ErrorKind::Attest(e))
    }
}

impl From<ember_fs::tar::Error> for Error {
    fn from(e: ember_fs::tar::Error) -> Self {
        Error::new(ErrorKind::Extract(e))
    }
}

impl From<crate::nodeconf::ConfError> for Error {
    fn from(e: crate::nodeconf::ConfError) -> Self {
        Error::new(ErrorKind::NodeConf(e))
    }
}
