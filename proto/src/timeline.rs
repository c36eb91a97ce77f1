//! A boot's phase table, as the node's Report carries it: each phase the
//! init ran (name, start in ms since the kernel started, duration, CPU ms,
//! status) and the overlay stage counters. The same table the init logs as
//! `phase=<name> status=ok took=<ms>ms cpu=<ms>ms` lines.
//!
//! On the wire it follows the [`ReportRequest`](crate::msg::ReportRequest)
//! in the same body ([`crate::msg::encode_report`]): a node that sends none
//! (every node before this format) still reports. The table starts with its
//! own version ([`TIMELINE_VERSION`]) and is bounded: at most
//! [`MAX_PHASES`] phases, names of at most [`MAX_PHASE_NAME`] characters
//! from `[a-z0-9-]`. A node controls these bytes: [`Timeline::decode`]
//! refuses anything outside the bounds with a typed error.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// The phase table's format version.
pub const TIMELINE_VERSION: u16 = 1;
/// Most phases one boot's table holds (the init runs 17 at most).
pub const MAX_PHASES: usize = 32;
/// Longest phase name.
pub const MAX_PHASE_NAME: usize = 24;

/// The init's phases, in boot order: the fixed set the server keeps
/// per-phase metrics for (other names are stored, not counted).
pub const PHASES: &[&str] = &[
    "rootfs",
    "mounts",
    "cmdline",
    "modules",
    "inventory",
    "measure",
    "lkg-floor",
    "dhcp",
    "attest",
    "overlay",
    "lkg-restore",
    "seal-boot-phase",
    "nodeconf",
    "storage",
    "runtime",
    "ready",
    "lkg",
];

/// How a phase ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseStatus {
    Ok,
    Failed,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Ok => "ok",
            PhaseStatus::Failed => "failed",
        }
    }
}

/// One phase of a boot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    /// Milliseconds since the kernel started (CLOCK_BOOTTIME).
    pub start_ms: u64,
    pub took_ms: u64,
    /// CPU time PID 1 itself spent in the phase.
    pub cpu_ms: u64,
    pub status: PhaseStatus,
}

/// The overlay pipeline's counters (the init's `metrics:` line).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayStages {
    pub sealed_bytes: u64,
    pub plain_bytes: u64,
    pub receive_ms: u64,
    pub open_ms: u64,
    pub unpack_ms: u64,
    pub write_ms: u64,
}

/// One boot's phase table.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub version: u16,
    pub phases: Vec<Phase>,
    pub overlay: Option<OverlayStages>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            version: TIMELINE_VERSION,
            phases: Vec::new(),
            overlay: None,
        }
    }
}

