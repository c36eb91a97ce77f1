//! The two database backends behind one typed interface: a connection
//! ([`Db`]), a transaction ([`Tx`]) and the [`Sql`] trait both implement.
//!
//! SQL is written once, in the dialect the two agree on, with `$N`
//! placeholders (PostgreSQL's; SQLite reads them as `?N`). Values cross the
//! boundary as [`Val`] (parameters) and `Value` (columns): integers are
//! 64-bit, text is UTF-8, bytes are BLOB/BYTEA. What differs per dialect
//! is named by [`Dialect`] at the few places that need it.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_postgres::types::ToSql as PgToSql;

pub use super::error::{Error, Result};
use super::value::{postgres_row, sqlite_row};
pub use super::value::{Row, Val};

/// Where the state lives, from `--database`.
#[derive(Clone)]
pub enum Database {
    /// `ember.db` in the state folder (the default; nothing to set up).
    Sqlite(PathBuf),
    /// A PostgreSQL server several replicas share.
    Postgres(Box<tokio_postgres::Config>),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password.
        match self {
            Database::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Database::Postgres(c) => write!(
                f,
                "postgres: host {:?} db {:?} user {:?}",
                c.get_hosts(),
                c.get_dbname(),
                c.get_user()
            ),
        }
    }
}

/// How long a PostgreSQL connect (socket and startup handshake) may take
/// before the request is refused as unavailable.
pub const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one statement (or BEGIN/COMMIT) may wait for PostgreSQL's
/// answer. A stopped or black-holed server never answers and never closes
/// the socket, so without this a request (and /metrics) would hang. The
/// store's statements take milliseconds; the slack is for a busy machine
/// and for a session-cap lock held by another replica's transaction.
pub const PG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime PostgreSQL connections run on: one worker thread of its
/// own, made on first use and never dropped (dropping a runtime inside
/// another one panics). The store's callers are blocking threads (tokio's
/// blocking pool, the admin commands' main thread); they wait on it with
/// [`pg_wait`]. Dropping a client or a transaction only sends on a
/// channel, so it is safe anywhere, also on the server's async workers.
fn pg_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ember-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Unavailable(format!("PostgreSQL runtime: {e}")))
}

/// Runs `fut` on the PostgreSQL runtime, waiting at most `limit`: no answer
/// in time is [`Error::Unavailable`], the same as a refused connection.
/// Must not be called on an async worker (tokio panics there, as it should:
/// it would stall the worker).
fn pg_wait<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    // The timer is made inside the runtime (it needs its time driver).
    match pg_runtime()?.block_on(async move { tokio::time::timeout(limit, fut).await }) {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Unavailable(format!(
            "PostgreSQL did not answer {what} within {limit:?}"
        ))),
    }
}

