//! The console's pages as HTML, from typed data. maud escapes every
//! interpolation; a node's text (names, reasons) also goes through
//! [`Untrusted`], so control and bidi characters show as `\u{..}` instead
//! of reordering what the operator reads. No inline script or style: the
//! stylesheet and the script are files the CSP allows by origin.

use std::collections::HashMap;

use maud::{html, Markup, DOCTYPE};

use ember_proto::untrusted::Untrusted;

use super::Operator;
use crate::rollback::short;
use crate::store::images::{self, BootImage, FloorChange};
use crate::store::nodes::{FleetOutcome, FleetPage, FleetQuery, FleetSort};
use crate::store::overlays::{self, OverlayListing};
use crate::store::packages;
use crate::store::phases::PhaseStats;
use crate::store::reports::{self, BootReport, Explanation, Outcome};
use crate::store::{self, hex, policies, Node, Policy, Result};

/// Boots the boot-time page's percentiles are taken over.
pub const BOOT_TIME_BOOTS: u32 = 500;
/// Boot reports the node page lists (a node keeps `--keep-boots` boots,
/// each an attestation and a report).
const NODE_REPORTS: u32 = 100;

/// A node's text as an operator may see it.
fn text(s: &str) -> String {
    Untrusted(s).to_string()
}

/// A path segment with everything but unreserved characters escaped.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` and `+` (a form's space); None for a bad escape or
/// bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// "42 s ago", "3 min ago", "5 h ago", "2 d ago".
fn age(at: i64, now: i64) -> String {
    let s = (now - at).max(0) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// UTC date and time of a millisecond stamp.
fn utc(ms: i64) -> String {
    let t = ember_nodeapi::utc::UtcTime::from_unix(ms.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

pub(super) fn layout(
    op: &Operator,
    title: &str,
    nav: &str,
    live: Option<i64>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Ember console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/live.js" defer {}
            }
            body data-live=[live] {
                header {
                    a.brand href="/fleet" { "Ember" }
                    nav aria-label="Pages" {
                        @for (href, name) in [("/fleet", "Fleet"), ("/boot-time", "Boot time"), ("/policies", "Policies, UKIs, overlays"), ("/rollouts", "Rollouts"), ("/packages", "Packages")] {
                            a href=(href) aria-current=[(nav == name).then_some("page")] { (name) }
                        }
                    }
                    span.who { "operator " (op.name) }
                }
                main id="main" { (body) }
            }
        }
    }
}

pub fn error(status: u16, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (status) " · Ember console" }
            }
            body { h1 { (status) } p { (message) } }
        }
    }
}

/// The fleet page's query from its URL parameters.
pub fn fleet_query(q: &HashMap<String, String>, page_size: u32) -> FleetQuery {
    let page: u32 = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    FleetQuery {
        group: q.get("group").filter(|g| !g.is_empty()).cloned(),
        outcome: q.get("outcome").and_then(|o| FleetOutcome::parse(o)),
        sort: q
            .get("sort")
            .and_then(|s| FleetSort::parse(s))
            .unwrap_or_default(),
        descending: q.get("dir").is_some_and(|d| d == "desc"),
        offset: (page - 1).saturating_mul(page_size),
        limit: page_size,
    }
}

/// The fleet URL for `q` changed by `f`.
fn fleet_url(q: &FleetQuery, page: u32, sort: FleetSort, descending: bool) -> String {
    let mut url = format!(
        "/fleet?sort={}&dir={}&page={page}",
        sort.as_str(),
        if descending { "desc" } else { "asc" }
    );
    if let Some(g) = &q.group {
        url.push_str(&format!("&group={}", path_segment(g)));
    }
    if let Some(o) = q.outcome {
        url.push_str(&format!("&outcome={}", o.as_str()));
    }
    url
}

fn outcome_badge(outcome: Option<&str>) -> Markup {
    let o = outcome.unwrap_or("never");
    let class = match o {
        "joined" => "ok",
        "failed" => "bad",
        "attested" => "mid",
        _ => "none",
    };
    html! { span class={"badge " (class)} { (o) } }
}

