//! The rollout's decisions, pure: the states a rollout and each of its
//! nodes go through, how a group is cut into waves, what a node's boots
//! since it was handed the new UKI say about it ([`judge`]), and what the
//! current wave does next ([`next_step`]). Nothing here reads a clock or
//! a database: the engine passes `now` and the evidence in, so every
//! transition is a unit test.

use std::fmt;

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Handing the current wave its UKI and judging its nodes.
    Running,
    /// The operator paused it: nodes in flight are still judged, no new
    /// node is handed the new UKI.
    Paused,
    /// A wave's failures went over its budget: nothing more is handed
    /// out until the operator resumes or aborts.
    Halted,
    /// Every wave passed.
    Done,
    /// The operator aborted it (with `--revert`, its nodes in flight and
    /// failed were handed the old UKI again).
    Aborted,
}

impl RolloutState {
    pub const ALL: [RolloutState; 5] = [
        RolloutState::Running,
        RolloutState::Paused,
        RolloutState::Halted,
        RolloutState::Done,
        RolloutState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Done => "done",
            RolloutState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutState> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Not finished: it holds its group (one open rollout per group).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RolloutState::Running | RolloutState::Paused | RolloutState::Halted
        )
    }
}

/// Where one node of a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Its wave has not reached it: it keeps the old UKI.
    Waiting,
    /// Its boot artifacts name the new UKI; its next boot is judged.
    Handed,
    /// Attested on the new UKI, Joined, and its floor moved to it.
    Upgraded,
    /// Came back on another UKI, was refused, reported a failed boot, or
    /// did not come back in time. Handed the old UKI again, never the new
    /// one a second time in this rollout.
    Failed,
    /// Handed the old UKI again by a halt's auto-revert or `abort --revert`.
    Reverted,
}

impl NodeState {
    pub const ALL: [NodeState; 5] = [
        NodeState::Waiting,
        NodeState::Handed,
        NodeState::Upgraded,
        NodeState::Failed,
        NodeState::Reverted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Handed => "handed",
            NodeState::Upgraded => "upgraded",
            NodeState::Failed => "failed",
            NodeState::Reverted => "reverted",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the node's boot artifacts name the rollout's new UKI. A
    /// failed node gets the old one back: handing it the new UKI again is
    /// how a node that fell back to its old slot gets upgraded into a
    /// brick (Omni #1552).
    pub fn boots_target(self) -> bool {
        matches!(self, NodeState::Handed | NodeState::Upgraded)
    }

    /// The moves the engine may make; anything else is a bug it refuses.
    pub fn may_become(self, next: NodeState) -> bool {
        use NodeState::*;
        matches!(
            (self, next),
            (Waiting, Handed)
                | (Handed, Upgraded)
                | (Handed, Failed)
                | (Handed, Reverted)
                | (Failed, Reverted)
        )
    }
}

/// How big each wave after the canaries is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveSize {
    /// This many nodes.
    Count(u32),
    /// This percentage of the group (rounded up, at least one node).
    Percent(u32),
}

