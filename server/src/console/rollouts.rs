//! The console's rollouts page: each recent rollout with its state and
//! why (a halt's reason names the nodes and their refusals), progress by
//! wave, every node's state and reason, and the timeline. Node names and
//! reasons are the nodes' text: they go through [`Untrusted`].

use maud::{html, Markup};

use ember_proto::untrusted::Untrusted;

use super::pages::layout;
use super::Operator;
use crate::rollback::short;
use crate::rollout::plan::{NodeState, RolloutState};
use crate::store::rollouts::{self, Rollout, RolloutNode};
use crate::store::{self, Result};

/// Rollouts the page shows, newest first.
const SHOWN: u32 = 10;

/// One rollout as the page shows it.
pub struct RolloutData {
    pub rollout: Rollout,
    pub nodes: Vec<RolloutNode>,
    pub events: Vec<(i64, String)>,
}

pub fn load(db: &mut store::Db) -> Result<Vec<RolloutData>> {
    let mut out = Vec::new();
    for r in rollouts::recent(db, SHOWN)? {
        out.push(RolloutData {
            nodes: rollouts::nodes(db, r.id)?,
            events: rollouts::events(db, r.id)?,
            rollout: r,
        });
    }
    Ok(out)
}

fn state_badge(s: RolloutState) -> Markup {
    let class = match s {
        RolloutState::Done => "ok",
        RolloutState::Halted | RolloutState::Aborted => "bad",
        RolloutState::Running | RolloutState::Paused => "mid",
    };
    html! { span class={"badge " (class)} { (s.as_str()) } }
}

fn node_badge(s: NodeState) -> Markup {
    let class = match s {
        NodeState::Upgraded => "ok",
        NodeState::Failed => "bad",
        NodeState::Handed | NodeState::Reverted => "mid",
        NodeState::Waiting => "none",
    };
    html! { span class={"badge " (class)} { (s.as_str()) } }
}

fn clock(start: i64, at: i64) -> String {
    let s = (at - start).max(0) / 1000;
    format!("+{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn page(op: &Operator, all: &[RolloutData]) -> Markup {
    layout(
        op,
        "Rollouts",
        "Rollouts",
        None,
        html! {
            h1 { "Rollouts" }
            @if all.is_empty() { p { "No rollout yet (" code { "ember rollout start --group G --uki NEW.efi --from OLD.efi" } ")." } }
            @for d in all { (one(d)) }
        },
    )
}

fn one(d: &RolloutData) -> Markup {
    let r = &d.rollout;
    let last = d.nodes.iter().map(|n| n.wave).max().unwrap_or(0);
    let count = |w: u32, s: NodeState| {
        d.nodes
            .iter()
            .filter(|n| n.wave == w && n.state == s)
            .count()
    };
    html! {
        section.rollout id={"rollout-" (r.id)} {
            h2 { "Rollout " (r.id) " · group " (Untrusted(&r.group).to_string()) " " (state_badge(r.state)) }
            p { "UKI " span.mono { (short(&r.previous)) } " → " span.mono { (short(&r.target)) } "; wave " (r.wave)
                "; canary " (r.canary) ", waves of " (r.wave_size.to_string()) ", " (r.max_in_flight) " in flight, failure budget " (r.failure_budget)
                ", soak " (r.soak_ms / 1000) " s, timeout " (r.timeout_ms / 1000) " s, auto-revert " (if r.auto_revert { "on" } else { "off" }) }
            @if !r.reason.is_empty() { p.reason { strong { "Why: " } (Untrusted(&r.reason).to_string()) } }
            table.waves {
                caption { "Progress by wave" }
                thead { tr { th scope="col" { "Wave" } @for s in NodeState::ALL { th scope="col" { (s.as_str()) } } } }
                tbody { @for w in 0..=last { tr {
                    th scope="row" { @if w == 0 && r.canary > 0 { "canary" } @else { (w) } }
                    @for s in NodeState::ALL { td { (count(w, s)) } }
                } } }
            }
            table.nodes {
                caption { "Nodes" }
                thead { tr { th scope="col" { "Node" } th scope="col" { "Wave" } th scope="col" { "State" } th scope="col" { "Reason" } } }
                tbody { @for n in &d.nodes { tr {
                    td { a href={"/node/" (super::pages::path_segment(&n.name))} { (Untrusted(&n.name).to_string()) } }
                    td { (n.wave) }
                    td { (node_badge(n.state)) }
                    td { (Untrusted(&n.reason).to_string()) }
                } } }
            }
            h3 { "Timeline" }
            ol.timeline { @for (at, t) in &d.events { li { span.mono { (clock(r.started_at, *at)) } " " (Untrusted(t).to_string()) } } }
        }
    }
}