fn uki_label(sha: &[u8; 32], ukis: &[BootImage]) -> String {
    match ukis.iter().find(|u| u.sha256 == *sha) {
        Some(u) => format!("{} (epoch {})", short(sha), u.epoch),
        None => short(sha),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn fleet(
    op: &Operator,
    page: &FleetPage,
    groups: &[String],
    q: &FleetQuery,
    ukis: &[BootImage],
    latest: i64,
    now: i64,
) -> Markup {
    let page_no = q.offset / q.limit.max(1) + 1;
    let pages = (page.total.div_ceil(u64::from(q.limit.max(1)))).max(1);
    let header = |sort: FleetSort, label: &str| {
        let desc = q.sort == sort && !q.descending;
        let mark = if q.sort == sort {
            if q.descending {
                " ▼"
            } else {
                " ▲"
            }
        } else {
            ""
        };
        html! { th scope="col" { a href=(fleet_url(q, 1, sort, desc)) { (label) (mark) } } }
    };
    layout(
        op,
        "Fleet",
        "Fleet",
        Some(latest),
        html! {
            h1 { "Fleet" }
            form.filters method="get" action="/fleet" {
                label for="group" { "Group" }
                select id="group" name="group" {
                    option value="" { "all groups" }
                    @for g in groups {
                        option value=(g) selected[q.group.as_deref() == Some(g.as_str())] { (text(g)) }
                    }
                }
                label for="outcome" { "Last boot" }
                select id="outcome" name="outcome" {
                    option value="" { "any outcome" }
                    @for o in FleetOutcome::ALL {
                        option value=(o.as_str()) selected[q.outcome == Some(o)] { (o.as_str()) }
                    }
                }
                input type="hidden" name="sort" value=(q.sort.as_str());
                input type="hidden" name="dir" value=(if q.descending { "desc" } else { "asc" });
                button type="submit" { "Filter" }
            }
            p.count { (page.total) (if page.total == 1 { " node" } else { " nodes" }) "; page " (page_no) " of " (pages) }
            div.scroll {
                table.fleet {
                    thead { tr {
                        (header(FleetSort::Name, "Name"))
                        (header(FleetSort::Group, "Group"))
                        th scope="col" { "EK" }
                        (header(FleetSort::LastBoot, "Last boot"))
                        th scope="col" { "Booted UKI" }
                        th scope="col" { "Overlay" }
                        th scope="col" { "Last known good" }
                        (header(FleetSort::Floor, "Rollback floor"))
                        (header(FleetSort::Attempts, "Failed attempts"))
                    } }
                    tbody {
                        @for n in &page.rows {
                            tr {
                                td { a href={"/node/" (path_segment(&n.name))} { (text(&n.name)) } }
                                td { (text(&n.group)) }
                                td.mono { (hex(&n.ek_hash[..8])) }
                                td {
                                    (outcome_badge(n.last_outcome.as_deref()))
                                    @if let Some(at) = n.last_at { " " span.age title=(utc(at)) { (age(at, now)) } }
                                }
                                td.mono { @if let Some(u) = &n.booted_uki { (uki_label(u, ukis)) } @else { "–" } }
                                td { @if let Some(v) = n.last_version { (v) } @else { "–" } }
                                td { @if let Some(v) = n.last_known_good { (v) } @else { "–" } }
                                td { @if let Some(f) = n.rollback_floor { "epoch " (f) } @else { "none" } }
                                td { (n.attempts) }
                            }
                        }
                    }
                }
            }
            nav.pages aria-label="Pagination" {
                @if page_no > 1 { a href=(fleet_url(q, page_no - 1, q.sort, q.descending)) { "← previous" } }
                @if u64::from(page_no) < pages { a href=(fleet_url(q, page_no + 1, q.sort, q.descending)) { "next →" } }
            }
        },
    )
}

/// What the node page shows, read in one go.
pub struct NodeData {
    pub node: Node,
    pub ek_hash: [u8; 32],
    pub attempts: u32,
    pub last_known_good: Option<i64>,
    pub floor: Option<images::Floor>,
    pub reports: Vec<BootReport>,
    /// The refusals' explanations, by report id.
    pub explanations: HashMap<i64, Explanation>,
    pub floor_log: Vec<FloorChange>,
    pub assigned: Option<i64>,
    pub assignments: Vec<OverlayListing>,
    pub policy: Option<Policy>,
    /// Ordered UKIs below the floor, which "allow rollback" may go to.
    pub below_floor: Vec<BootImage>,
    /// The UKI the node's last attested boot ran (quote-identified) and
    /// the packages its stored SBOM names.
    pub booted: Option<([u8; 32], Vec<packages::Package>)>,
    /// The newest boot report of all (the live updates start from it).
    pub latest: i64,
}

impl NodeData {
    pub fn load(db: &mut store::Db, name: &str) -> Result<Option<NodeData>> {
        let Some(node) = store::node_by_name(db, name)? else {
            return Ok(None);
        };
        let facts = store::nodes::facts(db, node.id)?;
        let floor = images::floor_of(db, node.id)?;
        let below_floor = match &floor {
            Some(f) => images::list(db)?
                .into_iter()
                .filter(|i| i.epoch < f.epoch)
                .collect(),
            None => Vec::new(),
        };
        let targets = [
            format!("node:{}", node.name),
            format!("group:{}", node.group),
        ];
        let assignments = overlays::list(db)?
            .into_iter()
            .filter(|o| o.targets.iter().any(|t| targets.contains(t)))
            .collect();
        let reports = reports::of_node(db, node.id, NODE_REPORTS)?;
        let mut explanations = HashMap::new();
        for r in reports.iter().filter(|r| r.outcome == Outcome::Failed) {
            let e = reports::explanation(db, r)?;
            if e != Explanation::default() {
                explanations.insert(r.id, e);
            }
        }
        let booted = match packages::last_attested_image(db, node.id)? {
            Some(sha) => Some((sha, packages::of_image(db, &sha)?)),
            None => None,
        };
        Ok(Some(NodeData {
            booted,
            ek_hash: facts.ek_hash,
            attempts: facts.attempts,
            last_known_good: facts.last_known_good,
            floor,
            reports,
            explanations,
            floor_log: images::floor_changes(db, node.id)?,
            assigned: overlays::assigned(db, &node)?.map(|a| a.version_id),
            assignments,
            policy: policies::effective(db, &node.name, &node.group)?,
            below_floor,
            latest: reports::latest_id(db)?,
            node,
        }))
    }
}

pub fn node(op: &Operator, d: &NodeData, csrf: &str, now: i64) -> Markup {
    let name = text(&d.node.name);
    layout(
        op,
        &name,
        "",
        Some(d.latest),
        html! {
            h1 { "Node " (name) }
            dl.facts {
                dt { "Group" } dd { (text(&d.node.group)) }
                dt { "EK (SHA-256)" } dd.mono { (hex(&d.ek_hash)) }
                dt { "Failed attempts" } dd { (d.attempts) }
                dt { "Last known good" } dd { @if let Some(v) = d.last_known_good { "overlay " (v) } @else { "none" } }
                dt { "Rollback floor" } dd {
                    @match &d.floor {
                        Some(f) => { "image epoch " (f.epoch) @if let Some(i) = &f.image { " (" span.mono { (short(&i.sha256)) } ")" } }
                        None => { "none" }
                    }
                }
                dt { "Policy" } dd { @if let Some(p) = &d.policy { (p.scope) } @else { "none (refused unless lab mode)" } }
            }
            @if d.floor.is_some() {
                form.action method="post" action={"/node/" (path_segment(&d.node.name)) "/allow-rollback"} {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="to" { "Allow rollback to" }
                    select id="to" name="to" {
                        option value="none" { "any UKI the policy allows (clear the floor)" }
                        @for i in &d.below_floor {
                            option value=(i.epoch) { "image epoch " (i.epoch) " (" (short(&i.sha256)) ")" }
                        }
                    }
                    button type="submit" { "Allow rollback" }
                    p.hint { "Same as " code { "ember nodes allow-rollback --node " (name) } "; recorded as console operator " (op.name) "." }
                }
            }
            h2 { "Boots" }
            @if d.reports.is_empty() { p { "No boot reported yet." } }
            @for r in &d.reports {
                section.boot id={"boot-" (r.id)} {
                    h3 {
                        (outcome_badge(Some(r.outcome.as_str())))
                        " " span title=(utc(r.at)) { (age(r.at, now)) }
                        @if let Some(v) = r.version_id { " · overlay " (v) }
                    }
                    @if !r.reason.is_empty() {
                        @if r.outcome == Outcome::Failed {
                            p.explain { strong { "Why: " } span.reason { (text(&r.reason)) } }
                            @if let Some(e) = d.explanations.get(&r.id) { (explanation(e)) }
                        } @else {
                            p.reason { (text(&r.reason)) }
                        }
                    }
                    @if r.timeline_version.is_some() {
                        figure {
                            img.timeline src={"/node/" (path_segment(&d.node.name)) "/boot/" (r.id) ".svg"}
                                alt={"Boot timeline of report " (r.id)} loading="lazy";
                            @if let Some(o) = &r.overlay {
                                figcaption { "overlay: receive " (o.receive_ms) " ms, open " (o.open_ms) " ms, unpack " (o.unpack_ms) " ms, write " (o.write_ms) " ms; " (o.sealed_bytes) " sealed bytes" }
                            }
                        }
                    }
                }
            }
            h2 { "Rollback floor log" }
            @if d.floor_log.is_empty() { p { "The floor never moved." } } @else {
                table { thead { tr { th scope="col" { "When" } th scope="col" { "From" } th scope="col" { "To" } th scope="col" { "Why" } } }
                    tbody { @for c in &d.floor_log { tr {
                        td { (utc(c.at)) }
                        td { @if let Some(e) = c.old_floor { (e) } @else { "none" } }
                        td { @if let Some(e) = c.new_floor { (e) } @else { "none" } }
                        td { (text(&c.cause)) }
                    } } }
                }
            }
            h2 { "Packages" }
            @match &d.booted {
                None => { p { "Unknown: no attested boot identified a UKI yet." } }
                Some((sha, pkgs)) if pkgs.is_empty() => {
                    p { "Unknown: the last attested boot ran UKI " span.mono { (short(sha)) } ", whose SBOM the server does not have (" code { "ember policy set --uki" } " stores the one beside the UKI)." }
                }
                Some((sha, pkgs)) => {
                    details.packages {
                        summary { (pkgs.len()) @if pkgs.len() == 1 { " package" } @else { " packages" } " in UKI " span.mono { (short(sha)) } ", the one the last attested boot ran (from its quote)" }
                        (package_table(pkgs))
                    }
                }
            }
            h2 { "Overlay assignments" }
            p { "Served now: " @if let Some(v) = d.assigned { "overlay " (v) } @else { "none" } }
            @if !d.assignments.is_empty() {
                ul { @for o in &d.assignments { li { "overlay " (o.overlay.version_id) " → " (o.targets.join(", ")) " (" (text(&o.source)) ")" } } }
            }
        },
    )
}

fn package_table(pkgs: &[packages::Package]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "Package" } th scope="col" { "Version" } th scope="col" { "purl" } } }
            tbody { @for p in pkgs { tr {
                td { a href={"/packages?name=" (query_value(&p.name))} { (p.name) } }
                td.mono { (p.version) }
                td.mono { (p.purl) }
            } } }
        }
    }
}