impl WaveSize {
    /// `25%` or `10`.
    pub fn parse(s: &str) -> Result<WaveSize, String> {
        let bad = || format!("wave size {s:?}: give a count (10) or a percentage (25%) above 0");
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(WaveSize::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.parse::<u32>() {
                Ok(n) if n > 0 => Ok(WaveSize::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveSize::Count(n) => write!(f, "{n}"),
            WaveSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The sizes of the waves a group of `total` nodes is cut into: wave 0
/// holds the canaries (none when `canary` is 0), then waves of `size`
/// until every node has one.
pub fn wave_sizes(total: u32, canary: u32, size: WaveSize) -> Vec<u32> {
    let canary = canary.min(total);
    let per = match size {
        WaveSize::Count(n) => n.max(1),
        WaveSize::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100).max(1) as u32,
    };
    let mut sizes = Vec::new();
    if canary > 0 {
        sizes.push(canary);
    }
    let mut left = total - canary;
    while left > 0 {
        let n = per.min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

/// The UKI a rollout moves its nodes to, and its place in the image order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub sha256: [u8; 32],
    pub epoch: i64,
}

/// What the server saw of a node since it was handed the new UKI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The newest attestation since then: the UKI its quote identified
    /// (`None`: none the server knows) and the report's id.
    pub attested: Option<(i64, Option<[u8; 32]>)>,
    /// A Joined report after that attestation.
    pub joined_after: bool,
    /// The node's rollback floor now.
    pub floor: Option<i64>,
    /// The newest failed boot since then (a refusal at Finish, or the
    /// node's own failed report): its reason and the phase that failed.
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub report_id: i64,
    pub reason: String,
    pub phase: Option<String>,
}

/// What [`judge`] decided about a handed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not back yet, or back and not yet Joined: wait.
    Pending,
    Upgraded,
    /// Failed, and why (what the operator sees).
    Failed(String),
}

fn short(sha: &[u8; 32]) -> String {
    crate::rollback::short(sha)
}

/// Judges a handed node. It counts as upgraded only on what the server
/// itself proved: the newest attestation identified the target UKI from
/// the quote, a Joined report followed it, and the node's floor reached
/// the target's epoch (which only a Joined report on a session whose
/// quote showed that UKI moves). A node that comes back on any other UKI
/// failed, whatever it reports; one that does not come back within
/// `timeout_ms` of `handed_at` failed too.
pub fn judge(e: &Evidence, target: &Target, handed_at: i64, now: i64, timeout_ms: i64) -> Verdict {
    // A failed boot newer than the newest attestation decides.
    if let Some(f) = &e.failure {
        if e.attested.is_none_or(|(id, _)| f.report_id > id) {
            let phase = f
                .phase
                .as_deref()
                .map(|p| format!("phase {p}: "))
                .unwrap_or_default();
            return Verdict::Failed(format!("failed boot: {phase}{}", f.reason));
        }
    }
    match e.attested {
        Some((_, Some(sha))) if sha != target.sha256 => {
            return Verdict::Failed(format!(
            "came back on UKI {}, not the target {} (last-known-good or boot counting fell back)",
            short(&sha),
            short(&target.sha256)
        ))
        }
        Some((_, None)) => {
            return Verdict::Failed(format!(
                "came back on a UKI the server cannot identify from its quote, not the target {}",
                short(&target.sha256)
            ))
        }
        Some((_, Some(_))) if e.joined_after && e.floor.is_some_and(|f| f >= target.epoch) => {
            return Verdict::Upgraded
        }
        _ => {}
    }
    if now.saturating_sub(handed_at) < timeout_ms {
        return Verdict::Pending;
    }
    let secs = timeout_ms / 1000;
    Verdict::Failed(match (e.attested, e.joined_after) {
        (None, _) => format!("no attested boot within {secs} s of being handed the new UKI"),
        (Some(_), false) => {
            format!("attested on the target but reported no Joined within {secs} s")
        }
        (Some(_), true) => format!(
            "Joined on the target but its rollback floor did not reach image epoch {} within {secs} s",
            target.epoch
        ),
    })
}

/// How the nodes of the current wave stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaveCounts {
    pub waiting: u32,
    pub handed: u32,
    pub upgraded: u32,
    pub failed: u32,
    pub reverted: u32,
}

impl WaveCounts {
    pub fn add(&mut self, s: NodeState) {
        match s {
            NodeState::Waiting => self.waiting += 1,
            NodeState::Handed => self.handed += 1,
            NodeState::Upgraded => self.upgraded += 1,
            NodeState::Failed => self.failed += 1,
            NodeState::Reverted => self.reverted += 1,
        }
    }
}

/// The knobs [`next_step`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_in_flight: u32,
    pub failure_budget: u32,
    pub soak_ms: i64,
}

/// What a running rollout's current wave does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Hand this many more of the wave's waiting nodes the new UKI.
    Hand(u32),
    /// Nothing to do now, and why (in flight, window closed, soaking).
    Wait(String),
    /// Every node of the wave settled within budget: soak until then.
    Soak(i64),
    /// Soaked: on to the next wave.
    NextWave,
    /// The last wave soaked: done.
    Done,
    /// Failures went over the budget.
    Halt(String),
}

