//! HTTP routes over the protocol functions, and one structured log line
//! per request. The listeners' connection handling is in [`crate::conn`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use ember_proto::msg::{self, encode, path, ErrorCode, ErrorResponse, PROTOCOL_VERSION};
use futures_util::StreamExt;
use tracing::info;

use crate::attest::{Authorized, Refusal, Server};
use crate::conn::Peer;

type App = Arc<Server>;

/// A protocol step: request body and peer address in, response body and
/// node name out, or the refusal (with the node when it was identified).
type Step = fn(&Server, Bytes, IpAddr) -> Result<(Vec<u8>, String), (Option<String>, Refusal)>;

/// One line per request: step, node, outcome, status, duration, peer, and
/// for refusals the reason the client got and the detail it did not.
fn log_request(
    app: &Server,
    step: &'static str,
    node: Option<&str>,
    peer: Option<SocketAddr>,
    outcome: Result<(), &Refusal>,
    started: Instant,
) {
    let secs = started.elapsed().as_secs_f64();
    let ms = secs * 1000.0;
    let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    let node = node.unwrap_or("-");
    app.metrics.request(
        step,
        outcome.map(|_| "ok").unwrap_or_else(|r| r.code.name()),
        secs,
    );
    // {:.1} as a number: JSON lines keep it numeric, text lines print 12.3.
    let ms = (ms * 10.0).round() / 10.0;
    match outcome {
        Ok(()) => info!(
            step = %step,
            node = %node,
            outcome = %"ok",
            status = 200u16,
            ms,
            peer = %peer
        ),
        // Reason and detail are free text (quoted in text lines). Neither
        // carries a secret: refusals name ids, hashes and measurements.
        Err(r) => info!(
            step = %step,
            node = %node,
            outcome = %r.code.name(),
            status = r.code.http_status(),
            ms,
            peer = %peer,
            reason = r.reason.as_ref(),
            detail = r.detail.as_str()
        ),
    }
}

