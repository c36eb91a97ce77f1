//! ember-standin: plays rke2's agent (or server) as the Kubernetes API sees
//! it, for tests where rke2 itself cannot be run. It reads
//! /etc/ember/node.conf, optionally runs one real container with runc,
//! registers its Node (Ready or not, as configured), heartbeats, and
//! serves kubelet's healthz endpoint. Every line it prints starts with
//! `standin:` so the serial console log can be searched.

#![forbid(unsafe_code)]

mod api;
mod conf;
mod container;
mod error;
mod healthz;
mod http;
mod json;
mod node;
mod root;
mod url;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use api::ApiClient;
use conf::{Behavior, ContainerConf, NodeConf};
use error::Error;
use healthz::{Health, HealthFlag};
use node::{NodeFacts, Readiness, Stamps};
use root::Root;

const USAGE: &str = "ember-standin agent|server [--root DIR] [--node-conf PATH] [rke2 flags are accepted and ignored]";

/// Exit status for a configuration the stand-in cannot act on.
const EXIT_CONFIG: i32 = 2;

#[derive(Debug, PartialEq, Eq)]
struct Args {
    server_role: bool,
    root: Root,
    node_conf: Option<PathBuf>,
    ignored: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, Error> {
    let role = argv.next().ok_or_else(|| Error::Usage(USAGE.into()))?;
    let server_role = match role.as_str() {
        "agent" => false,
        "server" => true,
        other => return Err(Error::Usage(format!("unknown command {other:?}; {USAGE}"))),
    };
    let mut args = Args {
        server_role,
        root: Root::default(),
        node_conf: None,
        ignored: Vec::new(),
    };
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--root" => {
                let dir = argv
                    .next()
                    .ok_or_else(|| Error::Usage("--root needs a directory".into()))?;
                args.root = Root::new(dir);
            }
            "--node-conf" => {
                let p = argv
                    .next()
                    .ok_or_else(|| Error::Usage("--node-conf needs a path".into()))?;
                args.node_conf = Some(PathBuf::from(p));
            }
            _ => args.ignored.push(a),
        }
    }
    Ok(args)
}

fn say(line: &str) {
    println!("standin: {line}");
}

