//! The `inventory` phase: what the node has to work with (TPM device,
//! network interfaces), for the operator reading the console.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{clock, fsutil, Error};

pub fn survey() -> Result<(), Error> {
    // The TPM driver probes asynchronously; give the device node a moment.
    let deadline = clock::now_ms() + 2_000;
    let tpm = loop {
        if fsutil::exists("/dev/tpmrm0") {
            break Some("/dev/tpmrm0");
        }
        if clock::now_ms() >= deadline {
            break if fsutil::exists("/dev/tpm0") {
                Some("/dev/tpm0")
            } else {
                None
            };
        }
        clock::sleep_ms(20);
    };
    match tpm {
        Some(dev) => crate::info!("tpm: {dev} present"),
        None => crate::warn!("tpm: no /dev/tpmrm0 or /dev/tpm0; attestation will fail"),
    }
    let mut ifaces = Vec::new();
    for name in fsutil::list_dir("/sys/class/net")? {
        let read = |attr: &str| {
            fsutil::read_text(&alloc::format!("/sys/class/net/{name}/{attr}"))
                .map(|s| String::from(s.trim()))
                .unwrap_or_default()
        };
        ifaces.push(alloc::format!(
            "{name}({} {})",
            read("address"),
            read("operstate")
        ));
    }
    crate::info!("network interfaces: [{}]", ifaces.join(" "));
    Ok(())
}

/// PID 1's peak resident memory, from /proc/self/status (VmHWM), as a
/// metrics line.
pub fn log_peak_rss() {
    let Ok(status) = fsutil::read_text("/proc/self/status") else {
        return;
    };
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if let Some(kb) = hwm {
        crate::info!("metrics: pid1_vmhwm_kb={kb}");
    }
}
