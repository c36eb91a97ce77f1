//! A Kubernetes API test double for nodes: the real API's paths, JSON
//! objects and `Status` errors for `/api/v1/nodes`, bearer-token auth, and
//! HTTPS with a CA it makes for itself. It listens on 127.0.0.1 on a port
//! of its own, which a QEMU guest with user networking reaches as
//! 10.0.2.2. Every request is recorded for the test to inspect.
//!
//! Served: `GET /healthz|/livez|/readyz` (no auth), `GET /version`,
//! `GET|POST /api/v1/nodes`, `GET|PUT|PATCH|DELETE /api/v1/nodes/NAME`,
//! `GET|PUT|PATCH /api/v1/nodes/NAME/status`. PATCH takes
//! `application/merge-patch+json` (RFC 7386) and
//! `application/strategic-merge-patch+json` (as merge patch, except that
//! lists of objects with a `type` field, such as conditions and addresses,
//! are merged by that key, as the real API does for Node status);
//! JSON patch is answered 415.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Map, Value};

use crate::ScratchDir;

/// The DNS name in the server certificate (the node's TLS verifier may
/// match DNS names only); it also carries 127.0.0.1 and 10.0.2.2.
pub const TLS_NAME: &str = "kubernetes.ember.test";
/// The host's loopback as a QEMU user-networking guest sees it.
pub const GUEST_HOST: &str = "10.0.2.2";

const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 4 << 20;

/// One request as the double saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub status: u16,
    /// Whether it carried the right bearer token.
    pub authorized: bool,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Value>,
    resource_version: u64,
    requests: Vec<RequestRecord>,
}

impl State {
    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

/// Connection threads and a second handle on each one's socket.
type Workers = Arc<Mutex<Vec<(JoinHandle<()>, TcpStream)>>>;

/// The running double; stops its threads and removes its files on drop.
pub struct KubeApi {
    port: u16,
    token: String,
    ca_pem: String,
    dir: ScratchDir,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    /// Connection threads with a handle on their socket, so that drop can
    /// cut a slow client short instead of waiting for its timeout.
    workers: Workers,
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn io_other(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// A CA and a server certificate signed by it: (CA PEM, server DER, key DER).
fn make_identity() -> std::io::Result<(String, CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let ca_key = KeyPair::generate().map_err(|e| io_other("CA key", e))?;
    let mut ca =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| io_other("CA params", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Kubernetes API test double CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2074, 1, 1);
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| io_other("self-sign CA", e))?;

    let key = KeyPair::generate().map_err(|e| io_other("server key", e))?;
    let names = vec![
        TLS_NAME.to_string(),
        "kubernetes".to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        GUEST_HOST.to_string(),
    ];
    let mut params = CertificateParams::new(names).map_err(|e| io_other("server names", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, TLS_NAME);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2074, 1, 1);
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| io_other("sign server certificate", e))?;
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|e| io_other("server key PEM", e))?;
    Ok((ca_cert.pem(), cert.der().clone(), key_der))
}

