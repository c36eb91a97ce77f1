//! A minimal WebDriver client for the console's browser test: Debian's
//! chromium driven headless by chromium-driver (W3C WebDriver over HTTP
//! on loopback, JSON bodies). No new crate: std's TcpStream, httparse and
//! serde_json already in this crate. The browser gets its own HOME, whose
//! NSS database holds the server's CA and the operator's certificate;
//! a managed policy (`AutoSelectCertificateForUrls`) lets it present that
//! certificate without a dialog. The policy file is removed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::{free_port, ChildGuard};

/// Where Debian's chromium reads managed policies.
const POLICY_DIR: &str = "/etc/chromium/policies/managed";

pub struct Browser {
    port: u16,
    session: String,
    _driver: ChildGuard,
    policy: PathBuf,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `home`/.pki/nssdb trusting `ca` and holding the operator's
/// certificate and key (PEM files).
pub fn nss_db(home: &Path, ca: &Path, cert: &Path, key: &Path) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let sql = format!("sql:{}", db.display());
    run(
        Command::new("certutil").args(["-N", "-d", &sql, "--empty-password"]),
        "certutil -N",
    );
    run(
        Command::new("certutil")
            .args(["-A", "-d", &sql, "-n", "ember-ca", "-t", "C,,", "-i"])
            .arg(ca),
        "certutil -A",
    );
    let p12 = home.join("operator.p12");
    run(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:", "-in"])
            .arg(cert)
            .arg("-inkey")
            .arg(key)
            .arg("-out")
            .arg(&p12),
        "openssl pkcs12",
    );
    run(
        Command::new("pk12util")
            .args(["-d", &sql, "-W", "", "-i"])
            .arg(&p12),
        "pk12util",
    );
}

impl Browser {
    /// Starts chromium-driver and a headless session at 1280×800 with
    /// `home` as HOME; certificates for `origin` are picked automatically.
    pub fn start(home: &Path, origin: &str, tag: &str) -> Browser {
        std::fs::create_dir_all(POLICY_DIR).expect("policy folder");
        let policy =
            Path::new(POLICY_DIR).join(format!("ember-test-{tag}-{}.json", std::process::id()));
        let rule = json!({ "pattern": origin, "filter": {} }).to_string();
        std::fs::write(
            &policy,
            json!({ "AutoSelectCertificateForUrls": [rule] }).to_string(),
        )
        .expect("write policy");
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"))
            .env("HOME", home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let driver = ChildGuard::spawn("chromedriver", &mut cmd).expect("start chromedriver");
        let up = crate::process::wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "chromedriver did not listen");
        let profile = home.join("profile");
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,800", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut b = Browser {
            port,
            session: String::new(),
            _driver: driver,
            policy,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("send to chromedriver");
        // chromedriver keeps the connection open: read the header, then
        // exactly Content-Length bytes.
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).expect("read from chromedriver");
            assert!(
                n > 0,
                "chromedriver closed: {}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(at)) = resp.parse(&raw) else {
                continue;
            };
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            if raw.len() < at + len {
                continue;
            }
            let v: Value = serde_json::from_slice(&raw[at..at + len]).unwrap_or(Value::Null);
            assert_eq!(resp.code, Some(200), "{method} {path}: {v}");
            return v["value"].clone();
        }
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` (a function body) in the page; WebDriver's scripts
    /// are not the page's, so the page's CSP does not apply to them.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(b64.as_str().expect("base64 screenshot"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ = std::fs::remove_file(&self.policy);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk"), b"hi");
    }
}
