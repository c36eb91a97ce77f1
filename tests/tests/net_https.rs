//! The node's HTTPS client (`ember net get`, the same code PID 1 runs)
//! against a real TLS 1.3 server on loopback: `openssl s_server`, which
//! sends whatever HTTP response the test writes to its stdin. Certificates
//! are made with openssl for each test.

use ember_tests::dnsmasq::{Dnsmasq, DnsmasqConfig};
use ember_tests::netns::NetnsPair;
use ember_tests::process::{free_port, wait_until, ChildGuard};
use ember_tests::{ember_bin, ScratchDir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 CA (`<name>.pem`, `<name>.key`).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            "/CN=Ember Test CA",
        ],
    );
}

/// A P-256 leaf `<name>.pem`/`<name>.key` signed by `ca`, with `san`
/// ("IP:127.0.0.1,DNS:...") and `days` of validity (negative: expired).
fn make_leaf(dir: &Path, ca: &str, name: &str, san: &str, days: i32, client: bool) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let usage = if client { "clientAuth" } else { "serverAuth" };
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            &days.to_string(),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// `openssl s_server` serving one canned response per connection.
struct TlsServer {
    _child: ChildGuard,
    port: u16,
    /// Kept open to hold the response back (the slow server).
    _stdin: Option<std::io::PipeWriter>,
}

impl TlsServer {
    fn start(dir: &Path, cert: &str, extra: &[&str], response: &[u8], hold_open: bool) -> Self {
        Self::start_in(None, "127.0.0.1", dir, cert, extra, response, hold_open)
    }

    /// Runs the server inside `netns` (when given), listening on `addr`.
    fn start_in(
        netns: Option<&str>,
        addr: &str,
        dir: &Path,
        cert: &str,
        extra: &[&str],
        response: &[u8],
        hold_open: bool,
    ) -> Self {
        let port = free_port();
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(response).unwrap();
        let log = dir.join(format!("s_server-{port}.log"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "openssl"]);
                c
            }
            None => Command::new("openssl"),
        };
        cmd.current_dir(dir)
            .args(["s_server", "-accept", &format!("{addr}:{port}")])
            // The node offers TLS_CHACHA20_POLY1305_SHA256 only: a server
            // that speaks nothing else proves that is what it negotiates.
            .args(["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256", "-cert"])
            .arg(format!("{cert}.pem"))
            .arg("-key")
            .arg(format!("{cert}.key"))
            .args(extra)
            .stdin(Stdio::from(reader))
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null());
        let child = ChildGuard::spawn("openssl s_server", &mut cmd).expect("spawn s_server");
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .map(|l| l.contains("ACCEPT"))
                .unwrap_or(false)
        });
        assert!(ready, "s_server did not start");
        TlsServer {
            _child: child,
            port,
            _stdin: hold_open.then_some(writer),
        }
    }
}

struct Fixture {
    dir: ScratchDir,
}

impl Fixture {
    /// A CA, a server certificate for 127.0.0.1, and a second, unrelated CA.
    fn new(tag: &str) -> Self {
        let dir = ScratchDir::new(tag);
        make_ca(dir.path(), "ca");
        make_ca(dir.path(), "other-ca");
        make_leaf(
            dir.path(),
            "ca",
            "server",
            "IP:127.0.0.1,DNS:localhost",
            5,
            false,
        );
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn get(&self, ca: &str, port: u16, extra: &[&str]) -> Output {
        Command::new(ember_bin())
            .args(["net", "get", "--timeout-secs", "2", "--ca"])
            .arg(self.path(&format!("{ca}.pem")))
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}/boot/overlay.tar"))
            .output()
            .expect("run ember net get")
    }
}

/// The fetch succeeded and printed the canned body.
#[track_caller]
fn assert_fetched(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello, node\n");
}

fn assert_refused(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    assert!(out.stdout.is_empty(), "no body may be printed on failure");
    assert!(
        stderr.contains(message),
        "expected {message:?} in {stderr:?}"
    );
}

const CONTENT_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 12\r\n\r\nhello, node\n";

#[test]
fn content_length_body_is_fetched_with_verification_on() {
    let f = Fixture::new("https-ok");
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], CONTENT_LENGTH, false);
    let out = f.get("ca", s.port, &[]);
    assert_fetched(&out);
}

