//! Draws a timeline as an SVG, in the manner of `systemd-analyze plot`:
//! time runs left to right from the kernel's start, one row per phase in
//! the order the phases started, a bar from each phase's start to its end
//! coloured by how it ended, and named instants as dashed vertical lines.
//! Bars sit on whole pixels with crisp edges, so a rasteriser paints them
//! in exactly their colour (the tests read them back from a PNG).

use std::fmt::Write;

use super::model::{Mark, PhaseState, Timeline};

pub const KERNEL_COLOUR: &str = "#5b7db1";
pub const OK_COLOUR: &str = "#3fa34d";
pub const FAILED_COLOUR: &str = "#d63a2f";
pub const RUNNING_COLOUR: &str = "#e9a23b";
const MARK_COLOUR: &str = "#7a7a7a";
const TEXT_COLOUR: &str = "#202020";
const STRIPE_COLOUR: &str = "#f3f3f3";
const GRID_COLOUR: &str = "#dddddd";

const LABEL_W: i64 = 170;
const PLOT_W: i64 = 1000;
const RIGHT_W: i64 = 300;
const ROW_H: i64 = 24;
const BAR_H: i64 = 16;
const TOP: i64 = 64;

/// Tick spacings, in ms, from which the axis picks the first that gives at
/// most 12 ticks.
const STEPS: [u64; 14] = [
    10, 20, 50, 100, 200, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000, 120_000,
];

struct Row {
    label: String,
    start: u64,
    end: u64,
    colour: &'static str,
    note: String,
}

pub fn render(t: &Timeline, title: &str) -> String {
    let rows = rows(t);
    let plot = Plot::new(t, &rows);
    let mut s = String::new();
    plot.header(&mut s, t, title);
    // Row stripes, then the grid, then marks, then bars on top of them.
    plot.stripes(&mut s);
    plot.grid(&mut s);
    plot.marks(&mut s, &t.marks);
    plot.bars(&mut s, &rows);
    plot.legend(&mut s);
    s.push_str("</svg>\n");
    s
}

/// The picture's geometry: the time axis' scale and where each band (rows,
/// marks, legend) starts. Every element's position comes from here.
struct Plot {
    /// The axis' last tick, in ms: the right edge of the plot area.
    axis_end: u64,
    /// Spacing of the axis' ticks, in ms.
    step: u64,
    rows: i64,
    marks_top: i64,
    /// The bottom of the last mark's row, where the grid lines stop.
    grid_bottom: i64,
    legend_top: i64,
    width: i64,
    height: i64,
}

impl Plot {
    fn new(t: &Timeline, rows: &[Row]) -> Self {
        let last = rows
            .iter()
            .map(|r| r.end)
            .chain(t.marks.iter().map(|m| m.at_ms))
            .chain([t.end_ms, 1])
            .max()
            .unwrap_or(1);
        let step = STEPS
            .iter()
            .copied()
            .find(|s| last.div_ceil(*s) <= 12)
            .unwrap_or(600_000);
        let marks_top = TOP + rows.len() as i64 * ROW_H + 8;
        let grid_bottom = marks_top + t.marks.len() as i64 * ROW_H;
        let legend_top = grid_bottom + 12;
        Plot {
            axis_end: last.div_ceil(step) * step,
            step,
            rows: rows.len() as i64,
            marks_top,
            grid_bottom,
            legend_top,
            width: LABEL_W + PLOT_W + RIGHT_W,
            height: legend_top + 40,
        }
    }

    /// The pixel column of an instant.
    fn x(&self, ms: u64) -> i64 {
        LABEL_W + ((ms as f64) * (PLOT_W as f64) / (self.axis_end as f64)).round() as i64
    }

