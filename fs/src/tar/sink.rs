//! Where extracted entries go. The state machine calls, per entry:
//! `begin`, then `data` zero or more times (files only, in order, summing to
//! `meta.size`), then `end`. `finish` follows the last entry.

use super::entry::Entry;
use super::error::ErrorKind;

pub trait Sink {
    /// Creates the entry (or opens a file for its data).
    fn begin(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind>;
    /// The next bytes of the current file.
    fn data(&mut self, bytes: &[u8]) -> Result<(), ErrorKind>;
    /// The entry is complete: apply its metadata (or defer it, directories).
    fn end(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind>;
    /// A member of a type this extractor does not create (GNU sparse,
    /// volume labels, unknown type flags) was skipped: a warning.
    fn skipped(&mut self, _name: &[u8], _typeflag: u8) {}
    /// The archive ended well: apply whatever was deferred.
    fn finish(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
    /// Extraction failed: drop half-written state (temp files).
    fn abort(&mut self) {}
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn begin(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        (**self).begin(entry)
    }
    fn data(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        (**self).data(bytes)
    }
    fn end(&mut self, entry: &Entry<'_>) -> Result<(), ErrorKind> {
        (**self).end(entry)
    }
    fn skipped(&mut self, name: &[u8], typeflag: u8) {
        (**self).skipped(name, typeflag)
    }
    fn finish(&mut self) -> Result<(), ErrorKind> {
        (**self).finish()
    }
    fn abort(&mut self) {
        (**self).abort()
    }
}
