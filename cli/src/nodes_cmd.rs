//! `ember nodes`: the enrolled nodes and how their last boots went.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ember_server::store::{self, hex, StateDir};

#[derive(Args)]
pub struct NodesArgs {
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
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
    let conn = store::open(&StateDir::new(&args.state))?;
    let mut stmt = conn.prepare(
        "SELECT n.name, n.group_name, n.ek_hash, n.attempts, n.last_known_good,
                (SELECT at FROM boot_reports b WHERE b.node_id = n.id ORDER BY at DESC, id DESC LIMIT 1),
                (SELECT outcome FROM boot_reports b WHERE b.node_id = n.id ORDER BY at DESC, id DESC LIMIT 1),
                (SELECT reason FROM boot_reports b WHERE b.node_id = n.id AND outcome != 'attested' ORDER BY at DESC, id DESC LIMIT 1)
         FROM nodes n ORDER BY n.name",
    )?;
    println!(
        "{:<20} {:<12} {:<16} {:<10} {:<9} {:>8} {:>15}  REASON",
        "NODE", "GROUP", "EK", "LAST-BOOT", "OUTCOME", "ATTEMPTS", "LAST-KNOWN-GOOD"
    );
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, Option<String>>(7)?,
        ))
    })?;
    for row in rows {
        let (name, group, ek, attempts, lkg, at, outcome, reason) = row?;
        println!(
            "{name:<20} {group:<12} {:<16} {:<10} {:<9} {attempts:>8} {:>15}  {}",
            hex(&ek[..8.min(ek.len())]),
            age(at),
            outcome.unwrap_or_else(|| "-".into()),
            lkg.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            for_terminal(&reason.unwrap_or_default())
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
