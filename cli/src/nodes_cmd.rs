//! `ember nodes`: the enrolled nodes and how their last boots went;
//! `ember nodes show` one node's boots, each refusal explained (expected
//! against received, the command that allows it); `ember nodes
//! allow-rollback` lowers rollback floors on purpose.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use ember_proto::untrusted::Untrusted;
use ember_server::rollback::short;
use ember_server::store::{self, hex, images, reports};

use crate::state_args::StateArgs;

#[derive(Args)]
pub struct NodesArgs {
    #[command(subcommand)]
    pub cmd: Option<NodesCmd>,
    #[command(flatten)]
    pub state: StateArgs,
    /// Only the nodes whose last attested boot ran a UKI containing this
    /// package (NAME, or NAME=VERSION exactly as the SBOM gives it), with
    /// since when: answered from the UKI the node's quote identified and
    /// the SBOM `ember policy set --uki` stored, never from what a node says.
    #[arg(long, value_name = "NAME[=VERSION]")]
    pub package: Option<String>,
}

#[derive(Subcommand)]
pub enum NodesCmd {
    /// Lowers the rollback floor of nodes on purpose (rolling back a bad
    /// release): they may attest with an older UKI their policy allows
    /// again. Their TPM still refuses older last-known-good slots.
    AllowRollback(AllowRollbackArgs),
    /// Every change of a node's rollback floor, oldest first: the boots
    /// that blessed a newer UKI and who lowered it with allow-rollback.
    FloorLog(FloorLogArgs),
    /// One node's facts and its last boots, newest first: each refusal
    /// with what differed (expected against received) and the command
    /// that would allow it.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The node to show.
    #[arg(long)]
    pub node: String,
    /// How many of its last boot reports to list.
    #[arg(long, default_value_t = 10)]
    pub boots: u32,
}

#[derive(Args)]
pub struct FloorLogArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The node whose floor changes to list.
    #[arg(long)]
    pub node: String,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["node", "group", "all"])))]
pub struct AllowRollbackArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// This node.
    #[arg(long)]
    pub node: Option<String>,
    /// Every node of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Every node.
    #[arg(long)]
    pub all: bool,
    /// Lower the floor to this UKI's image epoch (its SHA-256, or the first
    /// 8+ hex digits of it, as `ember nodes` and refusals print it); nodes
    /// already at or below it keep theirs. Without it the floor is cleared.
    #[arg(long, value_name = "SHA256")]
    pub to: Option<String>,
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
    match args.cmd {
        Some(NodesCmd::AllowRollback(a)) => return allow_rollback(a),
        Some(NodesCmd::FloorLog(a)) => return floor_log(a),
        Some(NodesCmd::Show(a)) => return show(a),
        None => {}
    }
    if let Some(p) = &args.package {
        return package(&args.state, p);
    }
    let nodes = store::list_nodes(&mut args.state.open()?)?;
    println!(
        "{:<20} {:<12} {:<16} {:<10} {:<9} {:>8} {:>15} {:<21}  REASON",
        "NODE",
        "GROUP",
        "EK",
        "LAST-BOOT",
        "OUTCOME",
        "ATTEMPTS",
        "LAST-KNOWN-GOOD",
        "ROLLBACK-FLOOR"
    );
    for n in nodes {
        let floor = match &n.rollback_floor {
            None => "-".to_string(),
            Some((epoch, Some(sha))) => format!("{epoch} ({})", short(sha)),
            Some((epoch, None)) => format!("{epoch} (unknown)"),
        };
        println!(
            "{:<20} {:<12} {:<16} {:<10} {:<9} {:>8} {:>15} {:<21}  {}",
            n.name,
            n.group,
            hex(&n.ek_hash[..8.min(n.ek_hash.len())]),
            age(n.last_report_at),
            n.last_outcome.unwrap_or_else(|| "-".into()),
            n.attempts,
            n.last_known_good
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            floor,
            Untrusted(&n.last_reason.unwrap_or_default())
        );
    }
    Ok(())
}

