//! The operators' web console (`ember serve --console-listen ADDR`, off
//! by default): the fleet, each node's boots with their timelines and
//! refusals, boot time per phase, and what each group is allowed and
//! served. HTTPS with the server's certificate; operators authenticate with
//! a client certificate ([`auth`]); every page and action is refused
//! without one. Read-only except "allow rollback", which runs the same code
//! as `ember nodes allow-rollback` ([`crate::rollback::allow`]).
//!
//! - `auth.rs`: operator certificates, the listener's TLS, CSRF tokens;
//! - `pages.rs`: the HTML (maud: every interpolation is escaped; a node's
//!   text also goes through [`ember_proto::untrusted::Untrusted`]);
//! - `assets/`: the stylesheet and the one script (live updates by polling
//!   `/live`, which reads the newest boot report id from the database, so
//!   every replica sees every boot), embedded in the binary.
//!
//! Every response carries a strict Content-Security-Policy: no inline
//! script or style, nothing from another origin.

pub mod auth;
pub mod pages;
mod rollouts;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use axum::Router;
use tracing::info;

use crate::attest::Server;
use crate::conn::ClientCert;
use crate::store::{self, images, nodes, operators, reports, Node};

/// What every console handler shares.
pub struct Console {
    pub server: Arc<Server>,
    pub csrf_key: [u8; 32],
}

type App = Arc<Console>;

/// The operator a request was authenticated as.
#[derive(Clone)]
pub struct Operator {
    pub name: String,
    pub cert: [u8; 32],
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const STYLE: &str = include_str!("assets/console.css");
pub const SCRIPT: &str = include_str!("assets/live.js");

/// Fleet rows per page.
pub const PAGE_SIZE: u32 = 50;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(|| async { redirect("/fleet") }))
        .route("/fleet", get(fleet))
        .route("/node/{name}", get(node))
        .route("/node/{name}/boot/{id}", get(boot_svg))
        .route("/node/{name}/allow-rollback", post(allow_rollback))
        .route("/boot-time", get(boot_time))
        .route("/policies", get(policies))
        .route("/rollouts", get(rollouts_page))
        .route("/packages", get(packages_page))
        .route("/live", get(live))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", STYLE) }),
        )
        .route(
            "/assets/live.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .fallback(|| async { page_error(StatusCode::NOT_FOUND, "No such page.") })
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(middleware::map_response(secure_headers))
        .with_state(app)
}

/// Refuses every request (assets too) that does not come with an
/// unrevoked operator certificate, and puts the [`Operator`] into it.
async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response<Body> {
    let Some(ClientCert(cert)) = req.extensions().get::<ClientCert>().copied() else {
        return page_error(
            StatusCode::UNAUTHORIZED,
            "This console needs an operator's client certificate: `ember admin operator issue NAME --out DIR`, then import it into the browser.",
        );
    };
    let found = app
        .server
        .db
        .run(move |db| operators::active_by_cert(db, &cert))
        .await;
    match found {
        Ok(Some(op)) => {
            req.extensions_mut().insert(Operator {
                name: op.name,
                cert,
            });
            next.run(req).await
        }
        Ok(None) => page_error(
            StatusCode::FORBIDDEN,
            "This certificate is not an operator's (revoked, or never issued by this server).",
        ),
        Err(e) => db_error(e),
    }
}

async fn secure_headers(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn asset(kind: &'static str, body: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CACHE_CONTROL, "private, max-age=300")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn redirect(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .unwrap_or_default()
}

fn html(markup: maud::Markup) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(markup.into_string()))
        .unwrap_or_default()
}

fn page_error(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = html(pages::error(status.as_u16(), text));
    *r.status_mut() = status;
    r
}

fn db_error(e: store::Error) -> Response<Body> {
    tracing::warn!(step = %"console", outcome = %"error", detail = %e);
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer; the server's log says why.",
    )
}

