//! A boot's timeline from its serial log: when the kernel handed over to
//! /init, each phase the init (or a baseline script) logged with
//! `phase=<name> status=start|ok|failed`, named marks (`mark=<name>`),
//! numeric metrics (`metrics: key=value ...`) and power-off. Phase names
//! are not known in advance: a phase the init starts logging tomorrow shows
//! up by itself.

use super::line::{fields, millis, Line};

/// How a phase ended, as far as the log tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseState {
    Ok {
        end_ms: u64,
        took_ms: u64,
    },
    Failed {
        end_ms: u64,
        took_ms: u64,
        reason: String,
    },
    /// Started and never ended: the log stops inside it (a hang, a
    /// power-off, or a boot still running when the log was taken).
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub start_ms: u64,
    pub state: PhaseState,
    /// CPU time the writer itself spent in the phase (`cpu=`), when logged:
    /// the init's own work, apart from waiting on the network or the TPM.
    pub cpu_ms: Option<u64>,
}

impl Phase {
    /// The end stamp, or `log_end` for a phase still running.
    pub fn end_ms(&self, log_end: u64) -> u64 {
        match self.state {
            PhaseState::Ok { end_ms, .. } | PhaseState::Failed { end_ms, .. } => end_ms,
            PhaseState::Running => log_end.max(self.start_ms),
        }
    }

    /// The duration the writer measured, else the stamps' difference.
    pub fn took_ms(&self, log_end: u64) -> u64 {
        match self.state {
            PhaseState::Ok { took_ms, .. } | PhaseState::Failed { took_ms, .. } => took_ms,
            PhaseState::Running => self.end_ms(log_end) - self.start_ms,
        }
    }

    pub fn status(&self) -> &'static str {
        match self.state {
            PhaseState::Ok { .. } => "ok",
            PhaseState::Failed { .. } => "failed",
            PhaseState::Running => "running",
        }
    }
}

/// A named instant: `/init started`, `runtime-started`, `power off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    /// Boots found in the log (a reboot starts a new one).
    pub boots_in_log: usize,
    /// Which of them this is, counting from 1.
    pub boot: usize,
    /// The kernel's "Run /init as init process" (or the first userspace
    /// line, if the kernel's lines are not on this console).
    pub handover_ms: Option<u64>,
    /// The first userspace-stamped line: /init is running.
    pub init_started_ms: Option<u64>,
    /// The tag of that first line (`ember`, `baseline`).
    pub init_tag: Option<String>,
    pub phases: Vec<Phase>,
    pub marks: Vec<Mark>,
    pub metrics: Vec<(String, u64)>,
    /// The last stamp in the boot, kernel or userspace.
    pub end_ms: u64,
}

/// Which boot of a log with several (a reboot loop) to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Last,
    /// 1-based.
    Nth(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No stamped line at all: not a serial log of a boot.
    NoStampedLines,
    /// `--boot N` beyond the boots in the log.
    NoSuchBoot { asked: usize, found: usize },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NoStampedLines => write!(
                f,
                "no kernel ([  s.micros]) or init ([  ms] tag:) stamped lines in the log"
            ),
            Error::NoSuchBoot { asked, found } => {
                write!(f, "boot {asked} asked for, but the log holds {found}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl Timeline {
    pub fn from_log(text: &str, which: Which) -> Result<Timeline, Error> {
        let boots = split_boots(text);
        if boots.is_empty() {
            return Err(Error::NoStampedLines);
        }
        let index = match which {
            Which::Last => boots.len() - 1,
            Which::Nth(n) if n >= 1 && n <= boots.len() => n - 1,
            Which::Nth(n) => {
                return Err(Error::NoSuchBoot {
                    asked: n,
                    found: boots.len(),
                })
            }
        };
        let mut t = build(&boots[index]);
        t.boots_in_log = boots.len();
        t.boot = index + 1;
        Ok(t)
    }

    /// A phase by name (its last occurrence).
    #[cfg(test)]
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().rev().find(|p| p.name == name)
    }

    #[cfg(test)]
    pub fn mark(&self, name: &str) -> Option<u64> {
        self.marks.iter().find(|m| m.name == name).map(|m| m.at_ms)
    }
}

/// Splits the stamped lines into boots: a kernel banner, or a kernel
/// stamp that jumps back by more than a second, starts a new one.
fn split_boots(text: &str) -> Vec<Vec<Line<'_>>> {
    let mut boots: Vec<Vec<Line<'_>>> = Vec::new();
    let mut last_kernel_us: Option<u64> = None;
    for raw in text.lines() {
        let line = Line::parse(raw);
        let new_boot = match line {
            Line::Kernel { us, text } => {
                let restarted = text.starts_with("Linux version ")
                    || last_kernel_us.is_some_and(|last| us + 1_000_000 < last);
                last_kernel_us = Some(us);
                restarted && boots.last().is_some_and(|b| !b.is_empty())
            }
            Line::User { .. } => false,
            Line::Other(_) => continue,
        };
        if new_boot || boots.is_empty() {
            boots.push(Vec::new());
        }
        if let Some(b) = boots.last_mut() {
            b.push(line);
        }
    }
    boots
}