/// A newcomer's first try: the host tool resolves `localhost` as every
/// host program does, not by asking resolv.conf's DNS servers.
#[test]
fn host_tool_fetches_from_localhost_by_name() {
    let f = Fixture::new("https-localhost");
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], CONTENT_LENGTH, false);
    let out = Command::new(ember_bin())
        .args(["net", "get", "--timeout-secs", "2", "--ca"])
        .arg(f.path("ca.pem"))
        .arg(format!("https://localhost:{}/boot/overlay.tar", s.port))
        .output()
        .unwrap();
    assert_fetched(&out);
}

/// /etc/hosts comes before DNS on the host: a name only /etc/hosts knows
/// (bind-mounted over it in a private mount namespace) is fetched.
#[test]
fn host_tool_reads_etc_hosts_before_dns() {
    let f = Fixture::new("https-etc-hosts");
    make_leaf(
        f.dir.path(),
        "ca",
        "named",
        "DNS:boot.hosts-only.test",
        5,
        false,
    );
    let hosts = f.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 boot.hosts-only.test\n").unwrap();
    let s = TlsServer::start(f.dir.path(), "named", &["-tls1_3"], CONTENT_LENGTH, false);
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} net get --timeout-secs 2 --ca {} https://boot.hosts-only.test:{}/boot/overlay.tar",
        hosts.display(),
        ember_bin().display(),
        f.path("ca.pem").display(),
        s.port
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_fetched(&out);
}

#[test]
fn chunked_body_is_reassembled() {
    let f = Fixture::new("https-chunked");
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello,\r\n6;ext=1\r\n node\n\r\n0\r\n\r\n";
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], response, false);
    let out = f.get("ca", s.port, &[]);
    assert_fetched(&out);
}

#[test]
fn server_from_another_ca_is_refused() {
    let f = Fixture::new("https-wrong-ca");
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], CONTENT_LENGTH, false);
    assert_refused(
        &f.get("other-ca", s.port, &[]),
        "certificate: not issued by the trusted CA",
    );
}

#[test]
fn certificate_for_another_host_is_refused() {
    let f = Fixture::new("https-wrong-host");
    make_leaf(
        f.dir.path(),
        "ca",
        "elsewhere",
        "DNS:boot.example.org",
        5,
        false,
    );
    let s = TlsServer::start(
        f.dir.path(),
        "elsewhere",
        &["-tls1_3"],
        CONTENT_LENGTH,
        false,
    );
    assert_refused(
        &f.get("ca", s.port, &[]),
        "certificate: does not match the host name",
    );
}

#[test]
fn expired_certificate_is_refused() {
    let f = Fixture::new("https-expired");
    make_leaf(f.dir.path(), "ca", "expired", "IP:127.0.0.1", -1, false);
    let s = TlsServer::start(f.dir.path(), "expired", &["-tls1_3"], CONTENT_LENGTH, false);
    assert_refused(&f.get("ca", s.port, &[]), "certificate: expired");
}

#[test]
fn tls12_only_server_is_refused() {
    let f = Fixture::new("https-tls12");
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_2"], CONTENT_LENGTH, false);
    assert_refused(
        &f.get("ca", s.port, &[]),
        "TLS: server does not speak TLS 1.3",
    );
}

#[test]
fn server_without_chacha20_poly1305_is_refused() {
    // A TLS 1.3 server offering only AES-GCM: the node has no AES (one AEAD,
    // ChaCha20-Poly1305, for TLS and the sealed overlay) and must say so.
    let f = Fixture::new("https-aes-only");
    let s = TlsServer::start(
        f.dir.path(),
        "server",
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
        ],
        CONTENT_LENGTH,
        false,
    );
    assert_refused(
        &f.get("ca", s.port, &[]),
        "TLS: server refused the handshake: it must offer TLS_CHACHA20_POLY1305_SHA256",
    );
}

#[test]
fn silent_server_hits_the_read_timeout() {
    let f = Fixture::new("https-slow");
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], b"", true);
    let start = Instant::now();
    let out = f.get("ca", s.port, &[]);
    assert_refused(&out, "read timed out");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn redirect_is_refused() {
    let f = Fixture::new("https-redirect");
    let response =
        b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nContent-Length: 0\r\n\r\n";
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], response, false);
    assert_refused(&f.get("ca", s.port, &[]), "redirects are refused");
}