/// The query string's `key=value` pairs, percent-decoded.
fn query_of(req: &Request) -> HashMap<String, String> {
    form_urlencoded(req.uri().query().unwrap_or("").as_bytes())
}

async fn fleet(State(app): State<App>, req: Request) -> Response<Body> {
    let op = operator(&req);
    let q = query_of(&req);
    let query = pages::fleet_query(&q, PAGE_SIZE);
    let started = std::time::Instant::now();
    let found = app
        .server
        .db
        .run(move |db| {
            Ok((
                nodes::fleet(db, &query)?,
                nodes::groups(db)?,
                reports::latest_id(db)?,
                images::list(db)?,
                query,
            ))
        })
        .await;
    match found {
        Ok((page, groups, latest, ukis, query)) => {
            let body = pages::fleet(&op, &page, &groups, &query, &ukis, latest, store::now_ms());
            info!(step = %"console", page = %"fleet", operator = %op.name, rows = page.rows.len(), ms = started.elapsed().as_secs_f64() * 1000.0);
            html(body)
        }
        Err(e) => db_error(e),
    }
}

/// The longest package name or version the package query takes.
const MAX_PACKAGE_QUERY: usize = 256;

async fn packages_page(State(app): State<App>, req: Request) -> Response<Body> {
    let op = operator(&req);
    let q = query_of(&req);
    let name = q
        .get("name")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let version = q
        .get("version")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if name.len() > MAX_PACKAGE_QUERY || version.len() > MAX_PACKAGE_QUERY {
        return page_error(StatusCode::BAD_REQUEST, "Package name or version too long.");
    }
    let (n, v) = (name.clone(), version.clone());
    let found = app
        .server
        .db
        .run(move |db| {
            let found = match n.is_empty() {
                true => None,
                false => Some(store::packages::running(
                    db,
                    &n,
                    (!v.is_empty()).then_some(v.as_str()),
                )?),
            };
            Ok((found, images::list(db)?))
        })
        .await;
    match found {
        Ok((found, ukis)) => html(pages::packages_page(
            &op,
            &name,
            &version,
            found.as_ref(),
            &ukis,
            store::now_ms(),
        )),
        Err(e) => db_error(e),
    }
}

fn operator(req: &Request) -> Operator {
    // authenticate() put it there; no handler runs without it.
    req.extensions()
        .get::<Operator>()
        .cloned()
        .unwrap_or(Operator {
            name: String::new(),
            cert: [0; 32],
        })
}

async fn node(State(app): State<App>, Path(name): Path<String>, req: Request) -> Response<Body> {
    let op = operator(&req);
    let token = auth::csrf_token(&app.csrf_key, &op.cert);
    let found = app
        .server
        .db
        .run(move |db| pages::NodeData::load(db, &name))
        .await;
    match found {
        Ok(Some(data)) => html(pages::node(&op, &data, &token, store::now_ms())),
        Ok(None) => page_error(StatusCode::NOT_FOUND, "No node by that name."),
        Err(e) => db_error(e),
    }
}

async fn boot_svg(
    State(app): State<App>,
    Path((name, id)): Path<(String, String)>,
) -> Response<Body> {
    let Some(id) = id.strip_suffix(".svg").and_then(|i| i.parse::<i64>().ok()) else {
        return page_error(StatusCode::NOT_FOUND, "No such boot.");
    };
    let found = app
        .server
        .db
        .run(move |db| {
            let Some(node) = store::node_by_name(db, &name)? else {
                return Ok(None);
            };
            let Some(report) = reports::of_node(db, node.id, u32::MAX)?
                .into_iter()
                .find(|r| r.id == id)
            else {
                return Ok(None);
            };
            Ok(reports::timeline(db, &report)?.map(|t| (node, report, t)))
        })
        .await;
    match found {
        Ok(Some((node, report, t))) => {
            let drawn = ember_timeline::Timeline::from_report(&t, &report.reason);
            let title = format!("{}: boot report {}", node.name, report.id);
            Response::builder()
                .header(header::CONTENT_TYPE, "image/svg+xml")
                .body(Body::from(ember_timeline::svg::render(&drawn, &title)))
                .unwrap_or_default()
        }
        Ok(None) => page_error(StatusCode::NOT_FOUND, "No timeline for that boot."),
        Err(e) => db_error(e),
    }
}

