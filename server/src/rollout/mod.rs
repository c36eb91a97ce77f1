//! Rollouts (issue 29): a group moves from one UKI to a newer one in
//! waves that advance only on what the TPM proved, and halt (and, with
//! `--auto-revert`, hand the old UKI back) by themselves.
//!
//! - `plan.rs`: the decisions, pure: typed states, waves, [`plan::judge`]
//!   (is a node upgraded, failed, or not back yet) and
//!   [`plan::next_step`] (what the current wave does next);
//! - `window.rs`: maintenance windows in a time zone (TZif read here);
//! - `engine.rs`: the same over the store: start, one tick, pause,
//!   resume, abort, the iPXE script a node's next boot gets, reboot locks'
//!   limit and the metrics' counts.
//!
//! Every replica ticks every open rollout once a second ([`TICK`]); the
//! rollout's row lock orders them, and each decides on what the last
//! wrote, so replicas agree through the database and losing one loses
//! nothing.

pub mod engine;
mod lock;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod window;

/// How often `ember serve` ticks the open rollouts.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);
