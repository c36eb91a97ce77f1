//! `--state` and `--database`: where the boot server's state lives, the
//! same two flags on `ember serve` and every admin command.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ember_server::store::{self, Db, StateDir};

#[derive(Args, Clone, Debug)]
pub struct StateArgs {
    /// State folder of the boot server (TLS material, overlay blobs, and
    /// the SQLite database unless --database names PostgreSQL).
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
    /// Database: leave out for SQLite in the state folder, or a
    /// postgres:// URL that several `ember serve` replicas share
    /// (a Unix socket: postgres://USER@%2Frun%2Fpostgresql/DB).
    /// The URL may hold a password: --help never shows the variable's value.
    #[arg(long, env = "EMBER_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

impl StateArgs {
    pub fn dir(&self) -> StateDir {
        StateDir::new(&self.state)
    }

    /// The database, opened and migrated.
    pub fn open(&self) -> Result<Db> {
        Ok(store::open(&self.dir(), self.database.as_deref())?)
    }
}