impl KubeApi {
    /// Starts the double with a fresh CA and a random bearer token.
    pub fn start() -> std::io::Result<KubeApi> {
        let (ca_pem, cert, key) = make_identity()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io_other("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| io_other("TLS identity", e))?;
        let config = Arc::new(config);

        let dir = ScratchDir::new("kubeapi");
        let token = random_hex(24)?;
        std::fs::write(dir.path().join("ca.pem"), &ca_pem)?;
        std::fs::write(dir.path().join("token"), format!("{token}\n"))?;

        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Workers = Arc::default();

        let ctx = Ctx {
            token: token.clone(),
            state: state.clone(),
        };
        let (stop2, workers2) = (stop.clone(), workers.clone());
        let acceptor = std::thread::Builder::new()
            .name("kubeapi-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let Ok(clone) = conn.try_clone() else {
                        continue;
                    };
                    let (ctx, config) = (ctx.clone(), config.clone());
                    let handle = std::thread::spawn(move || {
                        let _ = serve_connection(conn, config, &ctx);
                    });
                    let mut w = lock(&workers2);
                    w.retain(|(h, _)| !h.is_finished());
                    w.push((handle, clone));
                }
            })?;
        Ok(KubeApi {
            port,
            token,
            ca_pem,
            dir,
            state,
            stop,
            acceptor: Some(acceptor),
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT`, for clients on the host.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `https://10.0.2.2:PORT`, for a QEMU guest on user networking.
    pub fn guest_url(&self) -> String {
        format!("https://{GUEST_HOST}:{}", self.port)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The token followed by a newline, as a kubeconfig token file holds it.
    pub fn token_path(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Every Node object stored, by name.
    pub fn nodes(&self) -> Vec<Value> {
        lock(&self.state).nodes.values().cloned().collect()
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        lock(&self.state).nodes.get(name).cloned()
    }

    /// The Ready condition's status of node `name` (`Some(true)` for "True").
    pub fn node_ready(&self, name: &str) -> Option<bool> {
        self.node(name).and_then(|n| ready_condition(&n))
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.state).requests.clone()
    }

    /// Waits until node `name` exists and `pred` holds for it.
    pub fn wait_for_node(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.node(name).filter(|n| pred(n)) {
                return Some(n);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stores a Node as if an earlier boot had registered it.
    pub fn insert_node(&self, mut node: Value) {
        let mut st = lock(&self.state);
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        stamp_new(&mut node, &mut st);
        st.nodes.insert(name, node);
    }

    /// A client request over HTTPS (verifying the double's certificate as
    /// `TLS_NAME`), with `token` as bearer if given: (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> std::io::Result<(u16, String)> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| io_other("CA", e))?)
                .map_err(|e| io_other("CA", e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io_other("TLS versions", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(TLS_NAME).map_err(|e| io_other("name", e))?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| io_other("TLS", e))?;
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {TLS_NAME}\r\nConnection: close\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let payload = body.map(|(_, b)| b).unwrap_or_default();
        if let Some((ct, b)) = body {
            head.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())?;
        tls.write_all(payload)?;
        tls.flush()?;
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(e),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&raw).map_err(|e| io_other("response", e))? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Err(io_other("response", "incomplete head")),
        };
        let status = resp.code.unwrap_or(0);
        Ok((
            status,
            String::from_utf8_lossy(&raw[head_len..]).into_owned(),
        ))
    }

    /// Deletes a Node as `kubectl delete node` would; true if it existed.
    pub fn remove_node(&self, name: &str) -> bool {
        lock(&self.state).nodes.remove(name).is_some()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept, then cut open connections short.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let workers: Vec<_> = lock(&self.workers).drain(..).collect();
        for (_, sock) in &workers {
            let _ = sock.shutdown(Shutdown::Both);
        }
        for (h, _) in workers {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The status of a Node's Ready condition, if it has one.
pub fn ready_condition(node: &Value) -> Option<bool> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(|s| s == "True")
}

#[derive(Clone)]
struct Ctx {
    token: String,
    state: Arc<Mutex<State>>,
}

struct Parsed {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &mut impl Read) -> std::io::Result<Option<Parsed>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.trim().parse::<usize>())
                    .transpose()
                    .map_err(|e| io_other("Content-Length", e))?
                    .unwrap_or(0);
                if len > MAX_BODY {
                    return Err(io_other("request body", "too large"));
                }
                let mut body = buf[head_len..].to_vec();
                while body.len() < len {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io_other("request body", "connection closed early"));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                return Ok(Some(Parsed {
                    method,
                    path,
                    headers,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io_other("request head", e)),
        }
        if buf.len() > MAX_HEAD {
            return Err(io_other("request head", "too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve_connection(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    ctx: &Ctx,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(config).map_err(|e| io_other("TLS", e))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let Some(req) = read_request(&mut tls)? else {
        return Ok(());
    };
    let authorized = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == ctx.token);
    let reply = handle(&req, authorized, &ctx.state);
    lock(&ctx.state).requests.push(RequestRecord {
        method: req.method.clone(),
        path: req.path.clone(),
        status: reply.status,
        authorized,
        content_type: req.header("content-type").map(str::to_string),
        user_agent: req.header("user-agent").map(str::to_string),
        body: String::from_utf8_lossy(&req.body).into_owned(),
    });
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\nConnection: close\r\n\r\n",
        reply.status,
        reason_phrase(reply.status),
        reply.content_type,
        reply.body.len()
    );
    tls.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        tls.write_all(&reply.body)?;
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    let _ = tls.sock.shutdown(Shutdown::Write);
    Ok(())
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Unknown",
    }
}

/// A `metav1.Status` failure, as the API server writes it.
pub fn status_failure(code: u16, reason: &str, message: &str, name: Option<&str>) -> Value {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(name) = name {
        v["details"] = json!({ "name": name, "kind": "nodes" });
    }
    v
}

fn failure(code: u16, reason: &str, message: &str, name: Option<&str>) -> Reply {
    Reply::json(code, &status_failure(code, reason, message, name))
}

fn not_found(name: &str) -> Reply {
    failure(
        404,
        "NotFound",
        &format!("nodes \"{name}\" not found"),
        Some(name),
    )
}

fn method_not_allowed() -> Reply {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        None,
    )
}

fn handle(req: &Parsed, authorized: bool, state: &Mutex<State>) -> Reply {
    let path = req.path.split('?').next().unwrap_or("");
    let method = req.method.as_str();
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return if matches!(method, "GET" | "HEAD") {
            Reply::text(200, "ok")
        } else {
            method_not_allowed()
        };
    }
    if !authorized {
        return failure(401, "Unauthorized", "Unauthorized", None);
    }
    if path == "/version" {
        return Reply::json(
            200,
            &json!({
                "major": "1", "minor": "31", "gitVersion": "v1.31.1+ember-test-double",
                "platform": "linux/amd64"
            }),
        );
    }
    let Some(rest) = path.strip_prefix("/api/v1/nodes") else {
        return failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    let mut st = lock(state);
    if rest.is_empty() || rest == "/" {
        return match method {
            "GET" => list(&st),
            "POST" => create(req, &mut st),
            _ => method_not_allowed(),
        };
    }
    let rest = &rest[1..];
    let (name, sub) = match rest.split_once('/') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    match (method, sub) {
        ("GET", None | Some("status")) => match st.nodes.get(name) {
            Some(n) => Reply::json(200, n),
            None => not_found(name),
        },
        ("PUT", None) => replace(req, &mut st, name, false),
        ("PUT", Some("status")) => replace(req, &mut st, name, true),
        ("PATCH", None) => patch(req, &mut st, name, false),
        ("PATCH", Some("status")) => patch(req, &mut st, name, true),
        ("DELETE", None) => match st.nodes.remove(name) {
            Some(_) => Reply::json(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "kind": "nodes"}}),
            ),
            None => not_found(name),
        },
        (_, None | Some("status")) => method_not_allowed(),
        _ => failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        ),
    }
}

