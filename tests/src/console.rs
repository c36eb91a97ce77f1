//! An HTTPS client for the console tests: one request per connection,
//! trusting the server's CA, with or without an operator's client
//! certificate.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A response: status, headers (names lower-case) and body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A console client: the server's CA, and the operator's certificate and
/// key (PEM files) when given.
pub struct Client {
    addr: String,
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(addr: &str, ca: &Path, operator: Option<(&Path, &Path)>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("read CA");
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match operator {
            Some((cert, key)) => {
                let cert = CertificateDer::from_pem_file(cert).expect("operator certificate");
                let key = PrivateKeyDer::from_pem_file(key).expect("operator key");
                builder
                    .with_client_auth_cert(vec![cert], key)
                    .expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        };
        Client {
            addr: addr.to_string(),
            config: Arc::new(config),
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], "")
    }

    /// One request; `headers` are extra `Name: value` lines.
    pub fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Response {
        let name = ServerName::try_from("localhost").expect("server name");
        let conn = rustls::ClientConnection::new(self.config.clone(), name).expect("TLS client");
        let tcp = std::net::TcpStream::connect(&self.addr).expect("connect to the console");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(body);
        tls.write_all(req.as_bytes()).expect("send request");
        let mut raw = Vec::new();
        // A peer that closes without close_notify still gave its response.
        let _ = tls.read_to_end(&mut raw);
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Response {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(at) = resp.parse(raw).expect("HTTP response") else {
        panic!("incomplete response: {}", String::from_utf8_lossy(raw));
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut body = raw[at..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status: resp.code.unwrap_or(0),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
}