    /// The `<svg>` element, its white background, the title and the summary.
    fn header(&self, s: &mut String, t: &Timeline, title: &str) {
        let Plot { width, height, .. } = *self;
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="10" y="22" font-size="16" font-weight="bold" fill="{TEXT_COLOUR}">{}</text>"#,
            esc(title)
        );
        let _ = writeln!(
            s,
            r#"<text x="10" y="40" fill="{TEXT_COLOUR}">{}</text>"#,
            esc(&summary(t))
        );
    }

    /// A light band behind every second row.
    fn stripes(&self, s: &mut String) {
        for i in (1..self.rows).step_by(2) {
            let _ = writeln!(
                s,
                r#"<rect x="0" y="{}" width="{}" height="{ROW_H}" fill="{STRIPE_COLOUR}"/>"#,
                TOP + i * ROW_H,
                self.width
            );
        }
    }

    /// A vertical line and a label in seconds at every tick of the axis.
    fn grid(&self, s: &mut String) {
        let mut tick = 0;
        while tick <= self.axis_end {
            let gx = self.x(tick);
            let _ = writeln!(
                s,
                r#"<line x1="{gx}" y1="{}" x2="{gx}" y2="{}" stroke="{GRID_COLOUR}" stroke-width="1" shape-rendering="crispEdges"/>"#,
                TOP - 6,
                self.grid_bottom
            );
            let _ = writeln!(
                s,
                r#"<text x="{gx}" y="{}" text-anchor="middle" fill="{TEXT_COLOUR}">{}</text>"#,
                TOP - 10,
                seconds(tick)
            );
            tick += self.step;
        }
    }

    /// Each named instant: a dashed line down to its own row below the
    /// phases, its name on the left and its time beside the line.
    fn marks(&self, s: &mut String, marks: &[Mark]) {
        for (i, m) in marks.iter().enumerate() {
            let mx = self.x(m.at_ms);
            let y = self.marks_top + i as i64 * ROW_H;
            let _ = writeln!(
                s,
                r#"<line x1="{mx}" y1="{TOP}" x2="{mx}" y2="{}" stroke="{MARK_COLOUR}" stroke-width="1" stroke-dasharray="4 3" shape-rendering="crispEdges"/>"#,
                y + ROW_H / 2
            );
            label(s, y, &m.name);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" fill="{TEXT_COLOUR}">{} ms</text>"#,
                mx + 6,
                y + ROW_H / 2 + 4,
                m.at_ms
            );
        }
    }

    /// Each row: its name on the left, its bar (at least 2 px wide, with
    /// its span as a tooltip) and its note right of the bar.
    fn bars(&self, s: &mut String, rows: &[Row]) {
        for (i, r) in rows.iter().enumerate() {
            let y = TOP + i as i64 * ROW_H;
            let x0 = self.x(r.start);
            let w = (self.x(r.end) - x0).max(2);
            label(s, y, &r.label);
            let _ = writeln!(
                s,
                r#"<rect x="{x0}" y="{}" width="{w}" height="{BAR_H}" fill="{}" shape-rendering="crispEdges"><title>{}</title></rect>"#,
                y + (ROW_H - BAR_H) / 2,
                r.colour,
                esc(&format!("{} {}–{} ms", r.label, r.start, r.end))
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" fill="{TEXT_COLOUR}">{}</text>"#,
                x0 + w + 6,
                y + ROW_H / 2 + 4,
                esc(&r.note)
            );
        }
    }

    /// A swatch per colour with its meaning, then how to read the axis.
    fn legend(&self, s: &mut String) {
        let top = self.legend_top;
        let mut lx = 10;
        for (name, colour) in [
            ("kernel", KERNEL_COLOUR),
            ("phase ok", OK_COLOUR),
            ("phase failed", FAILED_COLOUR),
            ("phase never ended", RUNNING_COLOUR),
        ] {
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{top}" width="10" height="10" fill="{colour}" shape-rendering="crispEdges"/><text x="{}" y="{}" fill="{TEXT_COLOUR}">{name}</text>"#,
                lx + 14,
                top + 10
            );
            lx += 30 + 8 * name.len() as i64;
        }
        let _ = writeln!(
            s,
            r#"<text x="{lx}" y="{}" fill="{MARK_COLOUR}">time since the kernel started; dashed: named instants</text>"#,
            top + 10
        );
    }
}

/// A row's name, right-aligned in the label column left of the plot.
fn label(s: &mut String, row_y: i64, name: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end" fill="{TEXT_COLOUR}">{}</text>"#,
        LABEL_W - 8,
        row_y + ROW_H / 2 + 4,
        esc(name)
    );
}

fn rows(t: &Timeline) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(h) = t.handover_ms {
        rows.push(Row {
            label: "kernel".into(),
            start: 0,
            end: h,
            colour: KERNEL_COLOUR,
            note: format!("{h} ms to /init"),
        });
    }
    for p in &t.phases {
        let end = p.end_ms(t.end_ms);
        let took = p.took_ms(t.end_ms);
        let (colour, note) = match &p.state {
            PhaseState::Ok { .. } => (OK_COLOUR, format!("{took} ms")),
            PhaseState::Failed { reason, .. } => (
                FAILED_COLOUR,
                truncate(&format!("failed after {took} ms: {reason}"), 48),
            ),
            PhaseState::Running => (
                RUNNING_COLOUR,
                format!("never ended (log stops {took} ms in)"),
            ),
        };
        rows.push(Row {
            label: p.name.clone(),
            start: p.start_ms,
            end,
            colour,
            note,
        });
    }
    rows
}

fn summary(t: &Timeline) -> String {
    let mut s = String::new();
    if let Some(ms) = t.init_started_ms {
        let _ = write!(s, "/init's first line at {ms} ms");
    }
    if let Some(p) = t.phases.iter().rev().find(|p| p.end_ms(t.end_ms) > 0) {
        let _ = write!(
            s,
            "{}last phase ({}) {} at {} ms",
            if s.is_empty() { "" } else { "; " },
            p.name,
            p.status(),
            p.end_ms(t.end_ms)
        );
    }
    if t.boots_in_log > 1 {
        let _ = write!(s, "; boot {} of {} in the log", t.boot, t.boots_in_log);
    }
    s
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms.is_multiple_of(100) {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    } else {
        format!("{}.{:02} s", ms / 1000, (ms % 1000) / 10)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // A node's text: no control or bidi character reaches the picture.
            c if !ember_proto::untrusted::is_inert(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Which;

    #[test]
    fn every_phase_gets_a_bar_in_its_status_colour() {
        let log = "[    2.000000] Run /init as init process\n[ 2100] ember: phase=a status=start\n\
                   [ 2200] ember: phase=a status=ok took=100ms\n[ 2200] ember: phase=b status=start\n\
                   [ 2300] ember: phase=b status=failed took=100ms reason=<bad> & \"worse\"\n";
        let t = Timeline::from_log(log, Which::Last).unwrap();
        let svg = render(&t, "test");
        assert_eq!(svg.matches("<rect x=").count(), 1 + 3 + 4 + 1, "{svg}");
        assert!(svg.contains(&format!(r#"fill="{KERNEL_COLOUR}""#)));
        assert!(svg.contains(&format!(r#"fill="{OK_COLOUR}""#)));
        assert!(svg.contains(&format!(r#"fill="{FAILED_COLOUR}""#)));
        assert!(svg.contains("&lt;bad&gt; &amp; &quot;worse&quot;"));
        assert!(!svg.contains("<bad>"));
    }

    #[test]
    fn axis_ticks_are_round_seconds_for_a_few_seconds_boot() {
        assert_eq!(seconds(2500), "2.5 s");
        assert_eq!(seconds(3000), "3 s");
        assert_eq!(seconds(250), "0.25 s");
    }
}
