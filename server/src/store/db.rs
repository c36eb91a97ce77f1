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
use std::time::Duration;

use postgres::types::{IsNull, ToSql as PgToSql, Type};

/// The store's one error type; each variant one cause.
#[derive(Debug)]
pub enum Error {
    /// `--database` is neither empty (SQLite in the state folder) nor a
    /// `postgres://` URL, or the URL does not parse.
    BadUrl(String),
    /// The state folder could not be created or locked down.
    StateFolder(String),
    Sqlite(rusqlite::Error),
    /// PostgreSQL refused or failed a statement.
    Postgres(postgres::Error),
    /// PostgreSQL does not answer (down, unreachable, connection lost):
    /// the server refuses with `internal`/`database-unavailable` and
    /// reconnects on the next request.
    Unavailable(String),
    /// The database was migrated by a newer ember.
    SchemaTooNew {
        found: i64,
        known: usize,
    },
    /// A migration failed (the transaction rolled back).
    Migration {
        number: usize,
        source: Box<Error>,
    },
    /// A column held a type or shape this code does not expect.
    Shape(String),
    /// An admin command's precondition (a duplicate name or EK).
    Conflict(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadUrl(s) => write!(f, "--database: {s}"),
            Error::StateFolder(e) => write!(f, "state folder: {e}"),
            Error::Sqlite(e) => write!(f, "sqlite: {e}"),
            Error::Postgres(e) => match e.as_db_error() {
                Some(d) => write!(f, "postgres: {} ({})", d.message(), d.code().code()),
                None => write!(f, "postgres: {e}"),
            },
            Error::Unavailable(s) => write!(f, "database unavailable: {s}"),
            Error::SchemaTooNew { found, known } => write!(
                f,
                "state database has schema version {found}, newer than this ember ({known})"
            ),
            Error::Migration { number, source } => {
                write!(f, "schema migration {number}: {source}")
            }
            Error::Shape(s) => write!(f, "unexpected stored value: {s}"),
            Error::Conflict(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Sqlite(e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        // A statement error carries the server's answer, unless it says
        // the server is going away (SQLSTATE class 57: shutdown, crash
        // recovery) or the connection broke (class 08); anything else
        // (closed socket, I/O, timeout) means PostgreSQL is not there.
        match e.as_db_error().map(|d| d.code().code()) {
            Some(code) if !code.starts_with("57") && !code.starts_with("08") => Error::Postgres(e),
            Some(_) => Error::Unavailable(Error::Postgres(e).to_string()),
            None => Error::Unavailable(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// A parameter.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl From<i64> for Val<'_> {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl<'a> From<&'a str> for Val<'a> {
    fn from(v: &'a str) -> Self {
        Val::Text(v)
    }
}
impl<'a> From<&'a String> for Val<'a> {
    fn from(v: &'a String) -> Self {
        Val::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Val<'a> {
    fn from(v: &'a [u8]) -> Self {
        Val::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Val<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Val::Bytes(v)
    }
}
impl<'a, T: Into<Val<'a>>> From<Option<T>> for Val<'a> {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Val::Null)
    }
}

/// `params![a, b]`: a slice of [`Val`].
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::Val::from($v)),*][..] };
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput::Borrowed, ValueRef};
        Ok(Borrowed(match *self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(i),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

impl PgToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Val::Int(i) => i.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Bytes(b) => b.to_sql(ty, out),
        }
    }
    fn accepts(ty: &Type) -> bool {
        [
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::VARCHAR,
            Type::BYTEA,
        ]
        .contains(ty)
    }
    postgres::types::to_sql_checked!();
}

/// A column value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One result row.
#[derive(Debug)]
pub struct Row(Vec<Value>);

impl Row {
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| Error::Shape(format!("no column {i}")))?;
        T::from_value(v).ok_or_else(|| {
            Error::Shape(format!(
                "column {i} holds {v:?}, not {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Int(f as i64),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        });
    }
    Ok(Row(out))
}

fn postgres_row(r: &postgres::Row) -> Result<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME].contains(ty) {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(Error::Shape(format!(
                "column {} has PostgreSQL type {ty}",
                col.name()
            )));
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
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
    let n = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        sqlite_row(r, n)
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
    c.query(&stmt, &pg_params(params))?
        .iter()
        .map(postgres_row)
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
        assert_eq!(r.get::<i64>(0).unwrap(), 7);
        assert_eq!(r.get::<String>(1).unwrap(), "x");
        assert_eq!(r.get::<Option<Vec<u8>>>(2).unwrap(), None);
        assert!(r.get::<String>(0).is_err(), "an integer is not text");
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
