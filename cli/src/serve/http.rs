//! HTTP routes over the protocol functions, the TLS accept loop, and one
//! structured log line per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use ember_proto::msg::{self, encode, path, ErrorCode, ErrorResponse, PROTOCOL_VERSION};
use ember_proto::sealed::{chunk_count, Sealer};
use tokio::net::TcpListener;
use tower_service::Service;

use super::attest::{Refusal, Server};
use super::store::hex;

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

type App = Arc<Server>;

/// A protocol step: request body in, response body and node name out, or
/// the refusal (with the node when it was identified).
type Step = fn(&Server, Bytes) -> Result<(Vec<u8>, String), (Option<String>, Refusal)>;

/// One line per request: step, node, outcome, status, duration, peer.
fn log_request(
    step: &str,
    node: Option<&str>,
    peer: Option<SocketAddr>,
    outcome: Result<(), &Refusal>,
    started: Instant,
) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    let node = node.unwrap_or("-");
    match outcome {
        Ok(()) => eprintln!("ember-serve: step={step} node={node} outcome=ok status=200 ms={ms:.1} peer={peer}"),
        Err(r) => eprintln!(
            "ember-serve: step={step} node={node} outcome={} status={} ms={ms:.1} peer={peer} detail={:?}",
            r.code.name(),
            r.code.http_status(),
            r.detail
        ),
    }
}

fn refusal_response(r: &Refusal) -> Response<Body> {
    let body = encode(&ErrorResponse {
        version: PROTOCOL_VERSION,
        code: r.code,
        detail: r.detail.clone(),
    });
    Response::builder()
        .status(
            StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .header(header::CONTENT_TYPE, msg::CONTENT_TYPE)
        .header(msg::ERROR_HEADER, r.code.name())
        .body(Body::from(body))
        .unwrap_or_default()
}

fn ok_response(body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, msg::CONTENT_TYPE)
        .body(Body::from(body))
        .unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, (Option<String>, Refusal)> + Send + 'static,
) -> Result<T, (Option<String>, Refusal)> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err((
            None,
            Refusal::new(ErrorCode::Internal, format!("handler panicked: {e}")),
        ))
    })
}

fn peer_of(headers: &axum::http::Extensions) -> Option<SocketAddr> {
    headers.get::<Peer>().map(|p| p.0)
}

async fn start(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    protocol_post("start", app, req, |app, body| {
        app.start(&body).map(|s| (s.body, s.node))
    })
    .await
}

async fn finish(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    protocol_post("finish", app, req, |app, body| {
        app.finish(&body).map(|s| (s.body, s.node))
    })
    .await
}

async fn read_body(req: Request<Body>) -> Result<(axum::http::request::Parts, Bytes), Refusal> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, msg::MAX_MESSAGE)
        .await
        .map_err(|_| Refusal::new(ErrorCode::Malformed, "body too large or unreadable"))?;
    Ok((parts, bytes))
}

