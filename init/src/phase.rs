//! One named step of the boot, logged as `phase=<name> status=ok
//! took=<ms>ms cpu=<ms>ms` (or `status=failed ... reason=...`): the lines an
//! operator reads on the serial console and `ember timeline` draws. Each
//! finished phase is also kept in this boot's phase table ([`timeline()`]),
//! which the Report carries to the boot server.

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};

use ember_proto::timeline::{self, OverlayStages, Phase, PhaseStatus, Timeline, MAX_PHASES};

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
        TABLE.record(name, self.start_ms, took, cpu, failure.is_some());
    }
}

/// One finished phase as the table keeps it. Atomics only because the
/// table is a static: PID 1 is single-threaded, so Relaxed is enough.
struct Slot {
    /// 1 + the name's index in [`timeline::PHASES`]; 0: empty.
    name: AtomicU8,
    start_ms: AtomicU64,
    took_ms: AtomicU64,
    cpu_ms: AtomicU64,
    failed: AtomicU8,
}

/// This boot's phase table: fixed size, no allocation while phases run.
struct Table {
    slots: [Slot; MAX_PHASES],
    used: AtomicUsize,
    /// The overlay stage counters, in [`OverlayStages`] field order; the
    /// first is 1 once they were recorded.
    overlay: [AtomicU64; 7],
}

static TABLE: Table = Table {
    slots: [const {
        Slot {
            name: AtomicU8::new(0),
            start_ms: AtomicU64::new(0),
            took_ms: AtomicU64::new(0),
            cpu_ms: AtomicU64::new(0),
            failed: AtomicU8::new(0),
        }
    }; MAX_PHASES],
    used: AtomicUsize::new(0),
    overlay: [const { AtomicU64::new(0) }; 7],
};

impl Table {
    /// Keeps a finished phase; a name outside the fixed set (none today)
    /// or a full table drops it from the report, never from the log.
    fn record(&self, name: &str, start_ms: u64, took_ms: u64, cpu_ms: u64, failed: bool) {
        let Some(index) = timeline::PHASES.iter().position(|p| *p == name) else {
            return;
        };
        let at = self.used.load(Relaxed);
        let Some(slot) = self.slots.get(at) else {
            return;
        };
        slot.name.store(index as u8 + 1, Relaxed);
        slot.start_ms.store(start_ms, Relaxed);
        slot.took_ms.store(took_ms, Relaxed);
        slot.cpu_ms.store(cpu_ms, Relaxed);
        slot.failed.store(u8::from(failed), Relaxed);
        self.used.store(at + 1, Relaxed);
    }
}

/// Keeps the overlay pipeline's counters for the report.
pub fn record_overlay(s: &OverlayStages) {
    let o = &TABLE.overlay;
    for (cell, v) in o[1..].iter().zip([
        s.sealed_bytes,
        s.plain_bytes,
        s.receive_ms,
        s.open_ms,
        s.unpack_ms,
        s.write_ms,
    ]) {
        cell.store(v, Relaxed);
    }
    o[0].store(1, Relaxed);
}

/// The phases finished so far (and the overlay counters): what a report
/// sends. A failed boot's table ends with the phase that failed.
pub fn timeline() -> Timeline {
    let mut t = Timeline::default();
    for slot in &TABLE.slots[..TABLE.used.load(Relaxed).min(MAX_PHASES)] {
        let index = usize::from(slot.name.load(Relaxed));
        let Some(name) = index.checked_sub(1).and_then(|i| timeline::PHASES.get(i)) else {
            continue;
        };
        t.push(Phase {
            name: (*name).into(),
            start_ms: slot.start_ms.load(Relaxed),
            took_ms: slot.took_ms.load(Relaxed),
            cpu_ms: slot.cpu_ms.load(Relaxed),
            status: if slot.failed.load(Relaxed) != 0 {
                PhaseStatus::Failed
            } else {
                PhaseStatus::Ok
            },
        });
    }
    let o = &TABLE.overlay;
    if o[0].load(Relaxed) != 0 {
        let v = |i: usize| o[i].load(Relaxed);
        t.overlay = Some(OverlayStages {
            sealed_bytes: v(1),
            plain_bytes: v(2),
            receive_ms: v(3),
            open_ms: v(4),
            unpack_ms: v(5),
            write_ms: v(6),
        });
    }
    t
}
