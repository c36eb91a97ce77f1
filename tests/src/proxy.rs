//! An on-path attacker on loopback: a TCP proxy in front of `ember serve`
//! that forwards every connection but the ones it was told to drop. A
//! dropped connection is accepted, its bytes read and thrown away, and
//! then closed: the client sent its request and gets no answer, and the
//! server never sees it. The proxy cannot read TLS, so it picks
//! connections by their order (one request per connection, as the
//! clients make them).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct DropProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl DropProxy {
    /// Forwards to `upstream` (`HOST:PORT`), dropping the connections
    /// whose 1-based numbers are in `drop`.
    pub fn start(upstream: &str, drop: &[usize]) -> DropProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let (upstream, drop) = (upstream.to_string(), drop.to_vec());
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let n = seen2.fetch_add(1, Ordering::Relaxed) + 1;
                let _ = client.set_nonblocking(false);
                if drop.contains(&n) {
                    std::thread::spawn(move || swallow(client));
                } else if let Ok(server) = TcpStream::connect(&upstream) {
                    forward(client, server);
                }
            }
        });
        DropProxy {
            addr,
            stop,
            seen,
            accept: Some(accept),
        }
    }

    /// `https://127.0.0.1:PORT`, for a client's `--url`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }
}

/// Reads what the client sends until it has been quiet for a second,
/// then closes: the request went nowhere.
fn swallow(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Copies both ways until either side closes.
fn forward(client: TcpStream, server: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
        pipe(client, s2);
        pipe(server, c2);
    }
}

impl Drop for DropProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