fn list(st: &State) -> Reply {
    Reply::json(
        200,
        &json!({
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": st.resource_version.to_string()},
            "items": st.nodes.values().cloned().collect::<Vec<_>>(),
        }),
    )
}

fn parse_body(req: &Parsed) -> Result<Value, Reply> {
    serde_json::from_slice::<Value>(&req.body)
        .map_err(|e| {
            failure(
                400,
                "BadRequest",
                &format!("the body of the request was in an unknown format: {e}"),
                None,
            )
        })
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err(failure(
                    400,
                    "BadRequest",
                    "the body of the request must be a JSON object",
                    None,
                ))
            }
        })
}

/// RFC 1123 subdomain, as the API validates Node names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn check_node(v: &Value) -> Result<String, Reply> {
    let kind_ok = v.get("kind").is_none_or(|k| k == "Node");
    let version_ok = v.get("apiVersion").is_none_or(|k| k == "v1");
    if !kind_ok || !version_ok {
        return Err(failure(
            400,
            "BadRequest",
            "the object is not a v1 Node",
            None,
        ));
    }
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    if !valid_name(name) {
        return Err(failure(
            422,
            "Invalid",
            &format!("Node \"{name}\" is invalid: metadata.name: Invalid value: a lowercase RFC 1123 subdomain is required"),
            Some(name),
        ));
    }
    Ok(name.to_string())
}

