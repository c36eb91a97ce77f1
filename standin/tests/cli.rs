//! The stand-in as the init starts it: argv, node.conf errors, exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-standin-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc/ember")).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember-standin"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn unknown_command_is_a_usage_error_with_status_2() {
    let o = run(&["etcd-snapshot"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("standin: error: usage: unknown command \"etcd-snapshot\""),
        "{}",
        stdout(&o)
    );
}

#[test]
fn missing_node_conf_is_reported_with_its_path() {
    let root = scratch("missing");
    let o = run(&["agent", "--root", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let expected = format!(
        "standin: error: cannot read {}/etc/ember/node.conf",
        root.display()
    );
    assert!(stdout(&o).contains(&expected), "{}", stdout(&o));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn misspelt_standin_key_stops_the_standin_naming_the_line() {
    let root = scratch("typo");
    std::fs::write(
        root.join("etc/ember/node.conf"),
        "node_name = n1\nstandin_behaviour = hang\n",
    )
    .unwrap();
    let o = run(&["agent", "--root", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("node.conf line 2: unknown stand-in key standin_behaviour"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn exit_behavior_exits_with_the_configured_status() {
    let root = scratch("exit");
    let conf = root.join("elsewhere.conf");
    std::fs::write(
        &conf,
        "node_name = n1\nstandin_behavior = exit\nstandin_exit_after = 0\nstandin_exit_code = 42\nstandin_healthz = 127.0.0.1:0\n",
    )
    .unwrap();
    let o = run(&[
        "server",
        "--node-conf",
        conf.to_str().unwrap(),
        "--config",
        "/etc/rancher/rke2/config.yaml",
    ]);
    assert_eq!(o.status.code(), Some(42), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.starts_with("standin: ember-standin "), "{out}");
    assert!(out.contains("playing rke2 server"), "{out}");
    assert!(
        out.contains(
            "standin: ignoring rke2 arguments [\"--config\", \"/etc/rancher/rke2/config.yaml\"]"
        ),
        "{out}"
    );
    assert!(
        out.contains("standin: exiting with status 42 as configured"),
        "{out}"
    );
    std::fs::remove_dir_all(root).unwrap();
}
