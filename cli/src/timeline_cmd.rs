//! `ember timeline LOG`: a boot's serial log as a picture of its phases.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use ember_timeline::{json, svg, Timeline, Which};

#[derive(Args)]
pub struct TimelineCmd {
    /// A serial console log of a boot (qemu/boot --serial-log).
    log: PathBuf,
    /// Where to write the SVG (default: LOG with .svg).
    #[arg(short, long, value_name = "OUT.svg")]
    output: Option<PathBuf>,
    /// Also write the parsed timeline as JSON here (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Which boot of a log holding several (reboots), from 1; default the last.
    #[arg(long, value_name = "N")]
    boot: Option<usize>,
    /// The picture's title (default: the log's file name).
    #[arg(long)]
    title: Option<String>,
}

pub fn run(cmd: TimelineCmd) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&cmd.log).with_context(|| format!("reading {}", cmd.log.display()))?;
    // Serial logs carry firmware bytes that are not UTF-8; they never
    // matter to the timeline.
    let text = String::from_utf8_lossy(&bytes);
    let which = cmd.boot.map(Which::Nth).unwrap_or(Which::Last);
    let timeline = Timeline::from_log(&text, which)
        .with_context(|| format!("reading a timeline from {}", cmd.log.display()))?;
    let title = cmd.title.unwrap_or_else(|| {
        format!(
            "Boot timeline: {}",
            cmd.log
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        )
    });
    let output = cmd.output.unwrap_or_else(|| cmd.log.with_extension("svg"));
    std::fs::write(&output, svg::render(&timeline, &title))
        .with_context(|| format!("writing {}", output.display()))?;
    if let Some(path) = cmd.json {
        let j = json::render(&timeline);
        if path.as_os_str() == "-" {
            print!("{j}");
        } else {
            std::fs::write(&path, j).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    eprintln!(
        "{}: {} phases, {} instants, last stamp {} ms",
        output.display(),
        timeline.phases.len(),
        timeline.marks.len(),
        timeline.end_ms
    );
    Ok(())
}