/// `s` percent-encoded for a query string value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The fleet's package query: which nodes' last attested boot ran a UKI
/// containing `name` (at `version`), or only the form when no name is
/// given.
pub fn packages_page(
    op: &Operator,
    name: &str,
    version: &str,
    found: Option<&packages::PackageQuery>,
    ukis: &[BootImage],
    now: i64,
) -> Markup {
    layout(
        op,
        "Packages",
        "Packages",
        None,
        html! {
            h1 { "Which nodes run a package" }
            form.filters method="get" action="/packages" {
                label for="name" { "Package" }
                input id="name" name="name" value=(name) required size="32" placeholder="containerd";
                label for="version" { "Version (exact, optional)" }
                input id="version" name="version" value=(version) placeholder="1.6.20~ds1-1";
                button type="submit" { "Find" }
            }
            p.hint { "Answered from the UKI each node's last attested boot ran, as its quote identified it, and that UKI's SBOM (stored by " code { "ember policy set --uki" } "); never from what a node says. Same as " code { "ember nodes --package NAME[=VERSION]" } "." }
            @if let Some(q) = found {
                @if q.running.is_empty() {
                    p { "No node's last attested boot ran a UKI containing " strong { (name) @if !version.is_empty() { "=" (version) } } "." }
                } @else {
                    table {
                        thead { tr {
                            th scope="col" { "Node" } th scope="col" { "Group" } th scope="col" { "Version" }
                            th scope="col" { "UKI" } th scope="col" { "Since" } th scope="col" { "Last attested" }
                        } }
                        tbody { @for r in &q.running { tr {
                            td { a href={"/node/" (path_segment(&r.node))} { (text(&r.node)) } }
                            td { (text(&r.group)) }
                            td.mono { (r.version) }
                            td.mono { (uki_label(&r.image, ukis)) }
                            td { span title=(utc(r.since)) { (utc(r.since)) } }
                            td { span title=(utc(r.last_attested)) { (age(r.last_attested, now)) } }
                        } } }
                    }
                }
                @if !q.unknown.is_empty() {
                    p.hint { "Unknown for " (q.unknown.len()) " node(s) whose last attested boot ran a UKI with no stored SBOM (or none identified): "
                        @for (i, n) in q.unknown.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={"/node/" (path_segment(n))} { (text(n)) }
                        }
                    }
                }
            }
        },
    )
}

