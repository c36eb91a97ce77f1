//! A pair of network namespaces joined by a veth pair, created for one test
//! and deleted (with everything in them) on drop.

use std::process::{Command, Output};

/// `server` holds `veth-s` (with `server_addr/24`), `client` holds `veth-c`
/// (down, unconfigured: the client under test brings it up).
pub struct NetnsPair {
    pub server: String,
    pub client: String,
    pub server_if: &'static str,
    pub client_if: &'static str,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl NetnsPair {
    /// `subnet` is the first three octets, e.g. "10.77.0"; the server gets .1.
    pub fn new(tag: &str, subnet: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = format!("emb-{tag}-{}-{n}", std::process::id());
        let pair = NetnsPair {
            server: format!("{base}-s"),
            client: format!("{base}-c"),
            server_if: "veth-s",
            client_if: "veth-c",
        };
        run(&["ip", "netns", "add", &pair.server]);
        run(&["ip", "netns", "add", &pair.client]);
        run(&[
            "ip",
            "link",
            "add",
            "veth-s",
            "netns",
            &pair.server,
            "type",
            "veth",
            "peer",
            "name",
            "veth-c",
            "netns",
            &pair.client,
        ]);
        let addr = format!("{subnet}.1/24");
        pair.ip_server(&["addr", "add", &addr, "dev", "veth-s"]);
        pair.ip_server(&["link", "set", "veth-s", "up"]);
        pair.ip_server(&["link", "set", "lo", "up"]);
        pair
    }

    pub fn ip_server(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.server.as_str()];
        v.extend_from_slice(args);
        String::from_utf8_lossy(&run(&v).stdout).into_owned()
    }

    pub fn ip_client(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.client.as_str()];
        v.extend_from_slice(args);
        String::from_utf8_lossy(&run(&v).stdout).into_owned()
    }

    /// A command that runs `program` inside the client namespace.
    pub fn in_client(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client]).arg(program);
        c
    }

    /// A command that runs `program` inside the server namespace.
    pub fn in_server(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.server, program]);
        c
    }

    /// The client's IPv4 addresses on its veth, as "a.b.c.d/len".
    pub fn client_addresses(&self) -> Vec<String> {
        self.ip_client(&["-4", "-o", "addr", "show", "dev", self.client_if])
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .map(String::from)
            })
            .collect()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth, and so the pair.
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