/// The client gets the code and the short reason; the detail stays in the
/// server's log.
fn refusal_response(r: &Refusal) -> Response<Body> {
    let body = encode(&ErrorResponse {
        version: PROTOCOL_VERSION,
        code: r.code,
        detail: r.reason.to_string(),
    });
    let mut resp = Response::builder()
        .status(
            StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .header(header::CONTENT_TYPE, msg::CONTENT_TYPE)
        .header(msg::ERROR_HEADER, r.code.name());
    if let Some(s) = r.retry_after_s() {
        resp = resp.header(header::RETRY_AFTER, s);
    }
    resp.body(Body::from(body)).unwrap_or_default()
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
    protocol_post("start", app, req, |app, body, peer| {
        app.start(&body, peer).map(|s| (s.body, s.node))
    })
    .await
}

async fn finish(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    protocol_post("finish", app, req, |app, body, _| {
        app.finish(&body).map(|s| (s.body, s.node))
    })
    .await
}

/// Reads a request body of at most [`msg::MAX_MESSAGE`] bytes within the
/// body timeout: a client trickling its body is cut off.
async fn read_body(
    req: Request<Body>,
    timeout: Duration,
) -> Result<(axum::http::request::Parts, Bytes), Refusal> {
    let (parts, body) = req.into_parts();
    let bytes = tokio::time::timeout(timeout, axum::body::to_bytes(body, msg::MAX_MESSAGE))
        .await
        .map_err(|_| {
            Refusal::new(
                ErrorCode::Malformed,
                format!("body not received within {timeout:?}"),
            )
            .because("body-timeout")
        })?
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
    let body = match read_body(req, app.body_timeout).await {
        Ok((_, b)) => b,
        Err(r) => {
            log_request(&app, step, None, peer, Err(&r), started);
            return refusal_response(&r);
        }
    };
    let ip = peer
        .map(|p| p.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let app2 = app.clone();
    let result = blocking(move || f(&app2, body, ip)).await;
    respond(&app, step, peer, started, result)
}

/// Logs a protocol step's outcome and turns it into the HTTP response.
fn respond(
    app: &Server,
    step: &'static str,
    peer: Option<SocketAddr>,
    started: Instant,
    result: Result<(Vec<u8>, String), (Option<String>, Refusal)>,
) -> Response<Body> {
    match result {
        Ok((resp, node)) => {
            log_request(app, step, Some(&node), peer, Ok(()), started);
            ok_response(resp)
        }
        Err((node, r)) => {
            log_request(app, step, node.as_deref(), peer, Err(&r), started);
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
    authorized_step("report", app, req, |app, auth, body| {
        app.report(auth, &body)
    })
    .await
}

/// A step only an attested node may take: the node is the one named by
/// the credential in `Authorization: Bearer`, never one the body names, so
/// no node reports or locks for another. Reads the body, runs `f` on the
/// blocking pool and logs the outcome under `step`.
async fn authorized_step(
    step: &'static str,
    app: App,
    req: Request<Body>,
    f: impl FnOnce(&Server, &Authorized, Bytes) -> Result<Vec<u8>, Refusal> + Send + 'static,
) -> Response<Body> {
    let started = Instant::now();
    let peer = peer_of(req.extensions());
    let (parts, body) = match read_body(req, app.body_timeout).await {
        Ok(x) => x,
        Err(r) => {
            log_request(&app, step, None, peer, Err(&r), started);
            return refusal_response(&r);
        }
    };
    let auth_header = bearer(&parts.headers);
    let app2 = app.clone();
    let result = blocking(move || {
        let auth = app2.authorize(auth_header.as_deref())?;
        let node = auth.node.name.clone();
        f(&app2, &auth, body)
            .map(|b| (b, node.clone()))
            .map_err(|r| (Some(node), r))
    })
    .await;
    respond(&app, step, peer, started, result)
}

/// Takes (`lock`) or releases (`unlock`) the node's reboot lock.
async fn lock_step(step: &'static str, app: App, req: Request<Body>) -> Response<Body> {
    authorized_step(step, app, req, move |app, auth, _| {
        app.reboot_lock(&auth.node, step == "lock")
    })
    .await
}

async fn reboot_lock(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    lock_step("lock", app, req).await
}

async fn reboot_unlock(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    lock_step("unlock", app, req).await
}

/// The iPXE script a node's next network boot gets (`chain` it from the
/// node's own script with its name): the new UKI once its rollout handed
/// it one, the old one before and after a failure or revert. Public like
/// every boot artifact: it names content hashes, and what boots is judged
/// by its quote.
async fn boot_node(State(app): State<App>, Path(name): Path<String>) -> Response<Body> {
    let started = Instant::now();
    let app2 = app.clone();
    let found = blocking(move || {
        let mut db = app2.db.get().map_err(|e| (None, Refusal::from(e)))?;
        let node = crate::store::node_by_name(&mut db, &name)
            .map_err(|e| (None, Refusal::from(e)))?
            .ok_or_else(|| (None, Refusal::new(ErrorCode::NotFound, "no such node")))?;
        crate::rollout::engine::boot_script(&mut db, node.id)
            .map_err(|e| (Some(name.clone()), Refusal::from(e)))?
            .ok_or_else(|| {
                (
                    Some(name.clone()),
                    Refusal::new(
                        ErrorCode::NotFound,
                        "this node is in no rollout: boot the script `ember artifact ipxe` published",
                    ),
                )
            })
    })
    .await;
    match found {
        Ok((script, _why)) => {
            let dir = app.state.boot_dir();
            content_addressed(
                &app,
                "boot-node",
                &dir,
                &crate::store::hex(&script),
                "text/plain",
            )
            .await
        }
        Err((node, r)) => {
            log_request(&app, "boot-node", node.as_deref(), None, Err(&r), started);
            refusal_response(&r)
        }
    }
}

/// Static boot artifacts (kernel, initrd) by SHA-256, for firmware network
/// boot: integrity comes from the content address, so plain HTTP is enough.
async fn boot_artifact(State(app): State<App>, Path(sha): Path<String>) -> Response<Body> {
    let dir = app.state.boot_dir();
    content_addressed(&app, "boot", &dir, &sha, "application/octet-stream").await
}

/// Sealed overlay blobs by the SHA-256 of their sealed bytes, on both
/// listeners: ciphertext that only a node holding the signed manifest and
/// the data key wrapped for its session can open. Streamed from the file
/// as the client reads, on the connection's task (no thread per reader).
async fn sealed_blob(State(app): State<App>, Path(sha): Path<String>) -> Response<Body> {
    let dir = app.state.sealed_dir();
    content_addressed(&app, "blob", &dir, &sha, "application/x-ember-sealed").await
}

/// Serves `dir/<sha>` (64 lowercase hex digits, nothing else reaches the
/// file system), streamed.
async fn content_addressed(
    app: &App,
    step: &'static str,
    dir: &std::path::Path,
    sha: &str,
    content_type: &'static str,
) -> Response<Body> {
    let started = Instant::now();
    let valid = sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let file = if valid {
        tokio::fs::File::open(dir.join(sha)).await.ok()
    } else {
        None
    };
    let Some(file) = file else {
        let r = Refusal::new(ErrorCode::NotFound, format!("no {step} {sha}"));
        log_request(app, step, None, None, Err(&r), started);
        return refusal_response(&r);
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    log_request(app, step, None, None, Ok(()), started);
    let metrics = app.clone();
    let counted = step == "blob";
    let body = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).inspect(move |piece| {
        if let (true, Ok(p)) = (counted, piece) {
            metrics.metrics.overlay_bytes(p.len() as u64);
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{sha}\""))
                .unwrap_or(HeaderValue::from_static("\"\"")),
        )
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn fallback(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    let r = Refusal::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    );
    log_request(
        &app,
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
        .route(&format!("{}/{{sha256}}", path::BLOB), get(sealed_blob))
        .route(&format!("{}/{{sha256}}", path::BOOT), get(boot_artifact))
        .route(&format!("{}/{{name}}", path::BOOT_NODE), get(boot_node))
        .route(path::LOCK, post(reboot_lock))
        .route(path::UNLOCK, post(reboot_unlock))
        .route("/healthz", get(healthz))
        .fallback(fallback)
        .with_state(app)
}

/// Only the content-addressed files (boot artifacts, sealed overlay
/// blobs), for the plain-HTTP listener.
pub fn boot_router(app: App) -> Router {
    Router::new()
        .route(&format!("{}/{{sha256}}", path::BOOT), get(boot_artifact))
        .route(&format!("{}/{{name}}", path::BOOT_NODE), get(boot_node))
        .route(&format!("{}/{{sha256}}", path::BLOB), get(sealed_blob))
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// The admin listener: Prometheus metrics and health, never exposed to nodes.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// How long /metrics waits for the open-sessions gauge (a database
/// query) before it answers without it: the operator needs the counters
/// most when the database is the problem.
const METRICS_DB_WAIT: Duration = Duration::from_secs(1);

async fn metrics(State(app): State<App>) -> Response<Body> {
    let app2 = app.clone();
    let query = tokio::task::spawn_blocking(move || app2.open_sessions());
    let sessions = tokio::time::timeout(METRICS_DB_WAIT, query)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(app.metrics.render(sessions)))
        .unwrap_or_default()
}
