//! `ember-lab`: the README's main job. Boots one Ember node in QEMU (TCG,
//! OVMF, swtpm) against a local `ember serve` and a Kubernetes API double,
//! through the whole sequence to Ready, and prints the phase timeline.
//! Artifacts (serial log, timeline SVG, an operator certificate for the
//! console) go to `out/lab/`. `--hold` keeps the server and its console up
//! after the boot, until Enter is pressed.

use std::process::Command;
use std::time::Duration;

use ember_tests::lab::{ember_lines, Lab, NODE};
use ember_tests::{ember_bin, workspace_root};

fn main() {
    let out = workspace_root().join("out/lab");
    std::fs::create_dir_all(&out).expect("create out/lab");
    println!(
        "ember-lab: starting the Kubernetes API double and ember serve, enrolling the node's swtpm"
    );
    let hold = std::env::args().skip(1).any(|a| a == "--hold");
    let lab = Lab::with_console("lab");
    let console = lab
        .server()
        .console_addr()
        .expect("the lab's console")
        .to_string();
    // The operator's certificate, so the console can be opened while the
    // node boots: the browser imports the PKCS#12 file openssl makes.
    let operator = out.join("operator");
    let _ = std::fs::remove_dir_all(&operator);
    let operator_dir = operator.to_str().expect("a UTF-8 workspace path");
    lab.server()
        .ember(&[
            "admin",
            "operator",
            "issue",
            "lab-operator",
            "--out",
            operator_dir,
        ])
        .expect_ok("issue the lab's operator certificate");
    println!("ember-lab: console on https://{console}/ (operator certificate: out/lab/operator/lab-operator.pem and .key, issued with `ember admin operator issue NAME --out DIR`; import into a browser with `openssl pkcs12 -export -in out/lab/operator/lab-operator.pem -inkey out/lab/operator/lab-operator.key -out lab-operator.p12`; the server's CA is its tls/ca.pem; `bash scripts/run --hold` keeps it up after the boot)");
    let version = lab.publish("ready", &[]);
    println!("ember-lab: overlay version {version} assigned to node {NODE}; booting (serial console: out/lab/serial.log)");

    let boot = lab.boot("node", false);
    let mut guard = boot.start();
    let log_path = lab.log_path("node");
    let mut shown = 0;
    let mut joined = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines = ember_lines(&text);
        for line in lines.lines().skip(shown) {
            println!("  {line}");
            shown += 1;
        }
        if text.contains("report: told the boot server Joined") {
            joined = true;
            break;
        }
        if guard.try_wait().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Let the last lines reach the log, then cut the power.
    std::thread::sleep(Duration::from_secs(1));
    drop(guard);
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    std::fs::write(out.join("serial.log"), &text).expect("write out/lab/serial.log");

    println!("\nember-lab: phase timeline (ms since the kernel started)");
    print!("{}", timeline(&text));
    let svg = out.join("timeline.svg");
    let status = Command::new(ember_bin())
        .arg("timeline")
        .arg(out.join("serial.log"))
        .arg("-o")
        .arg(&svg)
        .status();
    if matches!(status, Ok(s) if s.success()) {
        println!("ember-lab: timeline picture: {}", svg.display());
    }
    let nodes = lab.server().nodes();
    println!("\nember-lab: the boot server's records (ember nodes):\n{nodes}");
    println!(
        "ember-lab: Kubernetes API double: node {NODE} Ready = {:?}",
        lab.api.node_ready(NODE)
    );
    if hold {
        println!("ember-lab: the server and its console stay up at https://{console}/; press Enter to stop them");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    // The lab (its `ember serve`, API double and swtpm) is stopped before
    // the exit status is set: process::exit would skip its cleanup.
    drop(lab);
    if joined {
        println!("ember-lab: the node joined the cluster and wrote its last-known-good to the ESP");
    } else {
        eprintln!("ember-lab: the node did not join; see out/lab/serial.log");
        std::process::exit(1);
    }
}

/// `phase=NAME status=ok took=Nms` lines as a table: start, end, duration.
fn timeline(log: &str) -> String {
    let mut table = format!(
        "{:<18}{:>10}{:>10}{:>10}\n",
        "phase", "start", "end", "took"
    );
    for line in log.lines() {
        let Some((stamp, rest)) = line.split_once("] ember: phase=") else {
            continue;
        };
        let Some(end) = stamp.trim_start_matches('[').trim().parse::<u64>().ok() else {
            continue;
        };
        let mut parts = rest.split(' ');
        let name = parts.next().unwrap_or("");
        let status = parts.next().unwrap_or("");
        let took = parts
            .next()
            .and_then(|t| t.strip_prefix("took="))
            .and_then(|t| t.strip_suffix("ms"))
            .and_then(|t| t.parse::<u64>().ok());
        if let (Some(took), true) = (took, status != "status=start") {
            let mark = if status == "status=ok" {
                ""
            } else {
                "  (failed)"
            };
            table.push_str(&format!(
                "{name:<18}{:>10}{end:>10}{took:>10}{mark}\n",
                end.saturating_sub(took)
            ));
        }
    }
    table
}