/// A refusal's measurements, expected against received, and the command
/// that allows the boot. Every field goes through [`text`]: an event's
/// label comes from the node's log.
fn explanation(e: &Explanation) -> Markup {
    html! {
        @if !e.items.is_empty() {
            div.scroll { table.explained {
                caption { "What differed" }
                thead { tr { th scope="col" { "Measurement" } th scope="col" { "Expected" } th scope="col" { "Received" } } }
                tbody { @for x in &e.items { tr {
                    th scope="row" { (text(&x.what)) }
                    td.mono.digest { (text(&x.expected)) }
                    td.mono.digest.received { (text(&x.received)) }
                } } }
            } }
        }
        @match &e.fix {
            Some(fix) => div.fix {
                p { strong { "Fix" } " — only if this boot is one you trust (a UKI you deployed): run" }
                pre { code.fix { (text(fix)) } }
            },
            None => p.fix { strong { "Fix: " } "no policy change allows this; the node's log or quote is not what its TPM measured." },
        }
    }
}

pub fn boot_time(
    op: &Operator,
    stats: &[PhaseStats],
    groups: &[String],
    group: Option<&str>,
    latest: i64,
) -> Markup {
    let max = stats.iter().map(|s| s.p90_ms).max().unwrap_or(1).max(1);
    let row_h = 26i64;
    let height = 30 + row_h * stats.len() as i64;
    // Bars up to 480 px, so the longest bar's label fits in the 800 px box.
    let scale = |ms: u64| (ms as f64 / max as f64 * 480.0).round() as i64;
    layout(
        op,
        "Boot time",
        "Boot time",
        Some(latest),
        html! {
            h1 { "Boot time per phase" }
            form.filters method="get" action="/boot-time" {
                label for="group" { "Group" }
                select id="group" name="group" {
                    option value="" { "all groups" }
                    @for g in groups { option value=(g) selected[group == Some(g.as_str())] { (text(g)) } }
                }
                button type="submit" { "Show" }
            }
            p { "p50 and p90 of each phase's duration over the newest " (BOOT_TIME_BOOTS) " reported boots" @if let Some(g) = group { " of group " (text(g)) } "." }
            @if stats.is_empty() { p { "No boot has reported its phases yet." } } @else {
                svg.chart role="img" aria-label="p50 and p90 per phase" viewBox={"0 0 800 " (height)} width="800" height=(height) xmlns="http://www.w3.org/2000/svg" {
                    @for (i, s) in stats.iter().enumerate() {
                        @let y = 20 + row_h * i as i64;
                        text x="150" y={(y + 15)} text-anchor="end" { (s.name) }
                        rect.p90 x="160" y=(y) width=(scale(s.p90_ms).max(1)) height="18" {}
                        rect.p50 x="160" y={(y + 4)} width=(scale(s.p50_ms).max(1)) height="10" {}
                        text x={(170 + scale(s.p90_ms))} y={(y + 15)} { (s.p50_ms) " / " (s.p90_ms) " ms" }
                    }
                }
                table { thead { tr { th scope="col" { "Phase" } th scope="col" { "Boots" } th scope="col" { "p50 ms" } th scope="col" { "p90 ms" } } }
                    tbody { @for s in stats { tr { td { (s.name) } td { (s.boots) } td { (s.p50_ms) } td { (s.p90_ms) } } } }
                }
            }
        },
    )
}