fn now() -> String {
    node::rfc3339(SystemTime::now())
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            say(&format!("error: {e}"));
            std::process::exit(EXIT_CONFIG);
        }
    };
    let role = if args.server_role { "server" } else { "agent" };
    say(&format!(
        "ember-standin {} playing rke2 {role} (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    ));
    if !args.ignored.is_empty() {
        say(&format!("ignoring rke2 arguments {:?}", args.ignored));
    }
    let conf_path = args
        .node_conf
        .clone()
        .unwrap_or_else(|| args.root.resolve(std::path::Path::new(conf::DEFAULT_PATH)));
    let conf = match std::fs::read_to_string(&conf_path)
        .map_err(|source| Error::ConfRead {
            path: conf_path.clone(),
            source,
        })
        .and_then(|text| NodeConf::parse(&text))
    {
        Ok(c) => c,
        Err(e) => {
            say(&format!("error: {e}"));
            std::process::exit(EXIT_CONFIG);
        }
    };
    let code = run(&args, &conf);
    std::process::exit(code);
}

/// Returns only when the stand-in must exit, with its exit status.
fn run(args: &Args, conf: &NodeConf) -> i32 {
    say_plan(conf);
    let Some(health) = serve_healthz(conf) else {
        return 1;
    };
    schedule_exit(conf);
    run_exec(conf);
    let (readiness, runtime_version) = runtime_state(conf, &args.root);
    stay_unregistered_if_told(conf);
    let Some(client) = api_client(conf, &args.root) else {
        return EXIT_CONFIG;
    };
    let facts = NodeFacts::collect(
        &conf.node_name,
        args.server_role,
        client.local_ip(),
        runtime_version,
    );
    let since = now();
    register(&client, &facts, &readiness, &since);
    publish_readiness(&health, &facts, &readiness);
    heartbeat(&client, &facts, &readiness, &since, conf.heartbeat)
}

/// Says which node this is, how it will behave and which API it talks to.
fn say_plan(conf: &NodeConf) {
    say(&format!(
        "node {}, behavior {}, api {}",
        conf.node_name,
        conf.behavior.name(),
        conf.api
            .as_ref()
            .map(|a| format!(
                "https://{}{} (tls name {})",
                a.server.authority(),
                a.server.prefix,
                a.tls_name
            ))
            .unwrap_or_else(|| "unused".into())
    ));
}

/// Starts kubelet's healthz endpoint; `None` (said) if it cannot listen.
fn serve_healthz(conf: &NodeConf) -> Option<HealthFlag> {
    match healthz::serve(conf.healthz) {
        Ok(h) => {
            say(&format!(
                "healthz listening on http://{}/healthz",
                conf.healthz
            ));
            Some(h)
        }
        Err(e) => {
            say(&format!("error: {e}"));
            None
        }
    }
}

/// With `standin_exit_after`, exits the process with the configured status
/// once that time has passed, whatever the stand-in is doing then.
fn schedule_exit(conf: &NodeConf) {
    let Some(after) = conf.exit_after else {
        return;
    };
    let code = conf.exit_code;
    say(&format!(
        "will exit with status {code} in {} s (standin_exit_after)",
        after.as_secs()
    ));
    std::thread::spawn(move || {
        std::thread::sleep(after);
        say(&format!("exiting with status {code} as configured"));
        std::process::exit(code);
    });
}

/// With `standin_exec`, runs that command once in the background and
/// logs each line it prints and how it ended.
fn run_exec(conf: &NodeConf) {
    let Some(argv) = conf.exec.clone() else {
        return;
    };
    say(&format!("exec: {}", argv.join(" ")));
    std::thread::spawn(move || {
        match std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
        {
            Ok(out) => {
                for line in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                {
                    say(&format!("exec output: {line}"));
                }
                say(&format!("exec exited: {}", out.status));
            }
            Err(e) => say(&format!("exec {} failed to start: {e}", argv[0])),
        }
    });
}

/// The readiness and runtime version the Node will report: as the behavior
/// says, unless the configured test container shows the runtime is down.
fn runtime_state(conf: &NodeConf, root: &Root) -> (Readiness, String) {
    let mut readiness = match conf.behavior {
        Behavior::Fail => {
            Readiness::not_ready("standin_behavior = fail: this runtime never gets ready")
        }
        _ => Readiness::ready(),
    };
    let mut runtime_version = format!("ember-standin://{}", env!("CARGO_PKG_VERSION"));
    if let Some(c) = &conf.container {
        if let Some(v) = container::runtime_version(c, root) {
            runtime_version = v;
        }
        if let Some(down) = run_test_container(c, root, &runtime_version) {
            readiness = Readiness::not_ready(down);
        }
    }
    (readiness, runtime_version)
}

/// Runs the test container once; `Some(message)` if the runtime is down.
fn run_test_container(c: &ContainerConf, root: &Root, runtime_version: &str) -> Option<String> {
    let id = format!("standin-{}", std::process::id());
    say(&format!(
        "container {id}: runc run --bundle {} ({runtime_version})",
        c.bundle.display()
    ));
    match container::run(c, root, &id) {
        Ok(out) => {
            say(&format!("container {id} exited: {}", out.status));
            (!out.success())
                .then(|| format!("container runtime is down: test container {}", out.status))
        }
        Err(e) => {
            say(&format!("container {id} failed: {e}"));
            Some(format!("container runtime is down: {e}"))
        }
    }
}

/// The `hang` and `exit` behaviors never register the Node: this is where
/// they stop (an `exit` ends through [`schedule_exit`]).
fn stay_unregistered_if_told(conf: &NodeConf) {
    let (what, will) = match conf.behavior {
        Behavior::Hang => ("hang", "will never register"),
        Behavior::Exit => ("exit", "will not register"),
        Behavior::Ready | Behavior::Fail => return,
    };
    say(&format!("behavior {what}: node {} {will}", conf.node_name));
    sleep_forever();
}
/// The client for the configured API; `None` (said) if it cannot be built.
fn api_client(conf: &NodeConf, root: &Root) -> Option<ApiClient> {
    let Some(api_conf) = &conf.api else {
        // NodeConf::parse requires the API for registering behaviors.
        say("error: no API settings");
        return None;
    };
    match ApiClient::new(api_conf, root) {
        Ok(c) => Some(c),
        Err(e) => {
            say(&format!("error: {e}"));
            None
        }
    }
}

/// Sets healthz to what the Node was registered as, and says it.
fn publish_readiness(health: &HealthFlag, facts: &NodeFacts, readiness: &Readiness) {
    health.set(if readiness.ready {
        Health::Ready
    } else {
        Health::Failed
    });
    if readiness.ready {
        say(&format!("node {} is Ready", facts.name));
    } else {
        say(&format!(
            "node {} is NotReady: {}",
            facts.name, readiness.message
        ));
    }
}

fn excerpt(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(300).collect()
}

fn node_path(name: &str) -> String {
    format!("/api/v1/nodes/{name}/status")
}

/// Creates the Node, or updates its status if it survived an earlier boot;
/// retries with backoff until the API accepts it, as kubelet does.
fn register(client: &ApiClient, facts: &NodeFacts, r: &Readiness, since: &str) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match try_register(client, facts, r, since) {
            Ok(line) => {
                say(&line);
                return;
            }
            Err(why) => {
                say(&format!(
                    "registering node {} failed: {why}; retrying in {} s",
                    facts.name,
                    backoff.as_secs()
                ));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn try_register(
    client: &ApiClient,
    facts: &NodeFacts,
    r: &Readiness,
    since: &str,
) -> Result<String, String> {
    let t = now();
    let stamps = Stamps { now: &t, since };
    let body = node::node_json(facts, r, stamps);
    let resp = client
        .request(
            "POST",
            "/api/v1/nodes",
            Some("application/json"),
            body.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let ready = if r.ready { "True" } else { "False" };
    match resp.status {
        201 | 200 => Ok(format!(
            "registered node {} with {} ({}), Ready={ready}",
            facts.name,
            client.base(),
            resp.status
        )),
        409 => {
            let patch = node::status_patch_json(facts, r, stamps);
            let resp = client
                .request(
                    "PATCH",
                    &node_path(&facts.name),
                    Some("application/merge-patch+json"),
                    patch.as_bytes(),
                )
                .map_err(|e| e.to_string())?;
            if resp.status == 200 {
                Ok(format!(
                    "node {} already existed; status updated ({}), Ready={ready}",
                    facts.name, resp.status
                ))
            } else {
                Err(format!(
                    "PATCH status answered {}: {}",
                    resp.status,
                    excerpt(&resp.body_text())
                ))
            }
        }
        s => Err(format!("POST answered {s}: {}", excerpt(&resp.body_text()))),
    }
}

/// Posts the node's status every `every`, as kubelet's status loop does; a
/// node deleted meanwhile is registered again.
fn heartbeat(
    client: &ApiClient,
    facts: &NodeFacts,
    r: &Readiness,
    since: &str,
    every: Duration,
) -> ! {
    if every.is_zero() {
        sleep_forever();
    }
    let mut failing = false;
    loop {
        std::thread::sleep(every);
        let t = now();
        let patch = node::status_patch_json(facts, r, Stamps { now: &t, since });
        let result = client.request(
            "PATCH",
            &node_path(&facts.name),
            Some("application/merge-patch+json"),
            patch.as_bytes(),
        );
        match result {
            Ok(resp) if resp.status == 200 => {
                if failing {
                    say("heartbeat: status updates accepted again");
                }
                failing = false;
            }
            Ok(resp) if resp.status == 404 => {
                say(&format!(
                    "heartbeat: node {} is gone; registering again",
                    facts.name
                ));
                register(client, facts, r, since);
            }
            Ok(resp) => {
                say(&format!(
                    "heartbeat: PATCH status answered {}: {}",
                    resp.status,
                    excerpt(&resp.body_text())
                ));
                failing = true;
            }
            Err(e) => {
                say(&format!("heartbeat: {e}"));
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, Error> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn agent_and_server_are_the_commands() {
        let a = args(&[
            "agent",
            "--root",
            "/tmp/ov",
            "--config",
            "/etc/rancher/rke2/config.yaml",
        ])
        .unwrap();
        assert!(!a.server_role);
        assert_eq!(a.root, Root::new("/tmp/ov"));
        assert_eq!(a.ignored, ["--config", "/etc/rancher/rke2/config.yaml"]);
        assert!(args(&["server"]).unwrap().server_role);
    }

    #[test]
    fn missing_or_unknown_command_is_a_usage_error() {
        assert!(matches!(args(&[]), Err(Error::Usage(_))));
        assert!(matches!(args(&["etcd-snapshot"]), Err(Error::Usage(_))));
        assert!(matches!(args(&["agent", "--root"]), Err(Error::Usage(_))));
    }
}
