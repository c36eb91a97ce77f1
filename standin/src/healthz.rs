//! kubelet's local health endpoint (127.0.0.1:10248/healthz): 200 "ok"
//! once the node is registered Ready, 500 before that or after a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Starting = 0,
    Ready = 1,
    Failed = 2,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Ready,
            2 => Health::Failed,
            _ => Health::Starting,
        }
    }
}

/// The state the endpoint reports; cloned into the serving thread.
#[derive(Clone)]
pub struct HealthFlag(Arc<AtomicU8>);

impl HealthFlag {
    pub fn set(&self, h: Health) {
        self.0.store(h as u8, Ordering::SeqCst);
    }

    pub fn get(&self) -> Health {
        Health::from_u8(self.0.load(Ordering::SeqCst))
    }
}

/// Binds `addr` and answers on a thread for the life of the process.
pub fn serve(addr: SocketAddr) -> Result<HealthFlag, Error> {
    let listener = TcpListener::bind(addr).map_err(|source| Error::HealthzBind { addr, source })?;
    let flag = HealthFlag(Arc::new(AtomicU8::new(Health::Starting as u8)));
    let state = flag.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = answer(conn, state.get());
        }
    });
    Ok(flag)
}

/// The status line and body for a request head.
pub fn respond(head: &[u8], health: Health) -> (&'static str, &'static str) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/healthz") => match health {
            Health::Ready => ("200 OK", "ok"),
            Health::Starting => (
                "500 Internal Server Error",
                "[-]node not registered yet\nhealthz check failed",
            ),
            Health::Failed => (
                "500 Internal Server Error",
                "[-]node not ready\nhealthz check failed",
            ),
        },
        (_, "/healthz") => ("405 Method Not Allowed", "method not allowed"),
        _ => ("404 Not Found", "404 page not found"),
    }
}

fn answer(mut conn: TcpStream, health: Health) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = respond(&head, health);
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_is_ok_only_when_ready() {
        let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(respond(get, Health::Ready), ("200 OK", "ok"));
        assert_eq!(
            respond(get, Health::Starting).0,
            "500 Internal Server Error"
        );
        assert_eq!(respond(get, Health::Failed).0, "500 Internal Server Error");
        assert_eq!(
            respond(b"GET /healthz?verbose HTTP/1.1\r\n\r\n", Health::Ready).0,
            "200 OK"
        );
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        assert_eq!(
            respond(b"GET / HTTP/1.1\r\n\r\n", Health::Ready).0,
            "404 Not Found"
        );
        assert_eq!(
            respond(b"POST /healthz HTTP/1.1\r\n\r\n", Health::Ready).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond(b"", Health::Ready).0, "404 Not Found");
    }
}
