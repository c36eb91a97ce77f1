//! The store's one error type, and [`ValueError`], why a stored value does
//! not convert to the field its row struct declares.

use std::fmt;

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
    Postgres(tokio_postgres::Error),
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
    /// A query's result has a shape this code does not expect (no row,
    /// no such column).
    Shape(String),
    /// A stored value does not fit its row struct's field.
    Column {
        column: String,
        problem: ValueError,
    },
    /// The blocking job running a store call was lost (it panicked).
    Task(String),
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
            Error::Column { column, problem } => write!(f, "stored {column} {problem}"),
            Error::Task(s) => write!(f, "store job: {s}"),
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

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
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

/// Why a stored value does not convert to the type a row struct declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// A NULL, integer, text or bytes where another kind was expected.
    Type {
        expected: &'static str,
        found: &'static str,
    },
    /// Bytes of another length than a fixed-size field's.
    Length { expected: usize, found: usize },
    /// An integer outside the field type's range.
    Range { value: i64, ty: &'static str },
    /// Text that names none of a field's known values.
    Unknown { value: String, ty: &'static str },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Type { expected, found } => write!(f, "holds {found}, not {expected}"),
            ValueError::Length { expected, found } => {
                write!(f, "holds {found} bytes, not {expected}")
            }
            ValueError::Range { value, ty } => write!(f, "holds {value}, outside {ty}"),
            ValueError::Unknown { value, ty } => write!(f, "holds {value:?}, no {ty}"),
        }
    }
}