fn build(lines: &[Line<'_>]) -> Timeline {
    let mut t = Timeline::default();
    // Phases started and not yet ended, by index into t.phases.
    let mut open: Vec<usize> = Vec::new();
    for line in lines {
        if let Some(ms) = line.ms() {
            t.end_ms = t.end_ms.max(ms);
        }
        match *line {
            Line::Kernel { us, text } => {
                let ms = us / 1000;
                if text.starts_with("Run /") && text.ends_with("as init process") {
                    t.handover_ms.get_or_insert(ms);
                } else if text.starts_with("reboot: Power down") {
                    t.marks.push(Mark {
                        name: "power off".into(),
                        at_ms: ms,
                    });
                } else if text.starts_with("reboot: Restarting system") {
                    t.marks.push(Mark {
                        name: "reboot".into(),
                        at_ms: ms,
                    });
                }
            }
            Line::User { ms, tag, message } => {
                if t.init_started_ms.is_none() {
                    t.init_started_ms = Some(ms);
                    t.init_tag = Some(tag.to_string());
                }
                user_line(&mut t, &mut open, ms, message);
            }
            Line::Other(_) => {}
        }
    }
    if t.handover_ms.is_none() {
        t.handover_ms = t.init_started_ms;
    }
    if let Some(at) = t.init_started_ms {
        t.marks.insert(
            0,
            Mark {
                name: "init started".into(),
                at_ms: at,
            },
        );
    }
    t.marks.sort_by_key(|m| m.at_ms);
    t
}

fn user_line(t: &mut Timeline, open: &mut Vec<usize>, ms: u64, message: &str) {
    let fields = fields(message);
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
    if message.starts_with("metrics:") {
        for &(key, value) in &fields {
            if let Some(v) = millis(value) {
                match t.metrics.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = v,
                    None => t.metrics.push((key.to_string(), v)),
                }
            }
        }
        return;
    }
    if let Some(name) = get("mark") {
        t.marks.push(Mark {
            name: name.to_string(),
            at_ms: ms,
        });
    }
    let (Some(name), Some(status)) = (get("phase"), get("status")) else {
        return;
    };
    let took = get("took").and_then(millis);
    let ended = |start: u64| took.unwrap_or(ms.saturating_sub(start));
    match status {
        "start" => {
            t.phases.push(Phase {
                name: name.to_string(),
                start_ms: ms,
                state: PhaseState::Running,
                cpu_ms: None,
            });
            open.push(t.phases.len() - 1);
        }
        "ok" | "failed" => {
            let slot = open.iter().rposition(|&i| t.phases[i].name == name);
            let index = match slot {
                Some(s) => open.remove(s),
                None => {
                    // An end without its start (the start line was lost or
                    // never written): place it from its duration.
                    t.phases.push(Phase {
                        name: name.to_string(),
                        start_ms: ms.saturating_sub(took.unwrap_or(0)),
                        state: PhaseState::Running,
                        cpu_ms: None,
                    });
                    t.phases.len() - 1
                }
            };
            let took_ms = ended(t.phases[index].start_ms);
            t.phases[index].cpu_ms = get("cpu").and_then(millis);
            t.phases[index].state = if status == "ok" {
                PhaseState::Ok {
                    end_ms: ms,
                    took_ms,
                }
            } else {
                PhaseState::Failed {
                    end_ms: ms,
                    took_ms,
                    reason: get("reason").unwrap_or("").to_string(),
                }
            };
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKELETON: &str = "\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 6.1.0-41-amd64
[    2.672445] Run /init as init process
[    2770] ember: Ember init 0.1.0 starting as pid 1
[    2775] ember: phase=mounts status=start
[    2817] ember: phase=mounts status=ok took=42ms
[    2823] ember: phase=modules status=start
[    3.127586] ACPI: \\_SB_.LNKB: Enabled at IRQ 10
[    3426] ember: phase=modules status=ok took=603ms
[    3431] ember: phase=attest status=start
[    3440] ember: error: phase=attest status=failed took=9ms reason=no TPM: /dev/tpmrm0 missing
[    3441] ember: phase=overlay status=start
[    3.429460] reboot: Power down
";

    #[test]
    fn skeleton_boot_has_handover_phases_and_power_off() {
        let t = Timeline::from_log(SKELETON, Which::Last).unwrap();
        assert_eq!(t.boots_in_log, 1);
        assert_eq!(t.handover_ms, Some(2672));
        assert_eq!(t.init_started_ms, Some(2770));
        assert_eq!(t.init_tag.as_deref(), Some("ember"));
        let names: Vec<_> = t.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["mounts", "modules", "attest", "overlay"]);
        assert_eq!(
            t.phase("modules").unwrap().state,
            PhaseState::Ok {
                end_ms: 3426,
                took_ms: 603
            }
        );
        assert_eq!(
            t.phase("attest").unwrap().state,
            PhaseState::Failed {
                end_ms: 3440,
                took_ms: 9,
                reason: "no TPM: /dev/tpmrm0 missing".into()
            }
        );
        assert_eq!(t.phase("overlay").unwrap().state, PhaseState::Running);
        assert_eq!(t.mark("power off"), Some(3429));
        assert_eq!(t.end_ms, 3441);
    }

    #[test]
    fn phases_unknown_today_show_up_in_log_order() {
        let log = "[  100] baseline: phase=warp-drive status=start\n\
                   [  350] baseline: phase=warp-drive status=ok took=250ms\n\
                   [  400] runtime: started mark=runtime-started\n\
                   [  410] runtime: metrics: pid1_vmhwm_kb=2048 pid1_cpu_ms=310ms junk=x\n";
        let t = Timeline::from_log(log, Which::Last).unwrap();
        assert_eq!(t.phases[0].name, "warp-drive");
        assert_eq!(t.phases[0].took_ms(0), 250);
        assert_eq!(t.mark("runtime-started"), Some(400));
        assert_eq!(t.mark("init started"), Some(100));
        assert_eq!(
            t.metrics,
            vec![("pid1_vmhwm_kb".into(), 2048), ("pid1_cpu_ms".into(), 310)]
        );
        // No kernel lines on this console: the first init line stands in.
        assert_eq!(t.handover_ms, Some(100));
    }

    #[test]
    fn a_reboot_starts_a_new_boot_and_the_last_is_drawn_by_default() {
        let log = "[    0.000000] Linux version a\n[  500] ember: phase=attest status=start\n\
                   [    1.000000] reboot: Restarting system\n\
                   [    0.000000] Linux version a\n[  700] ember: phase=attest status=start\n\
                   [  900] ember: phase=attest status=ok took=200ms\n";
        let last = Timeline::from_log(log, Which::Last).unwrap();
        assert_eq!((last.boots_in_log, last.boot), (2, 2));
        assert_eq!(last.phase("attest").unwrap().start_ms, 700);
        let first = Timeline::from_log(log, Which::Nth(1)).unwrap();
        assert_eq!(first.mark("reboot"), Some(1000));
        assert_eq!(first.phase("attest").unwrap().state, PhaseState::Running);
        assert_eq!(
            Timeline::from_log(log, Which::Nth(3)),
            Err(Error::NoSuchBoot { asked: 3, found: 2 })
        );
    }

    #[test]
    fn repeated_phase_names_pair_with_their_own_start() {
        let log = "[ 10] ember: phase=dhcp status=start\n[ 20] ember: phase=dhcp status=failed took=10ms reason=timeout\n\
                   [ 30] ember: phase=dhcp status=start\n[ 45] ember: phase=dhcp status=ok took=15ms\n";
        let t = Timeline::from_log(log, Which::Last).unwrap();
        assert_eq!(t.phases.len(), 2);
        assert_eq!(t.phases[0].status(), "failed");
        assert_eq!((t.phases[1].start_ms, t.phases[1].end_ms(0)), (30, 45));
    }

    #[test]
    fn an_end_without_a_start_is_placed_from_its_duration() {
        let t = Timeline::from_log("[ 500] ember: phase=x status=ok took=120ms\n", Which::Last)
            .unwrap();
        assert_eq!(t.phases[0].start_ms, 380);
    }

    #[test]
    fn text_without_stamps_is_refused() {
        assert_eq!(
            Timeline::from_log("hello\nworld\n", Which::Last),
            Err(Error::NoStampedLines)
        );
    }
}