/// The "allow rollback" button: the same transaction as `ember nodes
/// allow-rollback --node NAME [--to SHA]`, with the operator's certificate
/// name as who. A POST with the operator's CSRF token from a same-origin
/// page only.
async fn allow_rollback(
    State(app): State<App>,
    Path(name): Path<String>,
    req: Request,
) -> Response<Body> {
    let op = operator(&req);
    if req.method() != Method::POST || cross_site(&req) {
        return page_error(StatusCode::FORBIDDEN, "Cross-site request refused.");
    }
    let body = match axum::body::to_bytes(req.into_body(), 4096).await {
        Ok(b) => b,
        Err(_) => return page_error(StatusCode::BAD_REQUEST, "Form too large."),
    };
    let form: HashMap<String, String> = form_urlencoded(&body);
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !auth::csrf_ok(&app.csrf_key, &op.cert, token) {
        return page_error(
            StatusCode::FORBIDDEN,
            "The form's token is not yours: reload the page and try again.",
        );
    }
    let to: Option<i64> = match form.get("to").map(String::as_str) {
        None | Some("") | Some("none") => None,
        Some(e) => match e.parse() {
            Ok(e) => Some(e),
            Err(_) => return page_error(StatusCode::BAD_REQUEST, "Not an image epoch."),
        },
    };
    let who = format!("console operator {}", op.name);
    let node_name = name.clone();
    let done = app
        .server
        .db
        .transaction(move |tx| {
            let Some(node): Option<Node> = store::node_by_name(tx, &node_name)? else {
                return Ok(None);
            };
            let image = match to {
                Some(epoch) => match images::by_epoch(tx, epoch)? {
                    Some(i) => Some(i),
                    None => return Ok(None),
                },
                None => None,
            };
            Ok(Some(crate::rollback::allow(
                tx,
                &[node],
                image.as_ref(),
                &who,
            )?))
        })
        .await;
    match done {
        Ok(Some(lines)) => {
            for l in &lines {
                info!(step = %"console", action = %"allow-rollback", operator = %op.name, detail = l.as_str());
            }
            redirect(&format!("/node/{}", pages::path_segment(&name)))
        }
        Ok(None) => page_error(StatusCode::NOT_FOUND, "No such node or image epoch."),
        Err(e) => db_error(e),
    }
}

/// Whether the browser says the request came from another site.
fn cross_site(req: &Request) -> bool {
    match req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        Some(site) => !matches!(site, "same-origin" | "none"),
        None => false,
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form_urlencoded(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((pages::percent_decode(k)?, pages::percent_decode(v)?))
        })
        .collect()
}

async fn boot_time(State(app): State<App>, req: Request) -> Response<Body> {
    let op = operator(&req);
    let q = query_of(&req);
    let group = q.get("group").filter(|g| !g.is_empty()).cloned();
    let found = app
        .server
        .db
        .run(move |db| {
            let durations =
                crate::store::phases::durations(db, group.as_deref(), pages::BOOT_TIME_BOOTS)?;
            Ok((
                durations,
                nodes::groups(db)?,
                group,
                reports::latest_id(db)?,
            ))
        })
        .await;
    match found {
        Ok((d, groups, group, latest)) => {
            html(pages::boot_time(&op, &d, &groups, group.as_deref(), latest))
        }
        Err(e) => db_error(e),
    }
}

async fn policies(State(app): State<App>, req: Request) -> Response<Body> {
    let op = operator(&req);
    let found = app.server.db.run(pages::PolicyData::load).await;
    match found {
        Ok(data) => html(pages::policies(&op, &data)),
        Err(e) => db_error(e),
    }
}

