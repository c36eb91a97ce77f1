//! The server's persisted state, behind this one seam: no SQL is written
//! anywhere else. One schema and one list of migrations for both
//! backends, SQLite in the state folder (the default) or PostgreSQL
//! (`--database postgres://…`, shared by replicas); overlay blobs as files
//! named by their SHA-256 in the state folder.
//!
//! - `db.rs`, `value.rs`, `error.rs`: the two backends behind one typed
//!   interface ([`Sql`], [`Db`], [`Tx`]), values in and out with checked
//!   conversions ([`FromValue`]), and the one error type;
//! - `pool.rs`: the connections ([`Pool`]) and [`Store`], the async face
//!   the tokio side holds, which runs store work on the blocking pool;
//! - `schema.rs`: the migrations; `state_dir.rs`: the state folder;
//! - one file per table, each with its typed row structs and columns:
//!   [`nodes`], [`policies`], [`overlays`] (assignments, manifest
//!   epochs), [`sessions`], [`credentials`], [`reports`] and [`phases`]
//!   (boot reports and their phase tables), [`images`]
//!   (boot images and rollback floors), [`packages`] (what each image's
//!   SBOM names), [`operators`] (console operators),
//!   [`rollouts`] (rollouts, their nodes and timeline, reboot locks).
//!
//! Transactions are the caller's: a function taking `&mut dyn Sql` runs
//! in whatever connection or transaction it is given. Every admin command
//! runs in one transaction, so a failed command leaves nothing half-written.

pub mod credentials;
mod db;
mod error;
pub mod images;
pub mod nodes;
pub mod operators;
pub mod overlays;
pub mod packages;
pub mod phases;
pub mod policies;
mod pool;
pub mod reports;
pub mod rollouts;
mod schema;
pub mod sessions;
mod state_dir;
#[cfg(test)]
pub(crate) mod tests;
mod value;

use std::time::{SystemTime, UNIX_EPOCH};

pub use db::{Database, Db, Dialect, Sql, Tx};
pub use error::{Error, Result, ValueError};
pub use pool::{Pool, Pooled, Store, POSTGRES_CONNECTIONS};
pub use state_dir::{lock_down, StateDir};
pub use value::{FromValue, Row, Val, Value};

// The names the host tool's admin commands call.
pub use nodes::{
    by_ek_hash as node_by_ek_hash, by_name as node_by_name, ensure_group, insert as insert_node,
    list as list_nodes, of_group as nodes_of_group, Node, NodeStatus,
};
pub use overlays::{
    assigned as assigned_overlay, get as overlay, insert as insert_overlay, list as list_overlays,
    Assigned, Overlay, OverlayListing, SealedBlob,
};
pub use policies::{
    effective as effective_policy, get as get_policy, lab_record as lab_record_policy,
    put as put_policy, scopes as policy_scopes, AllowedEvents, Policy,
};
pub use sessions::purge_expired;

pub use ember_fs::hex::{hex, unhex};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens (creating if needed) the database `--database` names (SQLite in
/// the state folder when absent) and brings its schema up to date. The
/// state folder is made either way: blobs and TLS material live there.
pub fn open(state: &StateDir, database: Option<&str>) -> Result<Db> {
    Ok(open_database(state, database)?.1)
}

/// [`open`], also returning where the database is (for a [`Pool`]).
pub fn open_database(state: &StateDir, database: Option<&str>) -> Result<(Database, Db)> {
    lock_down(state).map_err(|e| Error::StateFolder(format!("{e:#}")))?;
    std::fs::create_dir_all(state.blobs())
        .map_err(|e| Error::StateFolder(format!("{}: {e}", state.blobs().display())))?;
    let database = Database::parse(database, &state.db())?;
    let mut db = database.connect()?;
    schema::migrate(&mut db)?;
    Ok((database, db))
}

/// The connections to the database `--database` names, migrated.
pub fn open_pool(state: &StateDir, database: Option<&str>) -> Result<Store> {
    let (database, db) = open_database(state, database)?;
    Ok(Store::new(Pool::new(database, db)))
}