impl Database {
    /// `url` empty or absent: SQLite in the state folder. `postgres://` or
    /// `postgresql://` (a Unix socket as a %2F-encoded host or `?host=/dir`).
    pub fn parse(url: Option<&str>, state_db: &Path) -> Result<Database> {
        match url.map(str::trim) {
            None | Some("") => Ok(Database::Sqlite(state_db.to_path_buf())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let mut c: tokio_postgres::Config = u
                    .parse()
                    .map_err(|e: tokio_postgres::Error| Error::BadUrl(e.to_string()))?;
                if c.get_connect_timeout().is_none() {
                    c.connect_timeout(PG_CONNECT_TIMEOUT);
                }
                if c.get_application_name().is_none() {
                    c.application_name("ember-serve");
                }
                Ok(Database::Postgres(Box::new(c)))
            }
            Some(u) => Err(Error::BadUrl(format!(
                "{:?} is not a postgres:// URL (leave it out for SQLite in the state folder)",
                u.split(':').next().unwrap_or("")
            ))),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Database::Sqlite(_) => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A new connection (no migrations: see [`super::open_database`]).
    pub fn connect(&self) -> Result<Db> {
        match self {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                Ok(Db::Sqlite(conn))
            }
            Database::Postgres(c) => {
                let rt = pg_runtime()?;
                let (client, connection) = pg_wait(
                    "a connect",
                    PG_CONNECT_TIMEOUT,
                    c.connect(tokio_postgres::NoTls),
                )
                .map_err(|e| match e {
                    Error::Postgres(e) => Error::Unavailable(e.to_string()),
                    e => e,
                })?;
                // The connection's I/O runs as a task; it ends when the
                // client is dropped or PostgreSQL closes the socket, and is
                // aborted with the PgConn so a connection stuck on a
                // silent server does not outlive it.
                let io = rt.spawn(async move {
                    let _ = connection.await;
                });
                Ok(Db::Postgres(Box::new(PgConn {
                    client,
                    statements: Statements::new(),
                    broken: false,
                    io,
                })))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// `$N` placeholders as SQLite's `?N` (same numbering, so a parameter
/// used twice or out of order binds the same way on both).
fn sqlite_sql(sql: &str) -> Cow<'_, str> {
    if sql.contains('$') {
        Cow::Owned(sql.replace('$', "?"))
    } else {
        Cow::Borrowed(sql)
    }
}

fn pg_params<'a>(params: &'a [Val<'a>]) -> Vec<&'a (dyn PgToSql + Sync)> {
    params.iter().map(|v| v as &(dyn PgToSql + Sync)).collect()
}

/// What a connection and a transaction both run.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64>;
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>>;
    /// Runs statements without parameters (schema migrations).
    fn batch(&mut self, sql: &str) -> Result<()>;

    /// The first row, if any.
    fn row(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Option<Row>> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }
    /// Exactly one row (a COUNT, an INSERT … RETURNING).
    fn one(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Row> {
        self.row(sql, params)?
            .ok_or_else(|| Error::Shape(format!("no row from {sql}")))
    }
}

fn sqlite_exec(c: &rusqlite::Connection, sql: &str, params: &[Val<'_>]) -> Result<u64> {
    let mut stmt = c.prepare_cached(&sqlite_sql(sql))?;
    Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
}

fn sqlite_rows(c: &rusqlite::Connection, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>> {
    let mut stmt = c.prepare_cached(&sqlite_sql(sql))?;
    let names: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        sqlite_row(r, &names)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A connection's prepared statements by SQL text (the store's SQL is a
/// fixed set of constants, so this stays small). Without it every
/// statement costs PostgreSQL a parse and a round trip more.
type Statements = std::collections::HashMap<String, tokio_postgres::Statement>;

/// One PostgreSQL connection and the statements prepared on it.
pub struct PgConn {
    client: tokio_postgres::Client,
    statements: Statements,
    /// A statement timed out: an answer may still be on its way, so the
    /// connection's state is unknown and the pool discards it.
    broken: bool,
    io: tokio::task::JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.io.abort();
    }
}

/// Marks the connection broken when PostgreSQL did not answer.
fn pg_mark<T>(broken: &mut bool, r: Result<T>) -> Result<T> {
    if matches!(r, Err(Error::Unavailable(_))) {
        *broken = true;
    }
    r
}

fn pg_exec(
    c: &impl tokio_postgres::GenericClient,
    statements: &mut Statements,
    broken: &mut bool,
    sql: &str,
    params: &[Val<'_>],
) -> Result<u64> {
    let stmt = pg_prepared(c, statements, broken, sql)?;
    let params = pg_params(params);
    pg_mark(
        broken,
        pg_wait(
            "a statement",
            PG_STATEMENT_TIMEOUT,
            c.execute(&stmt, &params),
        ),
    )
}

fn pg_rows(
    c: &impl tokio_postgres::GenericClient,
    statements: &mut Statements,
    broken: &mut bool,
    sql: &str,
    params: &[Val<'_>],
) -> Result<Vec<Row>> {
    let stmt = pg_prepared(c, statements, broken, sql)?;
    let names: Arc<[String]> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let params = pg_params(params);
    pg_mark(
        broken,
        pg_wait("a query", PG_STATEMENT_TIMEOUT, c.query(&stmt, &params)),
    )?
    .iter()
    .map(|r| postgres_row(r, &names))
    .collect()
}

fn pg_batch(c: &impl tokio_postgres::GenericClient, broken: &mut bool, sql: &str) -> Result<()> {
    pg_mark(
        broken,
        pg_wait("a batch", PG_STATEMENT_TIMEOUT, c.batch_execute(sql)),
    )
}

fn pg_prepared(
    c: &impl tokio_postgres::GenericClient,
    statements: &mut Statements,
    broken: &mut bool,
    sql: &str,
) -> Result<tokio_postgres::Statement> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = pg_mark(
        broken,
        pg_wait("a prepare", PG_STATEMENT_TIMEOUT, c.prepare(sql)),
    )?;
    statements.insert(sql.to_string(), s.clone());
    Ok(s)
}

/// One connection.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

impl Db {
    pub fn transaction(&mut self) -> Result<Tx<'_>> {
        Ok(match self {
            Db::Sqlite(c) => Tx::Sqlite(c.transaction()?),
            Db::Postgres(c) => {
                let PgConn {
                    client,
                    statements,
                    broken,
                    ..
                } = &mut **c;
                let tx = pg_mark(
                    broken,
                    pg_wait("BEGIN", PG_STATEMENT_TIMEOUT, client.transaction()),
                )?;
                Tx::Postgres(tx, statements, broken)
            }
        })
    }

    /// False once the connection to PostgreSQL is gone (the pool drops it).
    pub fn is_usable(&self) -> bool {
        match self {
            Db::Sqlite(_) => true,
            Db::Postgres(c) => !c.broken && !c.client.is_closed(),
        }
    }
}

impl Sql for Db {
    fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
        match self {
            Db::Sqlite(c) => sqlite_exec(c, sql, params),
            Db::Postgres(c) => {
                let c = &mut **c;
                pg_exec(&c.client, &mut c.statements, &mut c.broken, sql, params)
            }
        }
    }
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(c) => sqlite_rows(c, sql, params),
            Db::Postgres(c) => {
                let c = &mut **c;
                pg_rows(&c.client, &mut c.statements, &mut c.broken, sql, params)
            }
        }
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(c) => {
                let c = &mut **c;
                pg_batch(&c.client, &mut c.broken, sql)
            }
        }
    }
}

/// One transaction: rolls back when dropped without [`Tx::commit`].
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(
        tokio_postgres::Transaction<'a>,
        &'a mut Statements,
        &'a mut bool,
    ),
}

impl Tx<'_> {
    pub fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => Ok(t.commit()?),
            Tx::Postgres(t, _, broken) => {
                pg_mark(broken, pg_wait("COMMIT", PG_STATEMENT_TIMEOUT, t.commit()))
            }
        }
    }

    /// Serialises the session-cap check with the insert it guards, over
    /// every replica: SQLite's single writer already does; PostgreSQL takes
    /// a transaction-scoped advisory lock (released at commit/rollback).
    pub fn lock_sessions(&mut self) -> Result<()> {
        match self {
            Tx::Sqlite(_) => Ok(()),
            Tx::Postgres(..) => {
                self.exec(
                    "SELECT pg_advisory_xact_lock($1)",
                    &[Val::Int(SESSIONS_LOCK)],
                )?;
                Ok(())
            }
        }
    }
}