/// What the policies page shows.
pub struct PolicyData {
    pub policies: Vec<Policy>,
    pub ukis: Vec<BootImage>,
    pub overlays: Vec<OverlayListing>,
}

impl PolicyData {
    pub fn load(db: &mut store::Db) -> Result<PolicyData> {
        let mut policies = Vec::new();
        for scope in policies::scopes(db)? {
            if let Some(p) = policies::get(db, &scope)? {
                policies.push(p);
            }
        }
        Ok(PolicyData {
            policies,
            ukis: images::list(db)?,
            overlays: overlays::list(db)?,
        })
    }
}

pub fn policies(op: &Operator, d: &PolicyData) -> Markup {
    layout(
        op,
        "Policies",
        "Policies, UKIs, overlays",
        None,
        html! {
            h1 { "Policies" }
            @if d.policies.is_empty() { p { "No PCR policy is set." } }
            @for p in &d.policies {
                section.policy {
                    h2 { (p.scope) }
                    p { "PCRs " (pcr_list(p.mask)) "; " (if p.record { "recording the first boot's values" } else { "allowed values" }) "; event log " (if p.require_log { "required" } else { "optional" }) }
                    @if !p.allowed.is_empty() {
                        table { thead { tr { th scope="col" { "PCR" } th scope="col" { "Allowed value" } } }
                            tbody { @for (pcr, v) in &p.allowed { tr { td { (pcr) } td.mono { (hex(v)) } } } } }
                    }
                }
            }
            h1 { "UKIs" }
            @if d.ukis.is_empty() { p { "No UKI has an image epoch yet (" code { "ember policy set --uki" } ")." } } @else {
                table { thead { tr { th scope="col" { "Image epoch" } th scope="col" { "SHA-256" } th scope="col" { "Size" } th scope="col" { "Source" } } }
                    tbody { @for u in &d.ukis { tr { td { (u.epoch) } td.mono { (hex(&u.sha256)) } td { (u.size) } td { (text(&u.source)) } } } } }
            }
            h1 { "Overlays" }
            @if d.overlays.is_empty() { p { "No overlay is published." } } @else {
                table { thead { tr { th scope="col" { "Version" } th scope="col" { "Assigned to" } th scope="col" { "Size" } th scope="col" { "Source" } } }
                    tbody { @for o in &d.overlays { tr {
                        td { (o.overlay.version_id) }
                        td { @if o.targets.is_empty() { "–" } @else { (o.targets.join(", ")) } }
                        td { (o.overlay.size) }
                        td { (text(&o.source)) }
                    } } } }
            }
        },
    )
}