/// `ember nodes --package NAME[=VERSION]`.
fn package(state: &StateArgs, query: &str) -> Result<()> {
    let (name, version) = match query.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (query.trim(), None),
    };
    if name.is_empty() || version == Some("") {
        bail!("--package {query:?}: give NAME or NAME=VERSION");
    }
    let q = store::packages::running(&mut state.open()?, name, version)?;
    if q.running.is_empty() {
        println!("no node's last attested boot ran a UKI containing {query}");
    } else {
        println!(
            "{:<20} {:<12} {:<24} {:<21} {:<23} LAST-ATTESTED",
            "NODE", "GROUP", "VERSION", "UKI", "SINCE"
        );
        for r in &q.running {
            let uki = match r.image_epoch {
                Some(e) => format!("{e} ({})", short(&r.image)),
                None => short(&r.image),
            };
            println!(
                "{:<20} {:<12} {:<24} {:<21} {:<23} {}",
                Untrusted(&r.node).to_string(),
                Untrusted(&r.group).to_string(),
                Untrusted(&r.version).to_string(),
                uki,
                utc(r.since),
                age(Some(r.last_attested))
            );
        }
    }
    if !q.unknown.is_empty() {
        println!(
            "unknown for {} node(s) whose last attested boot ran a UKI with no stored SBOM \
             (or none identified: a policy without --uki): {}",
            q.unknown.len(),
            q.unknown
                .iter()
                .map(|n| Untrusted(n).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn utc(ms: i64) -> String {
    let t = ember_nodeapi::utc::UtcTime::from_unix(ms.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Who ran this command, for the floor's change log.
pub(crate) fn operator() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok();
    match (uid, user) {
        (Some(uid), Some(user)) => format!("uid {uid} ({user})"),
        (Some(uid), None) => format!("uid {uid}"),
        (None, Some(user)) => user,
        (None, None) => "an operator".into(),
    }
}

/// The ordered image `prefix` names: at least 8 hex digits, one image.
fn image_by_prefix(db: &mut dyn store::Sql, prefix: &str) -> Result<images::BootImage> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < 8 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--to {prefix:?}: give the UKI's SHA-256 (at least its first 8 hex digits)");
    }
    let all = images::list(db)?;
    let found: Vec<_> = all
        .into_iter()
        .filter(|i| hex(&i.sha256).starts_with(&prefix))
        .collect();
    match found.len() {
        1 => Ok(found.into_iter().next().expect("one")),
        0 => bail!("--to {prefix}: no UKI with that SHA-256 has an image epoch (`ember policy set --uki` orders them; `ember policy show` lists them)"),
        n => bail!("--to {prefix}: {n} images start so; give more digits"),
    }
}

fn allow_rollback(a: AllowRollbackArgs) -> Result<()> {
    let mut db = a.state.open()?;
    let to =
        a.to.as_deref()
            .map(|p| image_by_prefix(&mut db, p))
            .transpose()?;
    let who = operator();
    let mut tx = db.transaction()?;
    let nodes: Vec<store::Node> = match (&a.node, &a.group) {
        (Some(name), _) => match store::node_by_name(&mut tx, name)? {
            Some(n) => vec![n],
            None => bail!("no node named {name:?}"),
        },
        (None, Some(group)) => store::nodes_of_group(&mut tx, Some(group))?,
        (None, None) => store::nodes_of_group(&mut tx, None)?,
    };
    if nodes.is_empty() {
        bail!("no nodes to change");
    }
    let lines = ember_server::rollback::allow(&mut tx, &nodes, to.as_ref(), &who)?;
    tx.commit()?;
    for l in lines {
        println!("{l}");
    }
    println!("changed by {who}; older UKIs the policy allows attest again, once each node boots one (its TPM still refuses older last-known-good slots)");
    Ok(())
}

fn floor_log(a: FloorLogArgs) -> Result<()> {
    let mut db = a.state.open()?;
    let Some(node) = store::node_by_name(&mut db, &a.node)? else {
        bail!("no node named {:?}", a.node);
    };
    let epoch = |e: Option<i64>| e.map_or("none".to_string(), |e| format!("image epoch {e}"));
    let changes = images::floor_changes(&mut db, node.id)?;
    if changes.is_empty() {
        println!(
            "{}: the rollback floor never moved (no boot was blessed)",
            node.name
        );
    }
    for c in changes {
        println!(
            "{:<10} {}: rollback floor {} -> {} ({})",
            age(Some(c.at)),
            node.name,
            epoch(c.old_floor),
            epoch(c.new_floor),
            Untrusted(&c.cause)
        );
    }
    Ok(())
}

fn show(a: ShowArgs) -> Result<()> {
    let mut db = a.state.open()?;
    let Some(node) = store::node_by_name(&mut db, &a.node)? else {
        bail!("no node named {:?}", a.node);
    };
    let facts = store::nodes::facts(&mut db, node.id)?;
    let floor = images::floor_of(&mut db, node.id)?;
    println!("node            {}", Untrusted(&node.name));
    println!("group           {}", Untrusted(&node.group));
    println!("EK (SHA-256)    {}", hex(&facts.ek_hash));
    println!("failed attempts {}", facts.attempts);
    println!(
        "last-known-good {}",
        facts
            .last_known_good
            .map_or("none".to_string(), |v| format!("overlay {v}"))
    );
    println!(
        "rollback floor  {}",
        match &floor {
            None => "none".to_string(),
            Some(f) => match &f.image {
                Some(i) => format!("image epoch {} ({})", f.epoch, short(&i.sha256)),
                None => format!("image epoch {} (unknown image)", f.epoch),
            },
        }
    );
    let boots = reports::of_node(&mut db, node.id, a.boots)?;
    if boots.is_empty() {
        println!("no boot reported yet");
    }
    for r in boots {
        println!();
        let overlay = r
            .version_id
            .map_or(String::new(), |v| format!(" overlay {v}"));
        println!("{:<10} {}{overlay}", age(Some(r.at)), r.outcome.as_str());
        if !r.reason.is_empty() {
            println!("  why: {}", Untrusted(&r.reason));
        }
        if r.outcome != reports::Outcome::Failed {
            continue;
        }
        let e = reports::explanation(&mut db, &r)?;
        for x in &e.items {
            // An event's label is the node's text: shown inert.
            println!("  {}", Untrusted(&x.what));
            println!("    expected {}", Untrusted(&x.expected));
            println!("    received {}", Untrusted(&x.received));
        }
        if let Some(fix) = &e.fix {
            println!("  fix (only for a boot you trust): {}", Untrusted(fix));
        }
    }
    Ok(())
}
