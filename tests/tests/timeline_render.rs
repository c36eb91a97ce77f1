//! `ember timeline` draws what the log says: the SVG is rendered to PNG by
//! a real renderer (rsvg-convert, librsvg) and the bars are found again in
//! the pixels, by colour, with the lengths and positions the phases had.

use std::path::Path;
use std::process::Command;

use ember_tests::png::{self, Image};
use ember_tests::{ember_bin, ScratchDir};

// The timeline's documented colours (cli/src/timeline/svg.rs).
const KERNEL: [u8; 3] = [0x5b, 0x7d, 0xb1];
const OK: [u8; 3] = [0x3f, 0xa3, 0x4d];
const FAILED: [u8; 3] = [0xd6, 0x3a, 0x2f];
const RUNNING: [u8; 3] = [0xe9, 0xa2, 0x3b];

/// A boot with a phase of each outcome; the log's last stamp (4500 ms)
/// is where the never-ended phase is drawn to.
const LOG: &str = "\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 6.1.0-56-amd64
[    2.000000] Run /init as init process
[    2050] ember: Ember init 0.1.0 starting as pid 1
[    2100] ember: phase=mounts status=start
[    2600] ember: phase=mounts status=ok took=500ms
[    2600] ember: phase=dhcp status=start
[    3.100000] virtio_net virtio0 eth0: link up
[    3600] ember: phase=dhcp status=ok took=1000ms
[    3600] ember: phase=attest status=start
[    3850] ember: error: phase=attest status=failed took=250ms reason=server said no
[    3900] ember: phase=overlay status=start
[    4.500000] reboot: Power down
";

