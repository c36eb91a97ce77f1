//! The extractor as the sealed stream's sink (feature `fs`): opened chunks
//! go straight into `ember-fs`'s streaming tar extractor.

use ember_fs::tar::{Extractor, Sink as TarSink};

use crate::sealed::Sink;

impl<S: TarSink> Sink for Extractor<S> {
    type Error = ember_fs::tar::Error;

    fn write(&mut self, plaintext: &[u8]) -> Result<(), Self::Error> {
        Extractor::write(self, plaintext)
    }

    fn finish(&mut self) -> Result<(), Self::Error> {
        Extractor::finish(self).map(|_summary| ())
    }
}
