//! How command bytes reach a TPM. Each transport moves one complete command
//! and one complete response; [`crate::Tpm`] checks the response framing.

use crate::error::Result;
#[cfg(any(test, feature = "test-hooks"))]
use crate::ErrorKind;
#[cfg(any(test, feature = "test-hooks"))]
use {crate::error::Error, alloc::collections::VecDeque, alloc::vec::Vec};

/// The largest response Ember accepts. The TCG PC Client profile caps
/// responses at 4096 bytes; TPM_PT_MAX_RESPONSE_SIZE on swtpm is 4096.
pub const MAX_RESPONSE_SIZE: usize = 4096;

/// A path to a TPM that carries raw TPM 2.0 command and response frames.
pub trait Transport {
    /// Sends `command` (a complete frame) and reads one complete response into
    /// `response`, returning its length. Implementations return
    /// [`crate::ErrorKind::ResponseTooLarge`] when the header announces more than
    /// `response.len()` bytes and [`crate::ErrorKind::ShortRead`] when fewer arrive.
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize>;

    /// Called before a command is resent after TPM_RC_RETRY, TPM_RC_YIELDED
    /// or TPM_RC_TESTING; `attempt` counts from 1. The default does not wait.
    fn before_retry(&mut self, _attempt: u32) {}
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize> {
        (**self).transact(command, response)
    }
    fn before_retry(&mut self, attempt: u32) {
        (**self).before_retry(attempt)
    }
}

/// Reads the 10-byte header's size field. Shared by stream transports that
/// must know how much to read.
pub(crate) fn declared_size(header: &[u8]) -> usize {
    u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize
}

/// A transport that replays canned responses and records the commands it was
/// sent: for tests of response handling and for fuzzing. A response longer
/// than the caller's buffer is reported as [`crate::ErrorKind::ResponseTooLarge`], as a
/// real device would.
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Default)]
pub struct FakeTransport {
    pub responses: VecDeque<Vec<u8>>,
    pub commands: Vec<Vec<u8>>,
}

#[cfg(any(test, feature = "test-hooks"))]
impl FakeTransport {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, response: &[u8]) -> &mut Self {
        self.responses.push_back(response.to_vec());
        self
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Transport for FakeTransport {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize> {
        self.commands.push(command.to_vec());
        let next = self
            .responses
            .pop_front()
            .ok_or(Error::new(ErrorKind::ShortRead {
                received: 0,
                expected: 10,
            }))?;
        if next.len() > response.len() {
            return Err(Error::new(ErrorKind::ResponseTooLarge {
                declared: next.len(),
                limit: response.len(),
            }));
        }
        response[..next.len()].copy_from_slice(&next);
        Ok(next.len())
    }
}

impl<T: Transport + ?Sized> Transport for alloc::boxed::Box<T> {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize> {
        (**self).transact(command, response)
    }
    fn before_retry(&mut self, attempt: u32) {
        (**self).before_retry(attempt)
    }
}