async fn rollouts_page(State(app): State<App>, req: Request) -> Response<Body> {
    let op = operator(&req);
    match app.server.db.run(rollouts::load).await {
        Ok(data) => html(rollouts::page(&op, &data)),
        Err(e) => db_error(e),
    }
}

/// The newest boot report id, for the pages' live updates: one indexed
/// read of the shared database, so any replica answers for all.
async fn live(State(app): State<App>) -> Response<Body> {
    match app.server.db.run(|db| reports::latest_id(db)).await {
        Ok(id) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(id.to_string()))
            .unwrap_or_default(),
        Err(e) => db_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nodes::{FleetOutcome, FleetQuery, FleetSort};
    use crate::store::tests::scratch;

    /// The fleet page's server time at 10,000 nodes (two boot reports
    /// each): the query and the HTML, as the handler does them. Run with
    /// `--nocapture` to see the figures.
    #[test]
    fn the_fleet_page_of_10000_nodes_takes_milliseconds() {
        let (_d, s) = scratch();
        let mut db = store::open(&s, None).unwrap();
        let started = std::time::Instant::now();
        let mut tx = db.transaction().unwrap();
        for i in 0..10_000u32 {
            let mut ek = [0u8; 32];
            ek[..4].copy_from_slice(&i.to_be_bytes());
            let group = format!("rack-{}", i % 40);
            let n =
                store::insert_node(&mut tx, &ek, None, &format!("node-{i:05}"), &group, "bench")
                    .unwrap();
            let id = reports::add(&mut tx, n.id, reports::Outcome::Attested, Some(1), "").unwrap();
            reports::set_boot_image(&mut tx, id, &[7; 32]).unwrap();
            let last = if i % 10 == 0 {
                reports::Outcome::Failed
            } else {
                reports::Outcome::Joined
            };
            reports::add(&mut tx, n.id, last, Some(1), "").unwrap();
        }
        tx.commit().unwrap();
        eprintln!(
            "inserted 10,000 nodes and 20,000 reports in {:?}",
            started.elapsed()
        );
        let op = Operator {
            name: "bench".into(),
            cert: [0; 32],
        };
        let queries = [
            (
                "first page by name",
                FleetQuery {
                    limit: PAGE_SIZE,
                    ..Default::default()
                },
            ),
            (
                "last page by name",
                FleetQuery {
                    offset: 9_950,
                    limit: PAGE_SIZE,
                    ..Default::default()
                },
            ),
            (
                "by last boot, newest first",
                FleetQuery {
                    sort: FleetSort::LastBoot,
                    descending: true,
                    limit: PAGE_SIZE,
                    ..Default::default()
                },
            ),
            (
                "group rack-10, failed",
                FleetQuery {
                    group: Some("rack-10".into()),
                    outcome: Some(FleetOutcome::Failed),
                    limit: PAGE_SIZE,
                    ..Default::default()
                },
            ),
        ];
        for (what, q) in queries {
            let mut best = std::time::Duration::MAX;
            let mut rows = 0;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                let page = nodes::fleet(&mut db, &q).unwrap();
                let groups = nodes::groups(&mut db).unwrap();
                let latest = reports::latest_id(&mut db).unwrap();
                let ukis = images::list(&mut db).unwrap();
                let html = pages::fleet(&op, &page, &groups, &q, &ukis, latest, store::now_ms())
                    .into_string();
                best = best.min(t.elapsed());
                rows = page.rows.len();
                assert!(html.contains("node-"));
            }
            eprintln!(
                "fleet page at 10,000 nodes, {what}: {rows} rows in {:.1} ms (best of 5)",
                best.as_secs_f64() * 1000.0
            );
            assert!(best < std::time::Duration::from_secs(1), "{what}: {best:?}");
        }
    }
}
