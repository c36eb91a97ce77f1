//! One named step of the boot, logged as `phase=<name> status=ok
//! took=<ms>ms cpu=<ms>ms` (or `status=failed ... reason=...`): the lines an
//! operator reads on the serial console and `ember timeline` draws.

use crate::{clock, Error};

/// A phase that failed: its name and why.
pub type Failure = (&'static str, Error);

/// Runs one named phase and logs its outcome, duration and CPU time.
pub fn phase<T>(name: &'static str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Failure> {
    let started = PhaseClock::start(name);
    let result = f();
    started.finish(result.as_ref().err().map(|e| e as &dyn core::fmt::Display));
    result.map_err(|e| (name, e))
}

/// The clocks of a running phase. Kept out of the generic [`phase`], which
/// is instantiated once per call site, so its logging is emitted once.
struct PhaseClock {
    name: &'static str,
    start_ms: u64,
    cpu_start_ms: u64,
}

impl PhaseClock {
    #[inline(never)]
    fn start(name: &'static str) -> PhaseClock {
        crate::info!("phase={name} status=start");
        PhaseClock {
            name,
            start_ms: clock::now_ms(),
            cpu_start_ms: clock::cpu_ms(),
        }
    }

    #[inline(never)]
    fn finish(self, failure: Option<&dyn core::fmt::Display>) {
        let name = self.name;
        let took = clock::now_ms().saturating_sub(self.start_ms);
        let cpu = clock::cpu_ms().saturating_sub(self.cpu_start_ms);
        match failure {
            None => crate::info!("phase={name} status=ok took={took}ms cpu={cpu}ms"),
            Some(e) => {
                crate::error!("phase={name} status=failed took={took}ms cpu={cpu}ms reason={e}")
            }
        }
    }
}