/// A solid rectangle of one colour in the picture.
#[derive(Debug, Clone, Copy)]
struct Bar {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

fn render(log: &str, dir: &Path) -> Image {
    let log_path = dir.join("serial.log");
    std::fs::write(&log_path, log).unwrap();
    let svg = dir.join("timeline.svg");
    let out = Command::new(ember_bin())
        .args(["timeline"])
        .arg(&log_path)
        .arg("-o")
        .arg(&svg)
        .output()
        .expect("run ember timeline");
    assert!(
        out.status.success(),
        "ember timeline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png_path = dir.join("timeline.png");
    let out = Command::new("rsvg-convert")
        .arg(&svg)
        .arg("-o")
        .arg(&png_path)
        .output()
        .expect("rsvg-convert (librsvg2-bin, installed by scripts/install-deps)");
    assert!(
        out.status.success(),
        "rsvg-convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    png::decode(&std::fs::read(&png_path).unwrap()).expect("decode the rendered PNG")
}

/// Every solid rectangle of `colour` taller than the legend's swatches,
/// top to bottom.
fn bars(img: &Image, colour: [u8; 3]) -> Vec<Bar> {
    let is = |x: usize, y: usize| {
        let p = img.at(x, y);
        p[..3] == colour && p[3] == 255
    };
    let mut seen = vec![false; img.width * img.height];
    let mut found = Vec::new();
    for y in 0..img.height {
        for x in 0..img.width {
            if seen[y * img.width + x] || !is(x, y) {
                continue;
            }
            let (mut x0, mut y0, mut x1, mut y1, mut count) = (x, y, x, y, 0usize);
            let mut stack = vec![(x, y)];
            seen[y * img.width + x] = true;
            while let Some((cx, cy)) = stack.pop() {
                count += 1;
                (x0, y0, x1, y1) = (x0.min(cx), y0.min(cy), x1.max(cx), y1.max(cy));
                let neighbours = [
                    (cx.wrapping_sub(1), cy),
                    (cx + 1, cy),
                    (cx, cy.wrapping_sub(1)),
                    (cx, cy + 1),
                ];
                for (nx, ny) in neighbours {
                    if nx < img.width && ny < img.height && !seen[ny * img.width + nx] && is(nx, ny)
                    {
                        seen[ny * img.width + nx] = true;
                        stack.push((nx, ny));
                    }
                }
            }
            let bar = Bar {
                x: x0,
                y: y0,
                w: x1 - x0 + 1,
                h: y1 - y0 + 1,
            };
            if bar.h > 12 {
                assert_eq!(
                    count,
                    bar.w * bar.h,
                    "bar {bar:?} in {colour:?} is not solid"
                );
                found.push(bar);
            }
        }
    }
    found.sort_by_key(|b| b.y);
    found
}

fn near(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 2.0,
        "{what}: {got} px, expected {want:.1} px"
    );
}

#[test]
fn bars_are_as_long_as_their_phases_and_coloured_by_how_they_ended() {
    let dir = ScratchDir::new("timeline-render");
    let img = render(LOG, dir.path());

    let kernel = bars(&img, KERNEL);
    let ok = bars(&img, OK);
    let failed = bars(&img, FAILED);
    let running = bars(&img, RUNNING);
    assert_eq!(kernel.len(), 1, "kernel bars: {kernel:?}");
    assert_eq!(ok.len(), 2, "ok bars (mounts, dhcp): {ok:?}");
    assert_eq!(failed.len(), 1, "failed bars (attest): {failed:?}");
    assert_eq!(running.len(), 1, "never-ended bars (overlay): {running:?}");

    // One row per phase in the order they started, all bars one height.
    let rows = [kernel[0], ok[0], ok[1], failed[0], running[0]];
    for pair in rows.windows(2) {
        assert!(pair[0].y < pair[1].y, "rows out of order: {rows:?}");
        assert_eq!(pair[0].h, pair[1].h, "bar heights differ: {rows:?}");
    }

    // The kernel bar runs from time 0 to the handover at 2000 ms: that
    // fixes the origin and the scale; every other bar must sit on them.
    let origin = kernel[0].x as f64;
    let px_per_ms = kernel[0].w as f64 / 2000.0;
    assert!(
        px_per_ms > 0.1,
        "the picture is too small to measure: {px_per_ms} px/ms"
    );
    let expect = [
        ("mounts", 2100, 500),
        ("dhcp", 2600, 1000),
        ("attest", 3600, 250),
        ("overlay", 3900, 600),
    ];
    for (bar, (name, start, len)) in rows[1..].iter().zip(expect) {
        near(
            bar.x as f64,
            origin + start as f64 * px_per_ms,
            &format!("{name} left edge"),
        );
        near(
            bar.w as f64,
            len as f64 * px_per_ms,
            &format!("{name} width"),
        );
    }

    // Labels were drawn: dark text pixels in each row's label column.
    for bar in rows {
        let dark = (0..kernel[0].x).any(|x| {
            (bar.y..bar.y + bar.h).any(|y| {
                let p = img.at(x, y);
                p[3] > 0 && p[0] < 100 && p[1] < 100 && p[2] < 100
            })
        });
        assert!(dark, "no label text left of the bar at y={}", bar.y);
    }
}

#[test]
fn a_file_without_a_boot_in_it_is_refused_with_the_reason() {
    let dir = ScratchDir::new("timeline-refuse");
    let log = dir.path().join("notalog.txt");
    std::fs::write(&log, "hello\nworld\n").unwrap();
    let out = Command::new(ember_bin())
        .arg("timeline")
        .arg(&log)
        .arg("-o")
        .arg(dir.path().join("x.svg"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no kernel") && err.contains("stamped lines"),
        "{err}"
    );
    assert!(
        !dir.path().join("x.svg").exists(),
        "an SVG was written for a non-log"
    );
}

#[test]
fn json_output_names_every_phase_with_its_status() {
    let dir = ScratchDir::new("timeline-json");
    let log = dir.path().join("serial.log");
    std::fs::write(&log, LOG).unwrap();
    let out = Command::new(ember_bin())
        .arg("timeline")
        .arg(&log)
        .args(["--json", "-", "-o"])
        .arg(dir.path().join("t.svg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let phases: Vec<(String, String)> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("mounts", "ok"),
        ("dhcp", "ok"),
        ("attest", "failed"),
        ("overlay", "running"),
    ];
    assert_eq!(phases, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(v["handover_ms"], 2000);
    assert_eq!(v["init_started_ms"], 2050);
    assert_eq!(v["phases"][2]["reason"], "server said no");
    assert_eq!(v["marks"][1]["name"], "power off");
}
