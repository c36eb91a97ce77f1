//! The book against the code it documents: every refusal code has its
//! troubleshooting entry, every `ember.*` kernel argument the init reads,
//! every `ember` subcommand and every metric a running server exposes has
//! its reference row. A code, key, command or metric added without its
//! documentation fails here, naming it.

use std::path::{Path, PathBuf};

use ember_proto::msg::ErrorCode;
use ember_tests::server::EmberServer;
use ember_tests::{ember_bin, ScratchDir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn page(rel: &str) -> String {
    let path = repo().join("docs/src").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names that `text` does not mention in the form `form` gives them.
fn missing<'a>(
    names: impl IntoIterator<Item = &'a str>,
    text: &str,
    form: impl Fn(&str) -> String,
) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !text.contains(&form(n)))
        .map(String::from)
        .collect()
}

#[test]
fn every_refusal_code_has_a_troubleshooting_entry() {
    let text = page("operator/troubleshooting.md");
    let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
    let gaps = missing(names.iter().copied(), &text, |n| format!("\n## `{n}`\n"));
    assert!(
        gaps.is_empty(),
        "codes without a `## `name`` section in operator/troubleshooting.md: {gaps:?}"
    );
    // Each entry says what the code means and how to fix it.
    for name in names {
        let start = text.find(&format!("\n## `{name}`\n")).unwrap();
        let rest = &text[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
        let entry = &rest[..end];
        assert!(
            entry.contains("**Means:**") && entry.contains("**Fix:**"),
            "the entry for {name} lacks **Means:** or **Fix:**:\n{entry}"
        );
    }
}

/// The keys `Config::parse` matches (the `"name" => ...` arms of its `match
/// name`, at the arms' own indentation: nested matches on values are
/// deeper), read from the init's source: the init is a no_std binary this
/// crate cannot link, and the source is the one list there is.
fn init_cmdline_keys() -> Vec<String> {
    let src = std::fs::read_to_string(repo().join("init/src/cmdline.rs")).unwrap();
    let body = &src[src
        .find("match name {")
        .expect("Config::parse's match on the key")..];
    let body = &body[..body.find("\n            }\n").expect("the match's end")];
    let arm = |l: &str| -> Option<(usize, String)> {
        let text = l.trim_start();
        let key = text.strip_prefix('"')?.split('"').next()?;
        let rest = text[key.len() + 2..].trim_start();
        rest.starts_with("=>")
            .then(|| (l.len() - text.len(), key.to_string()))
    };
    let arms: Vec<(usize, String)> = body.lines().filter_map(arm).collect();
    let indent = arms.first().expect("at least one key").0;
    arms.into_iter()
        .filter(|(i, _)| *i == indent)
        .map(|(_, k)| k)
        .collect()
}

#[test]
fn every_kernel_argument_is_in_the_reference() {
    let keys = init_cmdline_keys();
    // Guards the scan itself: the init reads more than a dozen keys.
    assert!(
        keys.len() >= 12 && keys.iter().any(|k| k == "attest_url"),
        "{keys:?}"
    );
    let text = page("reference/kernel-cmdline.md");
    let gaps = missing(keys.iter().map(String::as_str), &text, |k| {
        format!("`ember.{k}=")
    });
    assert!(
        gaps.is_empty(),
        "ember.* keys the init reads but reference/kernel-cmdline.md does not list: {gaps:?}"
    );
}

#[test]
fn every_subcommand_is_in_the_reference() {
    let dir = ScratchDir::new("docs-man");
    let out = std::process::Command::new(ember_bin())
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .expect("run ember man");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ember-nodes-allow-rollback.1 is `ember nodes allow-rollback`.
    let mut commands: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".1")?.replace('-', " "))
        })
        .filter(|c| c != "ember")
        .collect();
    commands.sort();
    assert!(commands.len() >= 30, "{commands:?}");
    // Subcommand names with a dash (allow-rollback, floor-log) were split
    // above: match them against the page with dashes or spaces alike.
    let text = page("reference/cli.md").replace('-', " ");
    let gaps = missing(commands.iter().map(String::as_str), &text, |c| {
        format!("`{c}`")
    });
    assert!(
        gaps.is_empty(),
        "subcommands without a `ember ...` entry in reference/cli.md: {gaps:?}"
    );
}

#[test]
fn every_metric_is_in_the_reference() {
    let server = EmberServer::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let scrape = server.metrics();
    let names: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    assert!(names.contains(&"ember_requests_total"), "{scrape}");
    let text = page("reference/metrics.md");
    let gaps = missing(names, &text, |m| format!("| `{m}` |"));
    assert!(
        gaps.is_empty(),
        "metrics without a row in reference/metrics.md: {gaps:?}"
    );
}

#[test]
fn every_test_file_is_in_the_feature_map() {
    let text = page("contributors/testing.md");
    let mut files: Vec<String> = std::fs::read_dir(repo().join("tests/tests"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{files:?}");
    let gaps = missing(files.iter().map(String::as_str), &text, |f| {
        format!("| `{f}` |")
    });
    assert!(
        gaps.is_empty(),
        "test files missing from the map in contributors/testing.md: {gaps:?}"
    );
}
