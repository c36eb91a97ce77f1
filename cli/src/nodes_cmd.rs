//! `ember nodes`: the enrolled nodes and how their last boots went.

use anyhow::Result;
use clap::Args;

use ember_server::store::{self, hex};

use crate::state_args::StateArgs;

#[derive(Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

fn age(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let s = (store::now_ms() - ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn run(args: NodesArgs) -> Result<()> {
    let nodes = store::list_nodes(&mut args.state.open()?)?;
    println!(
        "{:<20} {:<12} {:<16} {:<10} {:<9} {:>8} {:>15}  REASON",
        "NODE", "GROUP", "EK", "LAST-BOOT", "OUTCOME", "ATTEMPTS", "LAST-KNOWN-GOOD"
    );
    for n in nodes {
        println!(
            "{:<20} {:<12} {:<16} {:<10} {:<9} {:>8} {:>15}  {}",
            n.name,
            n.group,
            hex(&n.ek_hash[..8.min(n.ek_hash.len())]),
            age(n.last_report_at),
            n.last_outcome.unwrap_or_else(|| "-".into()),
            n.attempts,
            n.last_known_good
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            for_terminal(&n.last_reason.unwrap_or_default())
        );
    }
    Ok(())
}

/// A node's report reason is the node's own text: control characters
/// (terminal escapes, newlines that forge rows) are shown as `\u{..}`.
fn for_terminal(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::for_terminal;

    #[test]
    fn escapes_and_newlines_cannot_reach_the_terminal() {
        assert_eq!(for_terminal("rke2 did not start"), "rke2 did not start");
        let shown = for_terminal("x\x1b]0;pwned\x07\nnode-b  default");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(
            shown.contains("\\u{1b}") && shown.contains("\\u{a}"),
            "{shown}"
        );
    }
}