/// The advisory lock key that guards session caps ("EMBR" "SESS").
const SESSIONS_LOCK: i64 = 0x454d_4252_5345_5353;

impl Sql for Tx<'_> {
    fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(..) => Dialect::Postgres,
        }
    }
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
        match self {
            Tx::Sqlite(t) => sqlite_exec(t, sql, params),
            Tx::Postgres(t, statements, broken) => pg_exec(t, statements, broken, sql, params),
        }
    }
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(t) => sqlite_rows(t, sql, params),
            Tx::Postgres(t, statements, broken) => pg_rows(t, statements, broken, sql, params),
        }
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Tx::Sqlite(t) => Ok(t.execute_batch(sql)?),
            Tx::Postgres(t, _, broken) => pg_batch(t, broken, sql),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_their_numbers_on_sqlite() {
        assert_eq!(
            sqlite_sql("UPDATE t SET a = $2 WHERE b = $1"),
            "UPDATE t SET a = ?2 WHERE b = ?1"
        );
        let mut db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)")
            .unwrap();
        db.exec(
            "INSERT INTO t VALUES ($2, $1, $3)",
            crate::params!["x", 7i64, None::<&[u8]>],
        )
        .unwrap();
        let r = db.one("SELECT a, b, c FROM t", &[]).unwrap();
        assert_eq!(r.get::<i64>("a").unwrap(), 7);
        assert_eq!(r.get::<String>("b").unwrap(), "x");
        assert_eq!(r.get::<Option<Vec<u8>>>("c").unwrap(), None);
        assert!(r.get::<String>("a").is_err(), "an integer is not text");
    }

    #[test]
    fn database_urls() {
        let db = Path::new("/s/ember.db");
        assert!(matches!(Database::parse(None, db), Ok(Database::Sqlite(_))));
        assert!(matches!(
            Database::parse(Some(" "), db),
            Ok(Database::Sqlite(_))
        ));
        let Ok(Database::Postgres(c)) =
            Database::parse(Some("postgres://ember@%2Ftmp%2Fpg/ember"), db)
        else {
            panic!("a Unix-socket URL")
        };
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Unix("/tmp/pg".into())]
        );
        assert_eq!(c.get_dbname(), Some("ember"));
        let Ok(Database::Postgres(c)) =
            Database::parse(Some("postgresql:///ember?host=/run/pg&user=e"), db)
        else {
            panic!("host= form")
        };
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Unix("/run/pg".into())]
        );
        assert!(matches!(
            Database::parse(Some("mysql://x:secret@h/db"), db),
            Err(Error::BadUrl(m)) if !m.contains("secret")
        ));
    }
}