fn pcr_list(mask: u32) -> String {
    let v: Vec<String> = (0..24)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i: u32| i.to_string())
        .collect();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nodes::FleetRow;

    fn op() -> Operator {
        Operator {
            name: "alice".into(),
            cert: [0; 32],
        }
    }

    #[test]
    fn the_package_query_and_its_answer_are_inert() {
        let q = packages::PackageQuery {
            running: vec![packages::Running {
                node: "n\u{202e}<b>".into(),
                group: "g".into(),
                version: "1<i>".into(),
                image: [2; 32],
                image_epoch: Some(1),
                since: 1_000,
                last_attested: 2_000,
            }],
            unknown: vec!["u<script>".into()],
        };
        let html = packages_page(
            &op(),
            "\"><script>x()</script>",
            "1&2",
            Some(&q),
            &[],
            3_000,
        )
        .into_string();
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(
            html.contains("value=\"&quot;&gt;&lt;script&gt;x()&lt;/script&gt;\""),
            "{html}"
        );
        assert!(html.contains("value=\"1&amp;2\""), "{html}");
        assert!(!html.contains('\u{202e}') && !html.contains("<b>") && !html.contains("<i>"));
        assert!(html.contains("/node/u%3Cscript%3E"), "{html}");
        // The node page's package links carry the name as a query value.
        let table = package_table(&[packages::Package {
            name: "a b&c".into(),
            version: "1".into(),
            purl: String::new(),
        }])
        .into_string();
        assert!(table.contains("/packages?name=a%20b%26c"), "{table}");
    }

    #[test]
    fn a_nodes_text_is_inert_in_the_fleet_page() {
        let page = FleetPage {
            rows: vec![FleetRow {
                name: "<script>alert(1)</script>\u{202e}evil\u{7}".into(),
                group: "g\"><img src=x>".into(),
                ek_hash: [0xab; 32],
                attempts: 2,
                last_known_good: None,
                rollback_floor: Some(3),
                last_at: Some(1_000),
                last_outcome: Some("failed".into()),
                last_version: Some(4),
                booted_uki: Some([1; 32]),
            }],
            total: 1,
        };
        let q = fleet_query(&HashMap::new(), 50);
        let html = fleet(&op(), &page, &["g".into()], &q, &[], 7, 61_000).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains('\u{202e}') && html.contains("\\u{202e}"));
        assert!(html.contains("\\u{7}"));
        assert!(!html.contains("<img src=x>"));
        // Links to the node escape its name as a path segment.
        assert!(html.contains("/node/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"));
        assert!(html.contains("1 min ago") || html.contains("60 s ago"));
        assert!(html.contains(r#"data-live="7""#));
        // No inline script: the one script is a file.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(r#"<script src="/assets/live.js" defer></script>"#));
    }

    #[test]
    fn an_explanation_shows_expected_received_and_the_fix_inert() {
        let e = Explanation {
            items: vec![reports::Explained {
                pcr: Some(11),
                // An event label is the node's text.
                what: "PCR 11 sha256 event 31 (<script>x</script>\u{202e})".into(),
                expected: "aa".into(),
                received: "bb".into(),
            }],
            fix: Some("ember policy set --group 'a<b' --pcrs 11 --value 11=bb".into()),
        };
        let html = explanation(&e).into_string();
        assert!(!html.contains("<script>x"), "{html}");
        assert!(
            html.contains("&lt;script&gt;x&lt;/script&gt;\\u{202e}"),
            "{html}"
        );
        assert!(
            html.contains(r#"<td class="mono digest">aa</td>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<td class="mono digest received">bb</td>"#),
            "{html}"
        );
        assert!(
            html.contains("ember policy set --group &#39;a&lt;b&#39; --pcrs 11")
                || html.contains("ember policy set --group 'a&lt;b' --pcrs 11"),
            "{html}"
        );
        let none = explanation(&Explanation {
            items: vec![],
            fix: None,
        })
        .into_string();
        assert!(none.contains("no policy change allows this"), "{none}");
    }

    #[test]
    fn the_fleet_query_comes_from_the_url_and_bad_values_fall_back() {
        let q: HashMap<String, String> = [
            ("group", "rack-a"),
            ("outcome", "failed"),
            ("sort", "attempts"),
            ("dir", "desc"),
            ("page", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = fleet_query(&q, 50);
        assert_eq!(got.group.as_deref(), Some("rack-a"));
        assert_eq!(got.outcome, Some(FleetOutcome::Failed));
        assert_eq!(
            (got.sort, got.descending, got.offset),
            (FleetSort::Attempts, true, 100)
        );
        let bad: HashMap<String, String> = [
            ("sort", "name; DROP TABLE nodes"),
            ("page", "-1"),
            ("outcome", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = fleet_query(&bad, 50);
        assert_eq!(
            (got.sort, got.offset, got.outcome),
            (FleetSort::Name, 0, None)
        );
    }

    #[test]
    fn percent_coding_round_trips_and_refuses_bad_escapes() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(
            percent_decode(&path_segment("x/y z<")).as_deref(),
            Some("x/y z<")
        );
    }

    #[test]
    fn stamps_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_644_800_000), "2026-12-07 12:00:00 UTC");
        assert_eq!(age(0, 3_600_000), "60 min ago");
    }
}
