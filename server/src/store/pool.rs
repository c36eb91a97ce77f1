//! The server's connections: one for SQLite (a single writer; the same
//! serialisation the old global mutex gave), a few for PostgreSQL (each
//! protocol step holds one for a statement or a transaction). A connection
//! PostgreSQL dropped is discarded and the next request connects again, so
//! a replica recovers by itself when the database is back.

use std::sync::{Condvar, Mutex};

use super::db::{Database, Db, Result};

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

    /// A connection, waiting while all are in use (blocking threads only).
    pub fn get(&self) -> Result<Pooled<'_>> {
        let reused = {
            let mut s = self.slots();
            while s.free == 0 {
                s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.free -= 1;
            s.idle.pop()
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
