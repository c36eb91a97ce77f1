//! The two database backends behind one typed interface: a connection
//! ([`Db`]), a transaction ([`Tx`]) and the [`Sql`] trait both implement.
//!
//! SQL is written once, in the dialect the two agree on, with `$N`
//! placeholders (PostgreSQL's; SQLite reads them as `?N`). Values cross the
//! boundary as [`Val`] (parameters) and [`Value`] (columns): integers are
//! 64-bit, text is UTF-8, bytes are BLOB/BYTEA. What differs per dialect
//! is named by [`Dialect`] at the few places that need it.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::types::ToSql as PgToSql;

pub use super::error::{Error, Result};
use super::value::{postgres_row, sqlite_row};
pub use super::value::{Row, Val};

/// Where the state lives, from `--database`.
#[derive(Clone)]
pub enum Database {
    /// `ember.db` in the state folder (the default; nothing to set up).
    Sqlite(PathBuf),
    /// A PostgreSQL server several replicas share.
    Postgres(Box<postgres::Config>),
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

/// How long a PostgreSQL connect may take before the request is refused.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// `url` empty or absent: SQLite in the state folder. `postgres://` or
    /// `postgresql://` (a Unix socket as a %2F-encoded host or `?host=/dir`).
    pub fn parse(url: Option<&str>, state_db: &Path) -> Result<Database> {
        match url.map(str::trim) {
            None | Some("") => Ok(Database::Sqlite(state_db.to_path_buf())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let mut c: postgres::Config = u
                    .parse()
                    .map_err(|e: postgres::Error| Error::BadUrl(e.to_string()))?;
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
            Database::Postgres(c) => Ok(Db::Postgres(Box::new(PgConn {
                client: c
                    .connect(postgres::NoTls)
                    .map_err(|e| Error::Unavailable(e.to_string()))?,
                statements: Statements::new(),
            }))),
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
type Statements = std::collections::HashMap<String, postgres::Statement>;

/// One PostgreSQL connection and the statements prepared on it.
pub struct PgConn {
    client: postgres::Client,
    statements: Statements,
}

fn pg_exec(
    c: &mut impl postgres::GenericClient,
    statements: &mut Statements,
    sql: &str,
    params: &[Val<'_>],
) -> Result<u64> {
    let stmt = pg_prepared(c, statements, sql)?;
    Ok(c.execute(&stmt, &pg_params(params))?)
}

fn pg_rows(
    c: &mut impl postgres::GenericClient,
    statements: &mut Statements,
    sql: &str,
    params: &[Val<'_>],
) -> Result<Vec<Row>> {
    let stmt = pg_prepared(c, statements, sql)?;
    let names: Arc<[String]> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    c.query(&stmt, &pg_params(params))?
        .iter()
        .map(|r| postgres_row(r, &names))
        .collect()
}

fn pg_prepared(
    c: &mut impl postgres::GenericClient,
    statements: &mut Statements,
    sql: &str,
) -> Result<postgres::Statement> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(sql)?;
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
                let PgConn { client, statements } = &mut **c;
                Tx::Postgres(client.transaction()?, statements)
            }
        })
    }

    /// False once the connection to PostgreSQL is gone (the pool drops it).
    pub fn is_usable(&self) -> bool {
        match self {
            Db::Sqlite(_) => true,
            Db::Postgres(c) => !c.client.is_closed(),
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
            Db::Postgres(c) => pg_exec(&mut c.client, &mut c.statements, sql, params),
        }
    }
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(c) => sqlite_rows(c, sql, params),
            Db::Postgres(c) => pg_rows(&mut c.client, &mut c.statements, sql, params),
        }
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(c) => Ok(c.client.batch_execute(sql)?),
        }
    }
}

/// One transaction: rolls back when dropped without [`Tx::commit`].
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>, &'a mut Statements),
}

impl Tx<'_> {
    pub fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => Ok(t.commit()?),
            Tx::Postgres(t, _) => Ok(t.commit()?),
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
            Tx::Postgres(t, statements) => pg_exec(t, statements, sql, params),
        }
    }
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(t) => sqlite_rows(t, sql, params),
            Tx::Postgres(t, statements) => pg_rows(t, statements, sql, params),
        }
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Tx::Sqlite(t) => Ok(t.execute_batch(sql)?),
            Tx::Postgres(t, _) => Ok(t.batch_execute(sql)?),
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
            &[postgres::config::Host::Unix("/tmp/pg".into())]
        );
        assert_eq!(c.get_dbname(), Some("ember"));
        let Ok(Database::Postgres(c)) =
            Database::parse(Some("postgresql:///ember?host=/run/pg&user=e"), db)
        else {
            panic!("host= form")
        };
        assert_eq!(
            c.get_hosts(),
            &[postgres::config::Host::Unix("/run/pg".into())]
        );
        assert!(matches!(
            Database::parse(Some("mysql://x:secret@h/db"), db),
            Err(Error::BadUrl(m)) if !m.contains("secret")
        ));
    }
}
