//! Every way the stand-in can fail, one variant per cause.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    Usage(String),
    ConfRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// node.conf syntax (shared with the init).
    Conf(ember_nodeapi::Error),
    ConfUnknownKey {
        line: usize,
        key: String,
    },
    ConfMissing(&'static str),
    ConfValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    Url {
        url: String,
        why: &'static str,
    },
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    CaInvalid {
        path: PathBuf,
        why: String,
    },
    TokenRead {
        path: PathBuf,
        source: std::io::Error,
    },
    TokenEmpty(PathBuf),
    TlsName(String),
    Resolve {
        host: String,
        source: std::io::Error,
    },
    Connect {
        addr: String,
        source: std::io::Error,
    },
    Tls(String),
    Exchange {
        addr: String,
        source: std::io::Error,
    },
    HttpResponse(&'static str),
    ResponseTooLarge,
    HealthzBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    RuncSpawn {
        runc: PathBuf,
        source: std::io::Error,
    },
    RuncTimeout {
        seconds: u64,
    },
    RuncWait(std::io::Error),
    RuncState {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "usage: {msg}"),
            Error::ConfRead { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            Error::Conf(e) => write!(f, "{e}"),
            Error::ConfUnknownKey { line, key } => {
                write!(f, "node.conf line {line}: unknown stand-in key {key}")
            }
            Error::ConfMissing(key) => write!(f, "node.conf: {key} is required"),
            Error::ConfValue {
                key,
                value,
                expected,
            } => {
                write!(f, "node.conf: {key} = {value:?}: expected {expected}")
            }
            Error::Url { url, why } => write!(f, "API server URL {url:?}: {why}"),
            Error::CaRead { path, source } => {
                write!(f, "cannot read API CA {}: {source}", path.display())
            }
            Error::CaInvalid { path, why } => write!(f, "API CA {}: {why}", path.display()),
            Error::TokenRead { path, source } => {
                write!(f, "cannot read API token {}: {source}", path.display())
            }
            Error::TokenEmpty(path) => write!(f, "API token {} is empty", path.display()),
            Error::TlsName(name) => write!(f, "{name:?} is not a valid TLS server name"),
            Error::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            Error::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Error::Tls(why) => write!(f, "TLS: {why}"),
            Error::Exchange { addr, source } => write!(f, "request to {addr} failed: {source}"),
            Error::HttpResponse(why) => write!(f, "malformed HTTP response: {why}"),
            Error::ResponseTooLarge => write!(f, "HTTP response larger than the limit"),
            Error::HealthzBind { addr, source } => {
                write!(f, "cannot listen for healthz on {addr}: {source}")
            }
            Error::RuncSpawn { runc, source } => {
                write!(f, "cannot start {}: {source}", runc.display())
            }
            Error::RuncTimeout { seconds } => {
                write!(f, "container still running after {seconds} s; killed")
            }
            Error::RuncWait(source) => write!(f, "waiting for runc: {source}"),
            Error::RuncState { path, source } => {
                write!(
                    f,
                    "cannot create runc state dir {}: {source}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for Error {}