/// Decides the current wave's next step. `window_open` is whether a
/// maintenance window is open now (true when the rollout has none);
/// `soak_until` is set once the wave settled.
pub fn next_step(
    wave: u32,
    last_wave: u32,
    c: WaveCounts,
    limits: Limits,
    window_open: bool,
    soak_until: Option<i64>,
    now: i64,
) -> Step {
    if c.failed > limits.failure_budget {
        return Step::Halt(format!(
            "wave {wave}: {} failed, over its failure budget of {}",
            c.failed, limits.failure_budget
        ));
    }
    if c.waiting > 0 || c.handed > 0 {
        if c.waiting == 0 || c.handed >= limits.max_in_flight {
            return Step::Wait(format!("wave {wave}: {} in flight", c.handed));
        }
        if !window_open {
            return Step::Wait(format!(
                "wave {wave}: maintenance window closed, {} waiting",
                c.waiting
            ));
        }
        return Step::Hand(c.waiting.min(limits.max_in_flight - c.handed));
    }
    match soak_until {
        None => Step::Soak(now.saturating_add(limits.soak_ms)),
        Some(t) if now < t => Step::Wait(format!("wave {wave}: soaking")),
        Some(_) if wave >= last_wave => Step::Done,
        Some(_) => Step::NextWave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Target = Target {
        sha256: [0xbb; 32],
        epoch: 2,
    };
    const LIMITS: Limits = Limits {
        max_in_flight: 3,
        failure_budget: 1,
        soak_ms: 1000,
    };

    #[test]
    fn waves_start_with_the_canaries_and_cover_every_node_once() {
        assert_eq!(
            wave_sizes(200, 2, WaveSize::Percent(25)),
            [2, 50, 50, 50, 48]
        );
        assert_eq!(wave_sizes(10, 0, WaveSize::Count(4)), [4, 4, 2]);
        assert_eq!(wave_sizes(3, 5, WaveSize::Count(4)), [3]);
        assert_eq!(wave_sizes(0, 1, WaveSize::Percent(10)), Vec::<u32>::new());
        assert_eq!(
            wave_sizes(7, 1, WaveSize::Percent(1)),
            [1, 1, 1, 1, 1, 1, 1]
        );
        assert_eq!(WaveSize::parse("25%"), Ok(WaveSize::Percent(25)));
        assert_eq!(WaveSize::parse("10"), Ok(WaveSize::Count(10)));
        for bad in ["0", "0%", "101%", "x", "-3", ""] {
            assert!(WaveSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_counts_only_on_the_target_quote_a_joined_and_a_raised_floor() {
        let on = |sha: [u8; 32]| Some((10, Some(sha)));
        let full = Evidence {
            attested: on(T.sha256),
            joined_after: true,
            floor: Some(2),
            failure: None,
        };
        assert_eq!(judge(&full, &T, 0, 5, 100), Verdict::Upgraded);
        // Joined but the floor never moved (the Joined came on a session
        // whose quote did not show the target): not counted, and after the
        // timeout, failed.
        let unblessed = Evidence {
            floor: Some(1),
            ..full.clone()
        };
        assert_eq!(judge(&unblessed, &T, 0, 5, 100), Verdict::Pending);
        assert!(
            matches!(judge(&unblessed, &T, 0, 100, 100), Verdict::Failed(r) if r.contains("floor did not reach image epoch 2"))
        );
        let no_join = Evidence {
            joined_after: false,
            ..full.clone()
        };
        assert_eq!(judge(&no_join, &T, 0, 5, 100), Verdict::Pending);
        // Back on the old UKI, Joined and all: failed at once, never done.
        let old = Evidence {
            attested: on([0xaa; 32]),
            ..full.clone()
        };
        assert!(
            matches!(judge(&old, &T, 0, 5, 100), Verdict::Failed(r) if r.contains("came back on UKI aaaaaaaaaaaaaaaa"))
        );
        let unknown = Evidence {
            attested: Some((10, None)),
            ..full.clone()
        };
        assert!(matches!(judge(&unknown, &T, 0, 5, 100), Verdict::Failed(_)));
        // Silence: pending, then failed at the timeout.
        let silent = Evidence::default();
        assert_eq!(judge(&silent, &T, 0, 99, 100), Verdict::Pending);
        assert!(
            matches!(judge(&silent, &T, 0, 100, 100), Verdict::Failed(r) if r.contains("no attested boot within"))
        );
        // A refusal newer than the attestation decides, with its phase.
        let refused = Evidence {
            failure: Some(Failure {
                report_id: 11,
                reason: "pcr-policy-mismatch".into(),
                phase: Some("attest".into()),
            }),
            ..full.clone()
        };
        assert_eq!(
            judge(&refused, &T, 0, 5, 100),
            Verdict::Failed("failed boot: phase attest: pcr-policy-mismatch".into())
        );
        // An older failure (before a good boot) does not.
        let recovered = Evidence {
            failure: Some(Failure {
                report_id: 9,
                reason: "x".into(),
                phase: None,
            }),
            ..full
        };
        assert_eq!(judge(&recovered, &T, 0, 5, 100), Verdict::Upgraded);
    }

    #[test]
    fn a_wave_hands_within_its_limits_soaks_and_halts_over_budget() {
        let c = |waiting, handed, upgraded, failed| WaveCounts {
            waiting,
            handed,
            upgraded,
            failed,
            reverted: 0,
        };
        assert_eq!(
            next_step(1, 3, c(10, 0, 0, 0), LIMITS, true, None, 0),
            Step::Hand(3)
        );
        assert_eq!(
            next_step(1, 3, c(10, 2, 0, 1), LIMITS, true, None, 0),
            Step::Hand(1)
        );
        assert!(
            matches!(next_step(1, 3, c(10, 3, 0, 0), LIMITS, true, None, 0), Step::Wait(w) if w.contains("3 in flight"))
        );
        // A closed window hands nothing, but in-flight nodes still settle.
        assert!(
            matches!(next_step(1, 3, c(10, 0, 0, 0), LIMITS, false, None, 0), Step::Wait(w) if w.contains("window closed"))
        );
        assert!(matches!(
            next_step(1, 3, c(0, 2, 0, 0), LIMITS, false, None, 0),
            Step::Wait(_)
        ));
        assert_eq!(
            next_step(1, 3, c(0, 0, 9, 1), LIMITS, true, None, 50),
            Step::Soak(1050)
        );
        assert!(
            matches!(next_step(1, 3, c(0, 0, 9, 1), LIMITS, true, Some(1050), 1049), Step::Wait(w) if w.contains("soaking"))
        );
        assert_eq!(
            next_step(1, 3, c(0, 0, 9, 1), LIMITS, true, Some(1050), 1050),
            Step::NextWave
        );
        assert_eq!(
            next_step(3, 3, c(0, 0, 10, 0), LIMITS, true, Some(1), 2),
            Step::Done
        );
        // Over budget halts at once, even with nodes still in flight.
        assert!(
            matches!(next_step(2, 3, c(5, 2, 1, 2), LIMITS, true, None, 0), Step::Halt(h) if h == "wave 2: 2 failed, over its failure budget of 1")
        );
    }

    #[test]
    fn node_moves_are_the_named_ones_and_a_failed_node_never_gets_the_target_again() {
        use NodeState::*;
        assert!(Waiting.may_become(Handed));
        assert!(Handed.may_become(Failed));
        assert!(!Failed.may_become(Handed));
        assert!(!Upgraded.may_become(Reverted));
        assert!(!Reverted.may_become(Handed));
        assert!(!Failed.boots_target() && !Reverted.boots_target() && !Waiting.boots_target());
        assert!(Handed.boots_target() && Upgraded.boots_target());
        for s in NodeState::ALL {
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
        }
        for s in RolloutState::ALL {
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
        }
    }
}