async fn protocol_post(
    step: &'static str,
    app: App,
    req: Request<Body>,
    f: Step,
) -> Response<Body> {
    let started = Instant::now();
    let peer = peer_of(req.extensions());
    let body = match read_body(req).await {
        Ok((_, b)) => b,
        Err(r) => {
            log_request(step, None, peer, Err(&r), started);
            return refusal_response(&r);
        }
    };
    match blocking(move || f(&app, body)).await {
        Ok((resp, node)) => {
            log_request(step, Some(&node), peer, Ok(()), started);
            ok_response(resp)
        }
        Err((node, r)) => {
            log_request(step, node.as_deref(), peer, Err(&r), started);
            refusal_response(&r)
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

async fn report_handler(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    let step = "report";
    let started = Instant::now();
    let peer = peer_of(req.extensions());
    let (parts, body) = match read_body(req).await {
        Ok(x) => x,
        Err(r) => {
            log_request(step, None, peer, Err(&r), started);
            return refusal_response(&r);
        }
    };
    let auth_header = bearer(&parts.headers);
    let result = blocking(move || {
        let auth = app.authorize(auth_header.as_deref())?;
        let node = auth.node.name.clone();
        app.report(&auth, &body)
            .map(|b| (b, node.clone()))
            .map_err(|r| (Some(node), r))
    })
    .await;
    match result {
        Ok((resp, node)) => {
            log_request(step, Some(&node), peer, Ok(()), started);
            ok_response(resp)
        }
        Err((node, r)) => {
            log_request(step, node.as_deref(), peer, Err(&r), started);
            refusal_response(&r)
        }
    }
}

/// Streams the sealed overlay: the blob is read and sealed chunk by chunk
/// on the blocking pool, so memory stays at a few chunks per download.
async fn overlay(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    let step = "overlay";
    let started = Instant::now();
    let peer = peer_of(req.extensions());
    let auth_header = bearer(req.headers());
    let app2 = app.clone();
    let prepared = blocking(move || {
        let auth = app2.authorize(auth_header.as_deref())?;
        let node = auth.node.name.clone();
        let (overlay, key) = app2
            .overlay_for(&auth)
            .map_err(|r| (Some(node.clone()), r))?;
        let file = std::fs::File::open(app2.state.blob(&hex(&overlay.sha256))).map_err(|e| {
            (
                Some(node.clone()),
                Refusal::new(
                    ErrorCode::Internal,
                    format!("overlay blob {}: {e}", hex(&overlay.sha256)),
                ),
            )
        })?;
        Ok((node, overlay, key, file))
    })
    .await;
    let (node, overlay, key, file) = match prepared {
        Ok(x) => x,
        Err((node, r)) => {
            log_request(step, node.as_deref(), peer, Err(&r), started);
            return refusal_response(&r);
        }
    };
    let chunk = app.settings.chunk_size;
    let sealed_size = ember_proto::sealed::sealed_len(overlay.size, chunk);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let send = |item| tx.blocking_send(item).is_ok();
        let mut sealer = match Sealer::new(&key, chunk, &overlay.sha256) {
            Ok(s) => s,
            Err(e) => {
                send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        if !send(Ok(Bytes::copy_from_slice(&sealer.header()))) {
            return;
        }
        let mut file = std::io::BufReader::with_capacity(chunk as usize, file);
        let n = chunk_count(overlay.size, chunk);
        let mut left = overlay.size;
        for i in 0..n {
            let len = left.min(chunk as u64) as usize;
            let mut buf = vec![0u8; len];
            if let Err(e) = file.read_exact(&mut buf) {
                // The blob changed under us: cut the stream; the node sees a
                // truncated stream and refuses it.
                send(Err(e));
                return;
            }
            left -= len as u64;
            if let Err(e) = sealer.seal_chunk(&mut buf, i + 1 == n) {
                send(Err(std::io::Error::other(e.to_string())));
                return;
            }
            if !send(Ok(Bytes::from(buf))) {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    log_request(step, Some(&node), peer, Ok(()), started);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ember-sealed")
        .header(header::CONTENT_LENGTH, sealed_size)
        .header("ember-overlay-version", overlay.version_id)
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// Static boot artifacts (kernel, initrd) by SHA-256, for firmware network
/// boot: integrity comes from the content address, so plain HTTP is enough.
async fn boot_artifact(State(app): State<App>, Path(sha): Path<String>) -> Response<Body> {
    let started = Instant::now();
    let valid = sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let path = app.state.boot_artifact(&sha);
    let file = if valid {
        tokio::fs::File::open(&path).await.ok()
    } else {
        None
    };
    let Some(file) = file else {
        let r = Refusal::new(ErrorCode::NotFound, format!("no boot artifact {sha}"));
        log_request("boot", None, None, Err(&r), started);
        return refusal_response(&r);
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    log_request("boot", None, None, Ok(()), started);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{sha}\""))
                .unwrap_or(HeaderValue::from_static("\"\"")),
        )
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(file)))
        .unwrap_or_default()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn fallback(req: Request<Body>) -> Response<Body> {
    let r = Refusal::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    );
    log_request(
        "route",
        None,
        peer_of(req.extensions()),
        Err(&r),
        Instant::now(),
    );
    refusal_response(&r)
}

pub fn router(app: App) -> Router {
    Router::new()
        .route(path::START, post(start))
        .route(path::FINISH, post(finish))
        .route(path::REPORT, post(report_handler))
        .route(path::OVERLAY, get(overlay))
        .route(&format!("{}/{{sha256}}", path::BOOT), get(boot_artifact))
        .route("/healthz", get(healthz))
        .fallback(fallback)
        .with_state(app)
}

/// Only the boot artifacts, for the plain-HTTP listener.
pub fn boot_router(app: App) -> Router {
    Router::new()
        .route(&format!("{}/{{sha256}}", path::BOOT), get(boot_artifact))
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// Serves `router` on `listener`, over TLS when `tls` is given.
pub async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, router: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                eprintln!("ember-serve: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                let mut router = router.clone();
                async move { router.call(req.map(Body::new)).await }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await
                        }
                        Ok(Err(e)) => {
                            eprintln!("ember-serve: step=tls outcome=handshake-failed peer={peer} detail={e:?}");
                            return;
                        }
                        Err(_) => {
                            eprintln!(
                                "ember-serve: step=tls outcome=handshake-timeout peer={peer}"
                            );
                            return;
                        }
                    }
                }
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await
                }
            };
            if let Err(e) = result {
                if !e.is_incomplete_message() {
                    eprintln!(
                        "ember-serve: step=http outcome=connection-error peer={peer} detail={e}"
                    );
                }
            }
        });
    }
}