/// Whether `name` is a phase name the format carries.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PHASE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Timeline {
    /// Adds a phase; false (and nothing added) when the table is full or
    /// the name is outside the format, so the table stays decodable.
    pub fn push(&mut self, phase: Phase) -> bool {
        if self.phases.len() >= MAX_PHASES || !valid_name(&phase.name) {
            return false;
        }
        self.phases.push(phase);
        true
    }

    /// The table's bytes (what follows a ReportRequest).
    pub fn encode(&self) -> Vec<u8> {
        // Postcard, as `msg::encode` writes every message; not through it:
        // msg carries the table, so the table does not reach back into msg.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads a table a node sent, refusing another version, trailing
    /// bytes, more than [`MAX_PHASES`] phases and names outside the format.
    pub fn decode(bytes: &[u8]) -> Result<Timeline, Error> {
        let version = postcard::take_from_bytes::<u16>(bytes)
            .map(|(v, _)| v)
            .map_err(|_| Error::new(ErrorKind::Decode { what: "timeline" }))?;
        if version != TIMELINE_VERSION {
            return Err(Error::new(ErrorKind::TimelineVersion { got: version }));
        }
        let t = match postcard::take_from_bytes::<Timeline>(bytes) {
            Ok((t, [])) => t,
            _ => return Err(Error::new(ErrorKind::Decode { what: "timeline" })),
        };
        if t.phases.len() > MAX_PHASES {
            return Err(Error::new(ErrorKind::TimelineTooLong {
                phases: t.phases.len(),
            }));
        }
        if t.phases.iter().any(|p| !valid_name(&p.name)) {
            return Err(Error::new(ErrorKind::TimelinePhaseName));
        }
        Ok(t)
    }

    /// Milliseconds from the kernel's start to the end of the last phase.
    pub fn end_ms(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.start_ms.saturating_add(p.took_ms))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn phase(name: &str, start_ms: u64) -> Phase {
        Phase {
            name: name.to_string(),
            start_ms,
            took_ms: 5,
            cpu_ms: 1,
            status: PhaseStatus::Ok,
        }
    }

    fn sample() -> Timeline {
        let mut t = Timeline::default();
        assert!(t.push(phase("rootfs", 2200)));
        assert!(t.push(Phase {
            status: PhaseStatus::Failed,
            ..phase("attest", 2300)
        }));
        t.overlay = Some(OverlayStages {
            sealed_bytes: 10,
            plain_bytes: 20,
            receive_ms: 1,
            open_ms: 2,
            unpack_ms: 3,
            write_ms: 4,
        });
        t
    }

    #[test]
    fn a_table_round_trips_and_its_bytes_are_fixed() {
        let t = sample();
        let bytes = t.encode();
        // version 1, 2 phases, "rootfs" 2200 5 1 Ok, "attest" 2300 5 1
        // Failed, Some(overlay 10 20 1 2 3 4).
        let expected: &[u8] = &[
            1, 2, 6, b'r', b'o', b'o', b't', b'f', b's', 0x98, 0x11, 5, 1, 0, 6, b'a', b't', b't',
            b'e', b's', b't', 0xfc, 0x11, 5, 1, 1, 1, 10, 20, 1, 2, 3, 4,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(Timeline::decode(&bytes).unwrap(), t);
        assert_eq!(t.end_ms(), 2305);
    }

    #[test]
    fn bad_tables_are_refused_with_their_cause() {
        let good = sample().encode();
        let mut trailing = good.clone();
        trailing.push(0);
        let mut cut = good.clone();
        cut.pop();
        for bad in [&[][..], &trailing, &cut, &[1, 0xff, 0xff, 0xff, 0xff, 0x0f]] {
            assert_eq!(
                *Timeline::decode(bad).unwrap_err().kind(),
                ErrorKind::Decode { what: "timeline" },
                "{bad:?}"
            );
        }
        let mut newer = good.clone();
        newer[0] = 2;
        assert_eq!(
            *Timeline::decode(&newer).unwrap_err().kind(),
            ErrorKind::TimelineVersion { got: 2 }
        );

        let long = Timeline {
            phases: (0..MAX_PHASES + 1)
                .map(|i| phase("dhcp", i as u64))
                .collect(),
            ..Timeline::default()
        };
        assert_eq!(
            *Timeline::decode(&long.encode()).unwrap_err().kind(),
            ErrorKind::TimelineTooLong {
                phases: MAX_PHASES + 1
            }
        );
        for name in [
            "",
            "<script>",
            "Rootfs",
            "a\u{202e}b",
            &"x".repeat(MAX_PHASE_NAME + 1),
        ] {
            let mut t = Timeline::default();
            t.phases.push(phase(name, 0));
            assert_eq!(
                *Timeline::decode(&t.encode()).unwrap_err().kind(),
                ErrorKind::TimelinePhaseName,
                "{name:?}"
            );
        }
    }

    #[test]
    fn push_keeps_the_table_within_its_bounds() {
        let mut t = Timeline::default();
        for i in 0..MAX_PHASES {
            assert!(t.push(phase("dhcp", i as u64)));
        }
        assert!(!t.push(phase("dhcp", 99)));
        assert!(!Timeline::default().push(phase("no spaces", 0)));
        assert_eq!(t.phases.len(), MAX_PHASES);
        assert!(Timeline::decode(&t.encode()).is_ok());
    }

    #[test]
    fn every_init_phase_name_is_in_the_format() {
        assert!(PHASES.iter().all(|p| valid_name(p)));
        assert!(PHASES.len() <= MAX_PHASES);
    }
}
