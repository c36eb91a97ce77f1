//! The server's connections: one for SQLite (a single writer; the same
//! serialisation the old global mutex gave), a few for PostgreSQL (each
//! protocol step holds one for a statement or a transaction). A connection
//! PostgreSQL dropped is discarded and the next request connects again, so
//! a replica recovers by itself when the database is back. [`Store`] is
//! the async face over the pool.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::db::{Database, Db, Error, Result, Tx};

pub struct Pool {
    database: Database,
    idle: Mutex<Slots>,
    freed: Condvar,
}

struct Slots {
    idle: Vec<Db>,
    /// Connections that may still be handed out (idle or to be opened).
    free: usize,
}

/// PostgreSQL connections one replica holds at most.
pub const POSTGRES_CONNECTIONS: usize = 8;

/// How long a request waits for a free PostgreSQL connection before it is
/// refused as unavailable: with PostgreSQL silent, every connection is
/// held by a statement waiting out its own timeout, and requests must not
/// queue behind them without bound.
pub const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The same for SQLite's one connection: SQLite cannot be black-holed, but
/// a stuck disk can stall it; the wait is longer because every request
/// shares the one writer (a storm of 200 clients queues here).
pub const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

impl Pool {
    /// A pool holding `first`, an open, migrated connection.
    pub fn new(database: Database, first: Db) -> Pool {
        let max = match database {
            Database::Sqlite(_) => 1,
            Database::Postgres(_) => POSTGRES_CONNECTIONS,
        };
        Pool {
            database,
            idle: Mutex::new(Slots {
                idle: vec![first],
                free: max,
            }),
            freed: Condvar::new(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // Slots is a list and a counter, consistent after every statement:
        // a poisoned lock is still usable.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long [`Pool::get`] waits for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        match self.database {
            Database::Sqlite(_) => SQLITE_ACQUIRE_TIMEOUT,
            Database::Postgres(_) => POSTGRES_ACQUIRE_TIMEOUT,
        }
    }

    /// A connection, waiting while all are in use (blocking threads only),
    /// at most [`Pool::acquire_timeout`]: then [`Error::Unavailable`].
    pub fn get(&self) -> Result<Pooled<'_>> {
        let limit = self.acquire_timeout();
        let deadline = Instant::now() + limit;
        let reused = {
            let mut s = self.slots();
            while s.free == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Unavailable(format!(
                        "no database connection free within {limit:?}"
                    )));
                }
                s = self
                    .freed
                    .wait_timeout(s, left)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            s.free -= 1;
            // A connection PostgreSQL closed while it sat idle (a restart,
            // an administrator's pg_terminate_backend) is dropped here
            // rather than handed out to fail its first statement: after
            // PostgreSQL comes back, the first request must not be the
            // one that finds out.
            let mut reused = None;
            while let Some(db) = s.idle.pop() {
                if db.is_usable() {
                    reused = Some(db);
                    break;
                }
            }
            reused
        };
        let mut slot = Pooled {
            pool: self,
            db: reused,
        };
        if slot.db.is_none() {
            // On failure the slot's drop gives the place back.
            slot.db = Some(self.database.connect()?);
        }
        Ok(slot)
    }
}

/// A connection taken from the pool; goes back when dropped, unless
/// PostgreSQL closed it.
pub struct Pooled<'a> {
    pool: &'a Pool,
    db: Option<Db>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
            .as_ref()
            .expect("a pooled connection is present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Db {
        self.db
            .as_mut()
            .expect("a pooled connection is present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut s = self.pool.slots();
        if let Some(db) = self.db.take().filter(Db::is_usable) {
            s.idle.push(db);
        }
        s.free += 1;
        drop(s);
        self.pool.freed.notify_one();
    }
}

impl super::db::Sql for Pooled<'_> {
    fn dialect(&self) -> super::db::Dialect {
        (**self).dialect()
    }
    fn exec(&mut self, sql: &str, params: &[super::db::Val<'_>]) -> Result<u64> {
        (**self).exec(sql, params)
    }
    fn rows(&mut self, sql: &str, params: &[super::db::Val<'_>]) -> Result<Vec<super::db::Row>> {
        (**self).rows(sql, params)
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        (**self).batch(sql)
    }
}

/// The store as the async side holds it: a cheap handle on the pool whose
/// calls run on tokio's blocking pool (rusqlite and the blocking
/// PostgreSQL client must never run on an async worker). A call gets one
/// connection, or one transaction committed when its closure succeeds
/// (rolled back when it fails), so transaction boundaries stay where
/// the caller draws them. It derefs to the [`Pool`] for code that
/// already runs on a blocking thread.
#[derive(Clone)]
pub struct Store(Arc<Pool>);

impl std::ops::Deref for Store {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.0
    }
}

impl Store {
    pub fn new(pool: Pool) -> Store {
        Store(Arc::new(pool))
    }

    /// Runs `f` with one connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T> + Send + 'static,
    {
        let pool = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = pool.get()?;
            f(&mut db)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Runs `f` in one transaction on the blocking pool: committed when
    /// `f` returns `Ok`, rolled back otherwise.
    pub async fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.run(move |db| {
            let mut tx = db.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Open sessions over all replicas (the metrics gauge).
    pub async fn open_sessions(&self, now: i64) -> Result<u64> {
        self.run(move |db| super::sessions::open(db, now)).await
    }

    /// Drops expired credentials and the sessions no credential needs;
    /// returns (credentials, sessions) removed.
    pub async fn purge_expired(&self, now: i64) -> Result<(u64, u64)> {
        self.run(move |db| super::sessions::purge_expired(db, now))
            .await
    }
}
