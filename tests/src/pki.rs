//! Test certificates made with the openssl command (a real, independent
//! implementation), and a static HTTPS file server (`openssl s_server -WWW`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_until, ChildGuard};

/// A throwaway certificate authority in a directory.
pub struct TestCa {
    dir: PathBuf,
}

/// A leaf certificate and its key, signed by a [`TestCa`].
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A P-256 CA certificate valid for a day, at `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Ember Test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa {
            dir: dir.to_path_buf(),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate with the given subjectAltNames
    /// (`"IP:10.0.2.2"`, `"DNS:boot.ember.test"`).
    pub fn issue(&self, name: &str, sans: &[&str]) -> Leaf {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
                sans.join(",")
            ),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ],
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
        Leaf {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }
}

/// `openssl s_server -WWW`: serves files under `root` over TLS 1.3 on a
/// free loopback port; stopped by PID on drop.
pub struct StaticHttpsServer {
    pub port: u16,
    _child: ChildGuard,
}

impl StaticHttpsServer {
    pub fn start(root: &Path, leaf: &Leaf) -> Self {
        let port = free_port();
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-quiet", "-WWW", "-tls1_3"])
            // The node's only TLS 1.3 suite (net/src/tls.rs).
            .args(["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&leaf.cert)
            .arg("-key")
            .arg(&leaf.key)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child =
            ChildGuard::spawn("openssl s_server", &mut cmd).expect("start openssl s_server");
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "openssl s_server did not listen on {port}"
        );
        StaticHttpsServer {
            port,
            _child: child,
        }
    }
}
