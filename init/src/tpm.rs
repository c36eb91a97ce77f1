//! The node's TPM (/dev/tpmrm0, or /dev/tpm0), opened once by the `measure`
//! phase and passed by value to the phases that need it. Every command is
//! counted and timed so the boot log can say what the TPM cost
//! (`metrics: tpm_commands=... tpm_ms=...`).

use ember_tpm::{DeviceTransport, Tpm};

use crate::Error;

pub type NodeTpm = Tpm<Metered>;

/// The device transport, counting commands and the time spent in them.
pub struct Metered {
    device: DeviceTransport,
    pub commands: u32,
    pub busy_ms: u64,
}

impl ember_tpm::Transport for Metered {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> ember_tpm::Result<usize> {
        let start = crate::clock::now_ms();
        let result = self.device.transact(command, response);
        self.commands += 1;
        self.busy_ms += crate::clock::now_ms().saturating_sub(start);
        result
    }

    fn before_retry(&mut self, attempt: u32) {
        self.device.before_retry(attempt)
    }
}

pub fn open() -> Result<NodeTpm, Error> {
    let device = DeviceTransport::open_default()?;
    let mut tpm = Tpm::new(Metered {
        device,
        commands: 0,
        busy_ms: 0,
    });
    // The firmware normally did this; a TPM that reports INITIALIZE is fine.
    tpm.startup(true)?;
    Ok(tpm)
}

/// A count of TPM work since [`Meter::start`], for one metrics line.
pub struct Meter {
    commands: u32,
    busy_ms: u64,
}

impl Meter {
    pub fn start(tpm: &mut NodeTpm) -> Meter {
        let m = tpm.transport_mut();
        Meter {
            commands: m.commands,
            busy_ms: m.busy_ms,
        }
    }

    pub fn log(self, tpm: &mut NodeTpm) {
        let m = tpm.transport_mut();
        crate::info!(
            "metrics: tpm_commands={} tpm_ms={}",
            m.commands - self.commands,
            m.busy_ms - self.busy_ms
        );
    }
}