#[test]
fn truncated_body_is_an_error() {
    let f = Fixture::new("https-truncated");
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this";
    let s = TlsServer::start(f.dir.path(), "server", &["-tls1_3"], response, false);
    let out = f.get("ca", s.port, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP body truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn client_certificate_is_presented_for_mutual_tls() {
    let f = Fixture::new("https-mtls");
    make_leaf(f.dir.path(), "ca", "node", "DNS:node.ember", 5, true);
    let ca = f.path("ca.pem");
    let server_args = ["-tls1_3", "-Verify", "1", "-CAfile", ca.to_str().unwrap()];
    let s = TlsServer::start(f.dir.path(), "server", &server_args, CONTENT_LENGTH, false);
    let cert = f.path("node.pem");
    let key = f.path("node.key");
    let out = f.get(
        "ca",
        s.port,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_fetched(&out);

    // Without the certificate the server refuses the handshake.
    let s = TlsServer::start(f.dir.path(), "server", &server_args, CONTENT_LENGTH, false);
    let out = f.get("ca", s.port, &[]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

/// The boot path in one: a lease from dnsmasq writes resolv.conf, the boot
/// server's name resolves through the lease's DNS server (dnsmasq), and the
/// file arrives over verified TLS; all inside namespaces the test creates.
#[test]
fn boot_server_name_resolves_through_the_lease_dns_and_is_fetched() {
    let f = Fixture::new("https-netns");
    make_leaf(f.dir.path(), "ca", "boot", "DNS:boot.ember.test", 5, false);
    let ns = NetnsPair::new("fetch", "10.79.0");
    let _dns = Dnsmasq::start(
        &ns,
        f.dir.path(),
        "dns",
        &DnsmasqConfig {
            range: ("10.79.0.50", "10.79.0.99"),
            lease: "2m",
            dns_server: "10.79.0.1",
            domain: Some("ember.test"),
            mtu: None,
            host_records: &["boot.ember.test,10.79.0.1"],
        },
    );
    let resolv = f.path("resolv.conf");
    let out = ns
        .in_client(&ember_bin())
        .args([
            "net",
            "dhcp",
            "--iface",
            ns.client_if,
            "--events",
            "1",
            "--resolv-conf",
        ])
        .arg(&resolv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&resolv)
        .unwrap()
        .contains("nameserver 10.79.0.1"));

    let s = TlsServer::start_in(
        Some(&ns.server),
        "10.79.0.1",
        f.dir.path(),
        "boot",
        &["-tls1_3"],
        CONTENT_LENGTH,
        false,
    );
    let out = ns
        .in_client(&ember_bin())
        .args(["net", "get", "--timeout-secs", "5", "--resolv-conf"])
        .arg(&resolv)
        .arg("--ca")
        .arg(f.path("ca.pem"))
        .arg(format!(
            "https://boot.ember.test:{}/boot/overlay.tar",
            s.port
        ))
        .output()
        .unwrap();
    assert_fetched(&out);
}

/// Boot servers often present leaf + intermediate; the chain is built up
/// to the bundled root. An intermediate that is not a CA cannot issue.
#[test]
fn chain_through_an_intermediate_ca_is_accepted() {
    let f = Fixture::new("https-intermediate");
    let dir = f.dir.path();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "inter.key",
            "-out",
            "inter.csr",
            "-subj",
            "/CN=Ember Intermediate",
        ],
    );
    std::fs::write(
        dir.join("inter.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "inter.pem",
            "-days",
            "10",
            "-extfile",
            "inter.ext",
        ],
    );
    make_leaf(dir, "inter", "leaf", "IP:127.0.0.1", 5, false);
    let chain = dir.join("inter.pem");
    let s = TlsServer::start(
        dir,
        "leaf",
        &["-tls1_3", "-cert_chain", chain.to_str().unwrap()],
        CONTENT_LENGTH,
        false,
    );
    let out = f.get("ca", s.port, &[]);
    assert_fetched(&out);

    // Without the intermediate the leaf does not reach the root.
    let s = TlsServer::start(dir, "leaf", &["-tls1_3"], CONTENT_LENGTH, false);
    assert_refused(
        &f.get("ca", s.port, &[]),
        "certificate: not issued by the trusted CA",
    );

    // A leaf (not a CA) cannot issue another leaf.
    make_leaf(dir, "server", "grandchild", "IP:127.0.0.1", 5, false);
    let server_chain = dir.join("server.pem");
    let s = TlsServer::start(
        dir,
        "grandchild",
        &["-tls1_3", "-cert_chain", server_chain.to_str().unwrap()],
        CONTENT_LENGTH,
        false,
    );
    assert_refused(
        &f.get("ca", s.port, &[]),
        "certificate: not issued by the trusted CA",
    );
}