fn stamp_new(node: &mut Value, st: &mut State) {
    let version = st.next_version();
    if !node["metadata"].is_object() {
        node["metadata"] = json!({});
    }
    node["kind"] = json!("Node");
    node["apiVersion"] = json!("v1");
    let meta = &mut node["metadata"];
    meta["uid"] = json!(uid(&version));
    meta["resourceVersion"] = json!(version);
    meta["creationTimestamp"] = json!(rfc3339(SystemTime::now()));
}

fn uid(version: &str) -> String {
    let n: u64 = version.parse().unwrap_or(0);
    let rnd = random_hex(6).unwrap_or_else(|_| "000000000000".into());
    format!("00000000-0000-4000-8000-{:04x}{}", n & 0xffff, &rnd[..8])
}

fn create(req: &Parsed, st: &mut State) -> Reply {
    let mut node = match parse_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = match check_node(&node) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if st.nodes.contains_key(&name) {
        return failure(
            409,
            "AlreadyExists",
            &format!("nodes \"{name}\" already exists"),
            Some(&name),
        );
    }
    stamp_new(&mut node, st);
    st.nodes.insert(name, node.clone());
    Reply::json(201, &node)
}

fn replace(req: &Parsed, st: &mut State, name: &str, status_only: bool) -> Reply {
    let new = match parse_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match check_node(&new) {
        Ok(n) if n == name => {}
        Ok(_) => {
            return failure(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
                Some(name),
            )
        }
        Err(r) => return r,
    }
    let version = st.next_version();
    let Some(old) = st.nodes.get_mut(name) else {
        return not_found(name);
    };
    if status_only {
        old["status"] = new["status"].clone();
    } else {
        let meta = old["metadata"].clone();
        *old = new;
        for key in ["uid", "creationTimestamp"] {
            old["metadata"][key] = meta[key].clone();
        }
    }
    old["metadata"]["resourceVersion"] = json!(version);
    Reply::json(200, old)
}

fn patch(req: &Parsed, st: &mut State, name: &str, status_only: bool) -> Reply {
    let ct = req
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let strategic = match ct {
        "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        _ => {
            return failure(
                415,
                "UnsupportedMediaType",
                &format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"),
                None,
            )
        }
    };
    let p = match parse_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let version = st.next_version();
    let Some(old) = st.nodes.get_mut(name) else {
        return not_found(name);
    };
    let mut merged = old.clone();
    merge_patch(&mut merged, &p, strategic);
    if status_only {
        old["status"] = merged["status"].clone();
    } else {
        if merged["metadata"]["name"] != json!(name) {
            return failure(
                400,
                "BadRequest",
                "metadata.name cannot be changed",
                Some(name),
            );
        }
        *old = merged;
    }
    old["metadata"]["resourceVersion"] = json!(version);
    Reply::json(200, old)
}

/// RFC 7386, plus (when `strategic`) lists of objects keyed by `type`
/// merged element by element, as Node conditions and addresses are.
pub fn merge_patch(target: &mut Value, patch: &Value, strategic: bool) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else if strategic && keyed_by_type(v) && t.get(k).is_some_and(keyed_by_type) {
            let Some(Value::Array(existing)) = t.get_mut(k) else {
                continue;
            };
            for item in v.as_array().into_iter().flatten() {
                match existing.iter_mut().find(|e| e["type"] == item["type"]) {
                    Some(e) => merge_patch(e, item, true),
                    None => existing.push(item.clone()),
                }
            }
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v, strategic);
        }
    }
}

fn keyed_by_type(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter()
                .all(|e| e.get("type").is_some_and(Value::is_string))
    })
}

/// RFC 3339 UTC, second precision, as Kubernetes writes timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ember_nodeapi::utc::UtcTime::from_unix(i64::try_from(secs).unwrap_or(i64::MAX)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": "z", "c": {"f": null}, "l": [3]}),
            false,
        );
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_patch_merges_conditions_by_type() {
        let mut t = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}});
        merge_patch(
            &mut t,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}),
            true,
        );
        assert_eq!(t["status"]["conditions"][0]["type"], "MemoryPressure");
        assert_eq!(ready_condition(&t), Some(true));
        assert_eq!(t["status"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
