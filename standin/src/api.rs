//! The Kubernetes API as kubelet reaches it: HTTPS with the cluster CA from
//! the overlay and a bearer token, one request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::conf::ApiConf;
use crate::error::Error;
use crate::http::{self, Request, Response};
use crate::root::Root;
use crate::url::HttpsUrl;

pub struct ApiClient {
    url: HttpsUrl,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    token: String,
    timeout: Duration,
}

fn load_roots(conf: &ApiConf, root: &Root) -> Result<rustls::RootCertStore, Error> {
    let path = root.resolve(&conf.ca);
    let pem = std::fs::read(&path).map_err(|source| Error::CaRead {
        path: path.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Error::CaInvalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| Error::CaInvalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(Error::CaInvalid {
            path,
            why: "no PEM certificate in the file".into(),
        });
    }
    Ok(roots)
}

fn load_token(conf: &ApiConf, root: &Root) -> Result<String, Error> {
    let path = root.resolve(&conf.token_file);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::TokenRead {
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() || token.contains(|c: char| c.is_ascii_control() || c == ' ') {
        return Err(Error::TokenEmpty(path));
    }
    Ok(token.to_string())
}

impl ApiClient {
    pub fn new(conf: &ApiConf, root: &Root) -> Result<Self, Error> {
        let roots = load_roots(conf, root)?;
        let token = load_token(conf, root)?;
        let name = ServerName::try_from(conf.tls_name.clone())
            .map_err(|_| Error::TlsName(conf.tls_name.clone()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ApiClient {
            url: conf.server.clone(),
            name,
            config: Arc::new(config),
            token,
            timeout: Duration::from_secs(20),
        })
    }

    pub fn base(&self) -> String {
        format!("https://{}{}", self.url.authority(), self.url.prefix)
    }

    fn address(&self) -> Result<SocketAddr, Error> {
        (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .and_then(|mut a| a.next().ok_or_else(|| std::io::Error::other("no address")))
            .map_err(|source| Error::Resolve {
                host: self.url.host.clone(),
                source,
            })
    }

    /// The source address the kernel picks towards the API server: the
    /// node's InternalIP as the cluster sees it.
    pub fn local_ip(&self) -> Option<String> {
        let target = self.address().ok()?;
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let sock = UdpSocket::bind(bind).ok()?;
        sock.connect(target).ok()?;
        Some(sock.local_addr().ok()?.ip().to_string())
    }

    /// One request on a fresh connection; `path` is below the URL's prefix.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Response, Error> {
        let addr = self.address()?;
        let addr_text = addr.to_string();
        let tcp =
            TcpStream::connect_timeout(&addr, self.timeout).map_err(|source| Error::Connect {
                addr: addr_text.clone(),
                source,
            })?;
        let exchange = |source| Error::Exchange {
            addr: addr_text.clone(),
            source,
        };
        tcp.set_read_timeout(Some(self.timeout)).map_err(exchange)?;
        tcp.set_write_timeout(Some(self.timeout))
            .map_err(exchange)?;
        let _ = tcp.set_nodelay(true);
        let conn = rustls::ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let full_path = format!("{}{}", self.url.prefix, path);
        let authority = self.url.authority();
        let req = Request {
            method,
            path: &full_path,
            authority: &authority,
            bearer: Some(&self.token),
            content_type,
            body,
        }
        .emit();
        tls.write_all(&req).map_err(|e| tls_or_io(e, &addr_text))?;
        tls.flush().map_err(|e| tls_or_io(e, &addr_text))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if raw.len() + n > http::MAX_RESPONSE {
                        return Err(Error::ResponseTooLarge);
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                // A peer that closes without close_notify: the response's
                // own framing decides whether it is complete.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(tls_or_io(e, &addr_text)),
            }
        }
        http::parse_response(&raw)
    }
}

/// rustls reports handshake failures (bad certificate, wrong name) as
/// io::Error wrapping its own error: keep them apart from network errors.
fn tls_or_io(e: std::io::Error, addr: &str) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::Tls(tls.to_string()),
        None => Error::Exchange {
            addr: addr.to_string(),
            source: e,
        },
    }
}
