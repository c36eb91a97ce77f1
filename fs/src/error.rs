//! The crate's one error type.

use alloc::string::String;
use core::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A cpio entry that is not a file or symlink was given data.
    CpioDataOnNonFile,
    /// A cpio entry name is empty or contains NUL.
    CpioBadName,
    /// A cpio entry is larger than newc's 32-bit size field.
    CpioTooLarge,
    /// The deflate engine refused its parameters or output buffer.
    Deflate,
    /// The sink behind an encoder failed (an I/O error, with errno).
    Output(i32),
    /// modules.dep has a line without `path:`.
    ModulesDepSyntax { line: usize },
    /// A module (or a dependency) is not in modules.dep.
    UnknownModule(String),
    /// modules.dep dependencies loop back on themselves.
    ModuleDependencyCycle(String),
    /// No "EFI PART" signature: the disk has no GPT.
    GptNoSignature,
    /// A GPT header or entry array that fails its checks.
    GptBadHeader(&'static str),
    /// An efivarfs file shorter than its 4-byte attributes word.
    EfiVarTruncated,
    /// An EFI variable whose attributes are not the ones its writer sets.
    EfiVarAttributes(u32),
    /// A UTF-16 EFI variable with an odd number of bytes.
    EfiVarOddLength,
    /// A loader entry identifier that is not one systemd-boot writes.
    EfiVarBadEntryId(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CpioDataOnNonFile => write!(
                f,
                "cpio: data given for an entry that is not a file or symlink"
            ),
            Error::CpioBadName => write!(f, "cpio: entry name is empty or contains NUL"),
            Error::CpioTooLarge => write!(f, "cpio: entry larger than 4 GiB"),
            Error::Deflate => write!(f, "gzip: deflate failed"),
            Error::Output(errno) => write!(f, "write failed (errno {errno})"),
            Error::ModulesDepSyntax { line } => {
                write!(f, "modules.dep line {line}: expected `path: deps...`")
            }
            Error::UnknownModule(name) => {
                write!(f, "kernel module {name} not found in modules.dep")
            }
            Error::ModuleDependencyCycle(path) => {
                write!(f, "modules.dep: dependency cycle through {path}")
            }
            Error::GptNoSignature => write!(f, "no GPT on this disk"),
            Error::GptBadHeader(why) => write!(f, "GPT: {why}"),
            Error::EfiVarTruncated => write!(f, "EFI variable: shorter than its attributes"),
            Error::EfiVarAttributes(a) => write!(
                f,
                "EFI variable: attributes {a:#x}, expected {:#x} (volatile, boot service and runtime access)",
                crate::efivar::BOOTSERVICE_ACCESS | crate::efivar::RUNTIME_ACCESS
            ),
            Error::EfiVarOddLength => write!(f, "EFI variable: UTF-16 text of odd length"),
            Error::EfiVarBadEntryId(why) => write!(f, "EFI variable: loader entry identifier {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
