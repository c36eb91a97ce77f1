//! `ember man --out DIR` (hidden): writes the manual pages, one per
//! subcommand (ember.1, ember-serve.1, ember-overlay-add.1, ...), rendered
//! by clap_mangen from the same `clap::Command` that parses the arguments,
//! so a page cannot describe a flag the binary does not have. The Debian
//! package build (scripts/build-deb) runs it on the release binary.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes a page for `cmd` and every visible subcommand under it, and prints
/// each page's path.
pub fn run(a: ManArgs, cmd: clap::Command) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    // Building names each subcommand's page after its path (ember-overlay-add)
    // and its synopsis after the command line (ember overlay add).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = format!("Ember {}", env!("CARGO_PKG_VERSION"));
    let mut written = Vec::new();
    write_pages(&cmd, &source, &a.out, &mut written)?;
    written.sort();
    let mut stdout = std::io::stdout().lock();
    for p in written {
        writeln!(stdout, "{}", p.display()).context("print the pages written")?;
    }
    Ok(())
}

fn write_pages(
    cmd: &clap::Command,
    source: &str,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, source, out, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("Ember Manual");
    let path = man.generate_to(out).with_context(|| {
        format!(
            "write the page of {} into {}",
            cmd.get_name(),
            out.display()
        )
    })?;
    written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    #[test]
    fn pages_are_named_after_the_subcommand_path_and_skip_hidden_ones() {
        let out = std::env::temp_dir().join(format!("ember-man-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let cmd = Command::new("ember")
            .version("9.9")
            .subcommand(
                Command::new("overlay").about("Overlays.").subcommand(
                    Command::new("add")
                        .about("Publish an overlay.")
                        .arg(Arg::new("group").long("group").env("EMBER_TEST_GROUP")),
                ),
            )
            .subcommand(Command::new("man").hide(true));
        run(ManArgs { out: out.clone() }, cmd).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["ember-overlay-add.1", "ember-overlay.1", "ember.1"]);
        let page = std::fs::read_to_string(out.join("ember-overlay-add.1")).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        assert!(page.contains(".TH ember-overlay-add 1"), "{page}");
        assert!(page.contains("ember overlay add"), "synopsis: {page}");
        assert!(page.contains("Publish an overlay."), "{page}");
        assert!(page.contains("EMBER_TEST_GROUP"), "env: {page}");
        assert!(page.contains("Ember Manual"), "{page}");
    }
}
