//! The server's persisted state: one schema and one list of migrations
//! for both backends, SQLite in the state folder (the default) or
//! PostgreSQL (`--database postgres://…`, shared by replicas), over the
//! typed interface in [`db`]; overlay blobs as files named by their
//! SHA-256 in the state folder.
//!
//! Every admin command runs in one transaction, so a failed command leaves
//! nothing half-written.

mod db;
pub mod images;
mod pool;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use db::{Database, Db, Dialect, Error, FromValue, Result, Row, Sql, Tx, Val, Value};
pub use pool::{Pool, Pooled, POSTGRES_CONNECTIONS};

use crate::params;

/// Ordered schema migrations, written once in the SQL both dialects read
/// (SQLite's type names; [`postgres_ddl`] maps them). A migration that
/// cannot be shared has its PostgreSQL text in [`POSTGRES_MIGRATIONS`].
/// SQLite records how many ran in `user_version`, PostgreSQL in
/// `ember_schema`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE overlays (
        version_id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 BLOB NOT NULL,
        size INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE nodes (
        id INTEGER PRIMARY KEY,
        ek_hash BLOB NOT NULL UNIQUE,
        ek_cert BLOB,
        name TEXT NOT NULL UNIQUE,
        group_name TEXT NOT NULL REFERENCES groups(name),
        enrolled_at INTEGER NOT NULL,
        enrolled_by TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_known_good INTEGER REFERENCES overlays(version_id)
    );
    CREATE TABLE assignments (
        target TEXT PRIMARY KEY,            -- 'node:<name>' or 'group:<name>'
        version_id INTEGER NOT NULL REFERENCES overlays(version_id),
        assigned_at INTEGER NOT NULL
    );
    CREATE TABLE pcr_policies (
        scope TEXT PRIMARY KEY,             -- 'default', 'group:<name>', 'node:<name>'
        hash_alg INTEGER NOT NULL,
        mask INTEGER NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('values', 'record')),
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE pcr_allowed (
        scope TEXT NOT NULL REFERENCES pcr_policies(scope) ON DELETE CASCADE,
        pcr INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (scope, pcr, value)
    );
    CREATE TABLE sessions (
        id BLOB PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        secret BLOB NOT NULL,
        nonce BLOB NOT NULL,
        ak_public BLOB NOT NULL,
        transcript BLOB NOT NULL,
        hash_alg INTEGER NOT NULL,
        mask INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('started', 'finished', 'refused'))
    );
    CREATE TABLE credentials (
        hash BLOB PRIMARY KEY,
        session_id BLOB NOT NULL REFERENCES sessions(id),
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        version_id INTEGER REFERENCES overlays(version_id),
        expires_at INTEGER NOT NULL,
        reported_at INTEGER
    );
    CREATE TABLE boot_reports (
        id INTEGER PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        at INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('joined', 'failed', 'attested')),
        version_id INTEGER,
        reason TEXT NOT NULL
    );
    CREATE INDEX boot_reports_node ON boot_reports(node_id, at);
    INSERT INTO groups(name, created_at) VALUES ('default', 0);
    "#,
    // 2: sessions name their EK and peer (caps per EK and per peer are
    // counted before any expensive work) and may have no node yet: a node
    // admitted by its EK certificate chain gets its row only at Finish,
    // after ActivateCredential proved the TPM holds that EK.
    r#"
    CREATE TABLE sessions_v2 (
        id BLOB PRIMARY KEY,
        node_id INTEGER REFERENCES nodes(id),
        ek_hash BLOB NOT NULL,
        ek_cert BLOB,
        peer TEXT NOT NULL,
        secret BLOB NOT NULL,
        nonce BLOB NOT NULL,
        ak_public BLOB NOT NULL,
        transcript BLOB NOT NULL,
        hash_alg INTEGER NOT NULL,
        mask INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('started', 'finished', 'refused'))
    );
    INSERT INTO sessions_v2
        SELECT s.id, s.node_id, n.ek_hash, NULL, '', s.secret, s.nonce, s.ak_public, s.transcript,
               s.hash_alg, s.mask, s.created_at, s.expires_at, s.state
        FROM sessions s JOIN nodes n ON n.id = s.node_id;
    DROP TABLE sessions;
    ALTER TABLE sessions_v2 RENAME TO sessions;
    CREATE INDEX sessions_open_by_ek ON sessions(ek_hash, state, expires_at);
    CREATE INDEX sessions_open_by_peer ON sessions(peer, state, expires_at);
    "#,
    // 3: envelope-sealed overlays. Each version is sealed once under its
    // own data key into a blob named by the sealed bytes' SHA-256; each
    // assignment carries its signed manifest and a server-wide, monotonic
    // epoch. Overlays added before this have no blob: add them again.
    r#"
    ALTER TABLE overlays ADD COLUMN blob_sha256 BLOB;
    ALTER TABLE overlays ADD COLUMN blob_size INTEGER;
    ALTER TABLE overlays ADD COLUMN chunk_size INTEGER;
    ALTER TABLE overlays ADD COLUMN compression TEXT;
    ALTER TABLE overlays ADD COLUMN data_key BLOB;
    ALTER TABLE assignments ADD COLUMN epoch INTEGER;
    ALTER TABLE assignments ADD COLUMN manifest BLOB;
    CREATE TABLE manifest_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL);
    INSERT INTO manifest_epoch(id, epoch) VALUES (1, 0);
    "#,
    // 4: measured-boot policies keep the extends each allowed value is
    // made of (`ember policy set --uki`), so a refusal names the event
    // that differs, and say whether a node must send its event log.
    r#"
    ALTER TABLE pcr_policies ADD COLUMN event_log TEXT NOT NULL DEFAULT 'optional'
        CHECK (event_log IN ('optional', 'required'));
    CREATE TABLE pcr_events (
        scope TEXT NOT NULL REFERENCES pcr_policies(scope) ON DELETE CASCADE,
        pcr INTEGER NOT NULL,
        value BLOB NOT NULL,                -- the allowed value these extends make
        seq INTEGER NOT NULL,
        label TEXT NOT NULL,
        digest BLOB NOT NULL,
        PRIMARY KEY (scope, pcr, value, seq)
    );
    "#,
    // 5: rollback floors. Each UKI an operator allows gets an image epoch
    // (server-wide, monotonic, kept when named again); a session keeps the
    // UKI Finish identified; a node keeps the highest epoch it blessed
    // (reported Joined), below which it is refused, and every change of it.
    r#"
    CREATE TABLE boot_images (
        sha256 BLOB PRIMARY KEY,
        epoch INTEGER NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        source TEXT NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE TABLE image_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL);
    INSERT INTO image_epoch(id, epoch) VALUES (1, 0);
    ALTER TABLE sessions ADD COLUMN boot_image BLOB;
    ALTER TABLE nodes ADD COLUMN rollback_floor INTEGER;
    CREATE TABLE floor_changes (
        id INTEGER PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        at INTEGER NOT NULL,
        old_floor INTEGER,
        new_floor INTEGER,
        cause TEXT NOT NULL
    );
    CREATE INDEX floor_changes_node ON floor_changes(node_id, at);
    "#,
];

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The state folder's layout.
#[derive(Clone, Debug)]
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new(path: &Path) -> Self {
        StateDir(path.to_path_buf())
    }
    pub fn root(&self) -> &Path {
        &self.0
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("ember.db")
    }
    pub fn blobs(&self) -> PathBuf {
        self.0.join("blobs")
    }
    pub fn blob(&self, sha256_hex: &str) -> PathBuf {
        self.blobs().join(sha256_hex)
    }
    /// Sealed overlay blobs, named by the SHA-256 of their sealed bytes:
    /// ciphertext, served to anyone on both listeners.
    pub fn sealed_dir(&self) -> PathBuf {
        self.0.join("sealed")
    }
    pub fn tls(&self) -> PathBuf {
        self.0.join("tls")
    }
    /// Static boot artifacts (kernel, initrd), named by SHA-256.
    pub fn boot_dir(&self) -> PathBuf {
        self.0.join("boot")
    }
    pub fn boot_artifact(&self, sha256_hex: &str) -> PathBuf {
        self.boot_dir().join(sha256_hex)
    }
}

/// Makes everything this process creates owner-only, whatever umask it
/// was started with, and tightens a state folder made by an older ember:
/// the database holds session secrets (overlay keys derive from them), the
/// blobs plaintext configuration, tls/ the server's keys.
pub fn lock_down(state: &StateDir) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let root = state.root();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("create state folder {}", root.display()))?;
    fn walk(dir: &Path) -> anyhow::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", dir.display()))?;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(&e.path())?;
            } else if ft.is_file() {
                let mode = e.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("chmod {}", e.path().display()))?;
                }
            }
        }
        Ok(())
    }
    walk(root)
}

/// PostgreSQL's text for the migrations SQLite's cannot share, by number.
const POSTGRES_MIGRATIONS: &[(usize, &str)] = &[
    // 2: SQLite rebuilds the table (it cannot drop NOT NULL); PostgreSQL
    // alters it in place, keeping the credentials' foreign key.
    (
        2,
        r#"
    ALTER TABLE sessions ALTER COLUMN node_id DROP NOT NULL;
    ALTER TABLE sessions ADD COLUMN ek_hash BYTEA;
    UPDATE sessions s SET ek_hash = n.ek_hash FROM nodes n WHERE n.id = s.node_id;
    ALTER TABLE sessions ALTER COLUMN ek_hash SET NOT NULL;
    ALTER TABLE sessions ADD COLUMN ek_cert BYTEA;
    ALTER TABLE sessions ADD COLUMN peer TEXT NOT NULL DEFAULT '';
    CREATE INDEX sessions_open_by_ek ON sessions(ek_hash, state, expires_at);
    CREATE INDEX sessions_open_by_peer ON sessions(peer, state, expires_at);
    "#,
    ),
];

/// A shared migration in PostgreSQL's type names: 64-bit integers, BYTEA,
/// identity columns for SQLite's rowid keys.
fn postgres_ddl(sql: &str) -> String {
    const IDENTITY: &str = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY";
    sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", IDENTITY)
        .replace("INTEGER PRIMARY KEY", IDENTITY)
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA")
}

/// Migration `number` (1-based) in `dialect`.
fn migration(dialect: Dialect, number: usize) -> std::borrow::Cow<'static, str> {
    let shared = MIGRATIONS[number - 1];
    match dialect {
        Dialect::Sqlite => shared.into(),
        Dialect::Postgres => match POSTGRES_MIGRATIONS.iter().find(|(n, _)| *n == number) {
            Some((_, sql)) => (*sql).into(),
            None => postgres_ddl(shared).into(),
        },
    }
}

/// The advisory lock replicas starting at once migrate under ("EMBR" "MIGR").
const MIGRATE_LOCK: i64 = 0x454d_4252_4d49_4752;

fn schema_version(tx: &mut Tx<'_>) -> Result<i64> {
    match tx {
        Tx::Sqlite(t) => Ok(t.pragma_query_value(None, "user_version", |r| r.get(0))?),
        Tx::Postgres(..) => {
            tx.exec("SELECT pg_advisory_xact_lock($1)", params![MIGRATE_LOCK])?;
            tx.batch("CREATE TABLE IF NOT EXISTS ember_schema (version BIGINT NOT NULL)")?;
            match tx.row("SELECT version FROM ember_schema", &[])? {
                Some(r) => r.get(0),
                None => {
                    tx.exec("INSERT INTO ember_schema(version) VALUES (0)", &[])?;
                    Ok(0)
                }
            }
        }
    }
}

fn set_schema_version(tx: &mut Tx<'_>, v: i64) -> Result<()> {
    match tx {
        Tx::Sqlite(t) => Ok(t.pragma_update(None, "user_version", v)?),
        Tx::Postgres(..) => {
            tx.exec("UPDATE ember_schema SET version = $1", params![v])?;
            Ok(())
        }
    }
}

/// Brings the schema up to date in one transaction.
fn migrate(db: &mut Db) -> Result<()> {
    // SQLite's table rebuilds (migration 2) need foreign keys off.
    if let Db::Sqlite(c) = db {
        c.pragma_update(None, "foreign_keys", "OFF")?;
    }
    let result = migrate_all(db);
    if let Db::Sqlite(c) = db {
        c.pragma_update(None, "foreign_keys", "ON")?;
    }
    result
}

fn migrate_all(db: &mut Db) -> Result<()> {
    let dialect = db.dialect();
    let mut tx = match db {
        Db::Sqlite(c) => {
            Tx::Sqlite(c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
        }
        Db::Postgres(_) => db.transaction()?,
    };
    let applied = schema_version(&mut tx)?;
    if applied as usize > MIGRATIONS.len() {
        return Err(Error::SchemaTooNew {
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    for number in applied as usize + 1..=MIGRATIONS.len() {
        tx.batch(&migration(dialect, number))
            .map_err(|e| Error::Migration {
                number,
                source: Box::new(e),
            })?;
        set_schema_version(&mut tx, number as i64)?;
    }
    tx.commit()
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
    migrate(&mut db)?;
    Ok((database, db))
}

/// A pool of connections to the database `--database` names, migrated.
pub fn open_pool(state: &StateDir, database: Option<&str>) -> Result<Pool> {
    let (database, db) = open_database(state, database)?;
    Ok(Pool::new(database, db))
}

/// A PCR policy as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub scope: String,
    pub hash_alg: u16,
    pub mask: u32,
    pub record: bool,
    /// Allowed (pcr, value) pairs; several values per PCR are allowed.
    pub allowed: Vec<(u8, Vec<u8>)>,
    /// The extends that make allowed values (from `policy set --uki`).
    pub events: Vec<AllowedEvents>,
    /// A node must send its firmware event log; without one it is refused
    /// rather than judged by PCR values alone.
    pub require_log: bool,
}

/// The extends, in order, that leave `pcr` at the allowed `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedEvents {
    pub pcr: u8,
    pub value: Vec<u8>,
    pub events: Vec<ember_tpm::eventlog::Expected>,
}

/// The lab's policy when none is set and `ember serve
/// --lab-record-first-boot` is on: record PCRs 0-7 on the first boot.
/// Without that flag a node with no policy is refused.
pub fn lab_record_policy() -> Policy {
    Policy {
        scope: "default (lab: record first boot)".into(),
        hash_alg: ember_proto::msg::ALG_SHA256,
        mask: 0xFF,
        record: true,
        allowed: vec![],
        events: vec![],
        require_log: false,
    }
}

pub fn get_policy(db: &mut dyn Sql, scope: &str) -> Result<Option<Policy>> {
    let Some(row) = db.row(
        "SELECT hash_alg, mask, mode, event_log FROM pcr_policies WHERE scope = $1",
        params![scope],
    )?
    else {
        return Ok(None);
    };
    let allowed = db
        .rows(
            "SELECT pcr, value FROM pcr_allowed WHERE scope = $1 ORDER BY pcr, value",
            params![scope],
        )?
        .iter()
        .map(|r| Ok((r.get::<i64>(0)? as u8, r.get::<Vec<u8>>(1)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut events: Vec<AllowedEvents> = Vec::new();
    for r in db.rows(
        "SELECT pcr, value, label, digest FROM pcr_events WHERE scope = $1 ORDER BY pcr, value, seq",
        params![scope],
    )? {
        let (pcr, value) = (r.get::<i64>(0)? as u8, r.get::<Vec<u8>>(1)?);
        let e = ember_tpm::eventlog::Expected {
            label: r.get(2)?,
            digest: r.get(3)?,
        };
        match events.last_mut() {
            Some(a) if a.pcr == pcr && a.value == value => a.events.push(e),
            _ => events.push(AllowedEvents {
                pcr,
                value,
                events: vec![e],
            }),
        }
    }
    Ok(Some(Policy {
        scope: scope.into(),
        hash_alg: row.get::<i64>(0)? as u16,
        mask: row.get::<i64>(1)? as u32,
        record: row.get::<String>(2)? == "record",
        allowed,
        events,
        require_log: row.get::<String>(3)? == "required",
    }))
}

pub fn put_policy(tx: &mut dyn Sql, p: &Policy) -> Result<()> {
    // An upsert, not delete-then-insert: replicas recording the same
    // node's first boot at once wait on the row instead of colliding.
    tx.exec(
        "INSERT INTO pcr_policies(scope, hash_alg, mask, mode, updated_at, event_log) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT(scope) DO UPDATE SET hash_alg = excluded.hash_alg, mask = excluded.mask,
             mode = excluded.mode, updated_at = excluded.updated_at, event_log = excluded.event_log",
        params![
            &p.scope,
            p.hash_alg as i64,
            p.mask as i64,
            if p.record { "record" } else { "values" },
            now_ms(),
            if p.require_log { "required" } else { "optional" }
        ],
    )?;
    // Setting a scope again replaces its allowed values and their events.
    tx.exec(
        "DELETE FROM pcr_allowed WHERE scope = $1",
        params![&p.scope],
    )?;
    tx.exec("DELETE FROM pcr_events WHERE scope = $1", params![&p.scope])?;
    for a in &p.events {
        for (seq, e) in a.events.iter().enumerate() {
            tx.exec(
                "INSERT INTO pcr_events(scope, pcr, value, seq, label, digest) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT(scope, pcr, value, seq) DO UPDATE SET label = excluded.label, digest = excluded.digest",
                params![&p.scope, a.pcr as i64, &a.value, seq as i64, &e.label, &e.digest],
            )?;
        }
    }
    for (pcr, value) in &p.allowed {
        tx.exec(
            "INSERT INTO pcr_allowed(scope, pcr, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            params![&p.scope, *pcr as i64, value],
        )?;
    }
    Ok(())
}

/// Every scope that has a policy, sorted.
pub fn policy_scopes(db: &mut dyn Sql) -> Result<Vec<String>> {
    db.rows("SELECT scope FROM pcr_policies ORDER BY scope", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The policy that applies to a node: its own, its group's, the default;
/// `None` when none is set.
pub fn effective_policy(db: &mut dyn Sql, node_name: &str, group: &str) -> Result<Option<Policy>> {
    for scope in [
        format!("node:{node_name}"),
        format!("group:{group}"),
        "default".to_string(),
    ] {
        if let Some(p) = get_policy(db, &scope)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: i64,
    pub name: String,
    pub group: String,
}

impl Node {
    /// From columns `at`, `at + 1`, `at + 2` (id, name, group_name).
    pub fn from_row(r: &Row, at: usize) -> Result<Node> {
        Ok(Node {
            id: r.get(at)?,
            name: r.get(at + 1)?,
            group: r.get(at + 2)?,
        })
    }
}

pub fn node_by_ek_hash(db: &mut dyn Sql, ek_hash: &[u8; 32]) -> Result<Option<Node>> {
    db.row(
        "SELECT id, name, group_name FROM nodes WHERE ek_hash = $1",
        params![&ek_hash[..]],
    )?
    .map(|r| Node::from_row(&r, 0))
    .transpose()
}

pub fn node_by_name(db: &mut dyn Sql, name: &str) -> Result<Option<Node>> {
    db.row(
        "SELECT id, name, group_name FROM nodes WHERE name = $1",
        params![name],
    )?
    .map(|r| Node::from_row(&r, 0))
    .transpose()
}

/// The nodes of `group` (every node with `None`), by name.
pub fn nodes_of_group(db: &mut dyn Sql, group: Option<&str>) -> Result<Vec<Node>> {
    match group {
        Some(g) => db.rows(
            "SELECT id, name, group_name FROM nodes WHERE group_name = $1 ORDER BY name",
            params![g],
        )?,
        None => db.rows("SELECT id, name, group_name FROM nodes ORDER BY name", &[])?,
    }
    .iter()
    .map(|r| Node::from_row(r, 0))
    .collect()
}

pub fn ensure_group(tx: &mut dyn Sql, group: &str) -> Result<()> {
    tx.exec(
        "INSERT INTO groups(name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        params![group, now_ms()],
    )?;
    Ok(())
}

#[cfg(test)]
pub fn group_exists(db: &mut dyn Sql, group: &str) -> Result<bool> {
    Ok(db
        .row("SELECT name FROM groups WHERE name = $1", params![group])?
        .is_some())
}

pub fn insert_node(
    tx: &mut dyn Sql,
    ek_hash: &[u8; 32],
    ek_cert: Option<&[u8]>,
    name: &str,
    group: &str,
    enrolled_by: &str,
) -> Result<Node> {
    ensure_group(tx, group)?;
    if node_by_ek_hash(tx, ek_hash)?.is_some() {
        return Err(Error::Conflict("this EK is already enrolled".into()));
    }
    if node_by_name(tx, name)?.is_some() {
        return Err(Error::Conflict(format!(
            "a node named {name:?} already exists"
        )));
    }
    let row = tx.one(
        "INSERT INTO nodes(ek_hash, ek_cert, name, group_name, enrolled_at, enrolled_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        params![&ek_hash[..], ek_cert, name, group, now_ms(), enrolled_by],
    )?;
    Ok(Node {
        id: row.get(0)?,
        name: name.into(),
        group: group.into(),
    })
}

/// A node as `ember nodes` lists it, with its latest boot.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub group: String,
    pub ek_hash: Vec<u8>,
    pub attempts: i64,
    pub last_known_good: Option<i64>,
    pub last_report_at: Option<i64>,
    pub last_outcome: Option<String>,
    /// The latest reason a node gave (its own text: escape before printing).
    pub last_reason: Option<String>,
    /// Its rollback floor: the image epoch it blessed last and that
    /// image's SHA-256 ([`images`]).
    pub rollback_floor: Option<(i64, Option<Vec<u8>>)>,
}

pub fn list_nodes(db: &mut dyn Sql) -> Result<Vec<NodeStatus>> {
    db.rows(
        "SELECT n.name, n.group_name, n.ek_hash, n.attempts, n.last_known_good,
                (SELECT at FROM boot_reports b WHERE b.node_id = n.id ORDER BY at DESC, id DESC LIMIT 1),
                (SELECT outcome FROM boot_reports b WHERE b.node_id = n.id ORDER BY at DESC, id DESC LIMIT 1),
                (SELECT reason FROM boot_reports b WHERE b.node_id = n.id AND outcome != 'attested' ORDER BY at DESC, id DESC LIMIT 1),
                n.rollback_floor, i.sha256
         FROM nodes n LEFT JOIN boot_images i ON i.epoch = n.rollback_floor ORDER BY n.name",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(NodeStatus {
            name: r.get(0)?,
            group: r.get(1)?,
            ek_hash: r.get(2)?,
            attempts: r.get(3)?,
            last_known_good: r.get(4)?,
            last_report_at: r.get(5)?,
            last_outcome: r.get(6)?,
            last_reason: r.get(7)?,
            rollback_floor: r
                .get::<Option<i64>>(8)?
                .map(|e| Ok::<_, Error>((e, r.get(9)?)))
                .transpose()?,
        })
    })
    .collect()
}

#[derive(Debug, Clone)]
pub struct Overlay {
    pub version_id: i64,
    pub sha256: [u8; 32],
    pub size: u64,
}

fn overlay_row(r: &Row) -> Result<Overlay> {
    let sha: Vec<u8> = r.get(1)?;
    let sha256 = <[u8; 32]>::try_from(sha)
        .map_err(|_| Error::Shape("an overlay's sha256 is not 32 bytes".into()))?;
    Ok(Overlay {
        version_id: r.get(0)?,
        sha256,
        size: r.get::<i64>(2)? as u64,
    })
}

pub fn overlay(db: &mut dyn Sql, version_id: i64) -> Result<Option<Overlay>> {
    db.row(
        "SELECT version_id, sha256, size FROM overlays WHERE version_id = $1",
        params![version_id],
    )?
    .map(|r| overlay_row(&r))
    .transpose()
}

/// An overlay version's sealed blob as stored beside it: the blob's
/// digest and size, how it was sealed, and its data key.
#[derive(Debug, Clone)]
pub struct SealedBlob<'a> {
    pub sha256: [u8; 32],
    pub size: u64,
    pub chunk_size: u32,
    pub compression: &'a str,
    pub data_key: [u8; 32],
}

/// Records an added overlay (its plaintext blob and its sealed blob);
/// returns its version id.
pub fn insert_overlay(
    tx: &mut dyn Sql,
    sha256: &[u8; 32],
    size: u64,
    source: &str,
    sealed: &SealedBlob<'_>,
) -> Result<i64> {
    tx.one(
        "INSERT INTO overlays(sha256, size, source, created_at, blob_sha256, blob_size, chunk_size, compression, data_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING version_id",
        params![
            &sha256[..],
            size as i64,
            source,
            now_ms(),
            &sealed.sha256[..],
            sealed.size as i64,
            sealed.chunk_size as i64,
            sealed.compression,
            &sealed.data_key[..]
        ],
    )?
    .get(0)
}

/// Assigns overlay `version` to `target` (`group:G`, created if missing,
/// or `node:N`) with its signed `manifest` of `epoch`, replacing the
/// target's previous assignment ([`crate::manifest::assign`] signs).
pub fn assign(
    tx: &mut dyn Sql,
    target: &str,
    version: i64,
    epoch: i64,
    manifest: &[u8],
) -> Result<()> {
    if let Some(g) = target.strip_prefix("group:") {
        ensure_group(tx, g)?;
    }
    tx.exec(
        "INSERT INTO assignments(target, version_id, assigned_at, epoch, manifest) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT(target) DO UPDATE SET version_id = excluded.version_id, assigned_at = excluded.assigned_at,
             epoch = excluded.epoch, manifest = excluded.manifest",
        params![target, version, now_ms(), epoch, manifest],
    )?;
    Ok(())
}

/// An overlay as `ember overlay list` shows it.
#[derive(Debug, Clone)]
pub struct OverlayListing {
    pub overlay: Overlay,
    pub source: String,
    /// Targets it is assigned to, sorted.
    pub targets: Vec<String>,
}

pub fn list_overlays(db: &mut dyn Sql) -> Result<Vec<OverlayListing>> {
    let assignments = db.rows(
        "SELECT version_id, target FROM assignments ORDER BY target",
        &[],
    )?;
    db.rows(
        "SELECT version_id, sha256, size, source FROM overlays ORDER BY version_id",
        &[],
    )?
    .iter()
    .map(|r| {
        let overlay = overlay_row(r)?;
        let mut targets = Vec::new();
        for a in &assignments {
            if a.get::<i64>(0)? == overlay.version_id {
                targets.push(a.get(1)?);
            }
        }
        Ok(OverlayListing {
            overlay,
            source: r.get(3)?,
            targets,
        })
    })
    .collect()
}

/// An assignment as Finish needs it: the overlay version, its signed
/// manifest and its data key (`None` for overlays from before sealed blobs).
#[derive(Debug, Clone)]
pub struct Assigned {
    pub version_id: i64,
    pub manifest: Option<Vec<u8>>,
    pub data_key: Option<Vec<u8>>,
}

/// The overlay assigned to the node, else to its group.
pub fn assigned_overlay(db: &mut dyn Sql, node: &Node) -> Result<Option<Assigned>> {
    for target in [
        format!("node:{}", node.name),
        format!("group:{}", node.group),
    ] {
        let row = db.row(
            "SELECT o.version_id, a.manifest, o.data_key FROM assignments a JOIN overlays o ON o.version_id = a.version_id WHERE a.target = $1",
            params![&target],
        )?;
        if let Some(r) = row {
            return Ok(Some(Assigned {
                version_id: r.get(0)?,
                manifest: r.get(1)?,
                data_key: r.get(2)?,
            }));
        }
    }
    Ok(None)
}

fn count(db: &mut dyn Sql, sql: &str, params: &[Val<'_>]) -> Result<u64> {
    Ok(db.one(sql, params)?.get::<i64>(0)? as u64)
}

/// Started, unfinished, unexpired sessions of one EK.
pub fn open_sessions_of_ek(db: &mut dyn Sql, ek_hash: &[u8; 32], now: i64) -> Result<u64> {
    count(
        db,
        "SELECT COUNT(*) FROM sessions WHERE ek_hash = $1 AND state = 'started' AND expires_at > $2",
        params![&ek_hash[..], now],
    )
}

/// Started, unfinished, unexpired sessions one client address opened.
pub fn open_sessions_of_peer(db: &mut dyn Sql, peer: &str, now: i64) -> Result<u64> {
    count(
        db,
        "SELECT COUNT(*) FROM sessions WHERE peer = $1 AND state = 'started' AND expires_at > $2",
        params![peer, now],
    )
}

/// Started, unfinished, unexpired sessions (the metrics gauge).
pub fn open_sessions(db: &mut dyn Sql, now: i64) -> Result<u64> {
    count(
        db,
        "SELECT COUNT(*) FROM sessions WHERE state = 'started' AND expires_at > $1",
        params![now],
    )
}

/// Deletes expired credentials and the sessions (with their secrets) no
/// credential needs any more; returns (credentials, sessions) removed.
pub fn purge_expired(db: &mut dyn Sql, now: i64) -> Result<(u64, u64)> {
    let creds = db.exec(
        "DELETE FROM credentials WHERE expires_at < $1",
        params![now],
    )?;
    let sessions = db.exec(
        "DELETE FROM sessions WHERE expires_at < $1 AND id NOT IN (SELECT session_id FROM credentials)",
        params![now],
    )?;
    Ok((creds, sessions))
}

pub use ember_fs::hex::{hex, unhex};

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempdir::Dir, StateDir) {
        let d = tempdir::Dir::new();
        let s = StateDir::new(&d.0);
        (d, s)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ember-store-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn migrations_run_once_and_reopen_is_idempotent() {
        let (_d, s) = scratch();
        drop(open(&s, None).unwrap());
        let mut db = open(&s, None).unwrap();
        let Db::Sqlite(c) = &db else {
            panic!("SQLite by default")
        };
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        assert!(group_exists(&mut db, "default").unwrap());
    }

    #[test]
    fn postgres_migrations_use_postgres_types() {
        let m1 = migration(Dialect::Postgres, 1);
        assert!(!m1.contains("BLOB") && !m1.contains("INTEGER"), "{m1}");
        assert!(m1.contains("version_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"));
        assert!(m1.contains("id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"));
        // Tables are created before a foreign key names them (PostgreSQL
        // checks REFERENCES at CREATE TABLE; SQLite does not).
        assert!(m1.find("CREATE TABLE overlays") < m1.find("CREATE TABLE nodes"));
        assert!(migration(Dialect::Postgres, 2).contains("ALTER TABLE sessions"));
        assert_eq!(migration(Dialect::Sqlite, 2), MIGRATIONS[1]);
        for n in 1..=MIGRATIONS.len() {
            let m = migration(Dialect::Postgres, n);
            assert!(!m.contains("BLOB") && !m.contains("INTEGER"), "{n}: {m}");
        }
        // The single-row epoch keeps its CHECK as an identity column.
        assert!(migration(Dialect::Postgres, 3).contains("AS IDENTITY PRIMARY KEY CHECK (id = 1)"));
        for (n, _) in POSTGRES_MIGRATIONS {
            assert!(*n >= 1 && *n <= MIGRATIONS.len());
        }
    }

    #[test]
    fn migration_2_keeps_sessions_and_credentials_of_a_version_1_database() {
        let (_d, s) = scratch();
        std::fs::create_dir_all(s.root()).unwrap();
        {
            let conn = rusqlite::Connection::open(s.db()).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO nodes(id, ek_hash, name, group_name, enrolled_at, enrolled_by) VALUES (7, x'aa', 'a', 'default', 0, 't');
                 INSERT INTO sessions VALUES (x'01', 7, x'00', x'00', x'00', x'00', 11, 1, 0, 99, 'finished');
                 INSERT INTO credentials(hash, session_id, node_id, expires_at) VALUES (x'02', x'01', 7, 99);",
            )
            .unwrap();
        }
        let mut db = open(&s, None).unwrap();
        let r = db
            .one(
                "SELECT node_id, ek_hash, peer FROM sessions WHERE id = x'01'",
                &[],
            )
            .unwrap();
        assert_eq!(
            (
                r.get::<i64>(0).unwrap(),
                r.get::<Vec<u8>>(1).unwrap(),
                r.get::<String>(2).unwrap()
            ),
            (7, vec![0xaa], String::new())
        );
        let fk = db
            .one("SELECT COUNT(*) FROM pragma_foreign_key_check", &[])
            .unwrap();
        assert_eq!(
            fk.get::<i64>(0).unwrap(),
            0,
            "credentials still reference their sessions"
        );
        assert_eq!(open_sessions_of_ek(&mut db, &[0; 32], 0).unwrap(), 0);
    }

    #[test]
    fn migration_5_keeps_a_version_4_database_and_starts_every_node_without_a_floor() {
        let (_d, s) = scratch();
        std::fs::create_dir_all(s.root()).unwrap();
        {
            let mut conn = rusqlite::Connection::open(s.db()).unwrap();
            let tx = conn.transaction().unwrap();
            for m in &MIGRATIONS[..4] {
                tx.execute_batch(m).unwrap();
            }
            tx.execute_batch(
                "INSERT INTO nodes(id, ek_hash, name, group_name, enrolled_at, enrolled_by) VALUES (7, x'aa', 'a', 'default', 0, 't');
                 INSERT INTO sessions(id, node_id, ek_hash, peer, secret, nonce, ak_public, transcript, hash_alg, mask, created_at, expires_at, state)
                     VALUES (x'01', 7, x'aa', '', x'00', x'00', x'00', x'00', 11, 1, 0, 99, 'finished');",
            )
            .unwrap();
            tx.pragma_update(None, "user_version", 4).unwrap();
            tx.commit().unwrap();
        }
        let mut db = open(&s, None).unwrap();
        let r = db
            .one("SELECT boot_image FROM sessions WHERE id = x'01'", &[])
            .unwrap();
        assert_eq!(r.get::<Option<Vec<u8>>>(0).unwrap(), None);
        assert_eq!(images::floor_of(&mut db, 7).unwrap(), None);
        assert!(images::list(&mut db).unwrap().is_empty());
        let listed = list_nodes(&mut db).unwrap();
        assert_eq!(listed[0].rollback_floor, None);
        // The first image ordered after the upgrade is epoch 1.
        let mut tx = db.transaction().unwrap();
        let (img, new) = images::register(&mut tx, &[1; 32], 10, "a.efi").unwrap();
        tx.commit().unwrap();
        assert!(new);
        assert_eq!(img.epoch, 1);
    }

    #[test]
    fn images_keep_the_epoch_they_were_first_allowed_with() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let (a, new_a) = images::register(&mut tx, &[0xa; 32], 10, "a.efi").unwrap();
        let (b, new_b) = images::register(&mut tx, &[0xb; 32], 20, "b.efi").unwrap();
        // Named again (as every `policy set --uki old --uki new` does), an
        // old image stays old.
        let (a2, again) = images::register(&mut tx, &[0xa; 32], 10, "elsewhere/a.efi").unwrap();
        tx.commit().unwrap();
        assert!(new_a && new_b && !again);
        assert!(a.epoch < b.epoch);
        assert_eq!(a2, a);
        assert_eq!(images::list(&mut db).unwrap(), [a.clone(), b.clone()]);
        assert_eq!(images::by_epoch(&mut db, b.epoch).unwrap(), Some(b));
    }

    #[test]
    fn a_floor_only_rises_by_blessing_and_only_the_operator_lowers_it() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n = insert_node(&mut tx, &[1; 32], None, "a", "default", "test").unwrap();
        let (a, _) = images::register(&mut tx, &[0xa; 32], 10, "a.efi").unwrap();
        let (b, _) = images::register(&mut tx, &[0xb; 32], 20, "b.efi").unwrap();
        assert_eq!(
            images::raise_floor(&mut tx, n.id, a.epoch).unwrap(),
            Some(None)
        );
        assert_eq!(
            images::raise_floor(&mut tx, n.id, b.epoch).unwrap(),
            Some(Some(a.epoch))
        );
        // Blessing the older one again changes nothing.
        assert_eq!(images::raise_floor(&mut tx, n.id, a.epoch).unwrap(), None);
        assert_eq!(images::raise_floor(&mut tx, n.id, b.epoch).unwrap(), None);
        tx.commit().unwrap();
        let floor = images::floor_of(&mut db, n.id).unwrap().unwrap();
        assert_eq!((floor.epoch, floor.image), (b.epoch, Some(b.clone())));

        let mut tx = db.transaction().unwrap();
        // "Lowering" to a newer image raises nothing.
        assert_eq!(
            images::lower_floor(&mut tx, n.id, Some(b.epoch + 5), "t").unwrap(),
            None
        );
        assert_eq!(
            images::lower_floor(&mut tx, n.id, Some(a.epoch), "uid 0").unwrap(),
            Some(Some(b.epoch))
        );
        assert_eq!(
            images::lower_floor(&mut tx, n.id, None, "uid 0").unwrap(),
            Some(Some(a.epoch))
        );
        assert_eq!(
            images::lower_floor(&mut tx, n.id, None, "uid 0").unwrap(),
            None
        );
        tx.commit().unwrap();
        assert_eq!(images::floor_of(&mut db, n.id).unwrap(), None);
        let changes: Vec<_> = images::floor_changes(&mut db, n.id)
            .unwrap()
            .into_iter()
            .map(|c| (c.old_floor, c.new_floor, c.cause))
            .collect();
        assert_eq!(
            changes,
            [
                (None, Some(a.epoch), "blessed".to_string()),
                (Some(a.epoch), Some(b.epoch), "blessed".to_string()),
                (
                    Some(b.epoch),
                    Some(a.epoch),
                    "allow-rollback by uid 0".to_string()
                ),
                (Some(a.epoch), None, "allow-rollback by uid 0".to_string()),
            ]
        );
    }

    #[test]
    fn failed_enrolment_leaves_nothing_behind() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        insert_node(&mut tx, &[1; 32], None, "a", "rack1", "test").unwrap();
        tx.commit().unwrap();
        let mut tx = db.transaction().unwrap();
        // New group created, then the duplicate name fails: the group must not remain.
        assert!(matches!(
            insert_node(&mut tx, &[2; 32], None, "a", "rack2", "test"),
            Err(Error::Conflict(_))
        ));
        drop(tx);
        assert!(!group_exists(&mut db, "rack2").unwrap());
        assert!(node_by_ek_hash(&mut db, &[2; 32]).unwrap().is_none());
    }

    #[test]
    fn purge_drops_expired_sessions_but_keeps_those_a_credential_needs() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let n = insert_node(&mut tx, &[1; 32], None, "a", "default", "test").unwrap();
        tx.commit().unwrap();
        for (id, expires) in [(1u8, 10i64), (2, 10), (3, 1000)] {
            db.exec(
                "INSERT INTO sessions(id, node_id, ek_hash, peer, secret, nonce, ak_public, transcript, hash_alg, mask, created_at, expires_at, state)
                 VALUES ($1, $2, x'01', '127.0.0.1', x'00', x'00', x'00', x'00', 11, 1, 0, $3, 'finished')",
                params![&vec![id; 16], n.id, expires],
            )
            .unwrap();
        }
        db.exec(
            "INSERT INTO credentials(hash, session_id, node_id, expires_at) VALUES (x'01', $1, $2, 1000)",
            params![&vec![2u8; 16], n.id],
        )
        .unwrap();
        assert_eq!(purge_expired(&mut db, 100).unwrap(), (0, 1));
        assert_eq!(purge_expired(&mut db, 2000).unwrap(), (1, 2));
    }

    #[test]
    fn overlays_list_with_their_assignments() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        let mut tx = db.transaction().unwrap();
        let sealed = SealedBlob {
            sha256: [3; 32],
            size: 30,
            chunk_size: 65536,
            compression: "gzip",
            data_key: [4; 32],
        };
        let v1 = insert_overlay(&mut tx, &[1; 32], 10, "/a", &sealed).unwrap();
        let v2 = insert_overlay(&mut tx, &[2; 32], 20, "/b", &sealed).unwrap();
        assign(&mut tx, "group:g", v1, 1, b"m1").unwrap();
        assign(&mut tx, "group:h", v1, 2, b"m2").unwrap();
        assign(&mut tx, "group:g", v2, 3, b"m3").unwrap();
        tx.commit().unwrap();
        let l = list_overlays(&mut db).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].targets, ["group:h"]);
        assert_eq!(l[1].targets, ["group:g"]);
        assert_eq!(l[1].overlay.size, 20);
    }

    #[test]
    fn node_policy_overrides_group_and_default() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        assert_eq!(effective_policy(&mut db, "n", "g").unwrap(), None);
        let mut tx = db.transaction().unwrap();
        let g = Policy {
            scope: "group:g".into(),
            hash_alg: 11,
            mask: 0x81,
            record: false,
            allowed: vec![(0, vec![0; 32])],
            events: vec![AllowedEvents {
                pcr: 0,
                value: vec![0; 32],
                events: vec![
                    ember_tpm::eventlog::Expected {
                        label: ".linux".into(),
                        digest: vec![1; 32],
                    },
                    ember_tpm::eventlog::Expected {
                        label: ".initrd".into(),
                        digest: vec![2; 32],
                    },
                ],
            }],
            require_log: true,
        };
        put_policy(&mut tx, &g).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            effective_policy(&mut db, "n", "g").unwrap(),
            Some(g.clone())
        );
        let mut tx = db.transaction().unwrap();
        let n = Policy {
            scope: "node:n".into(),
            hash_alg: 11,
            mask: 0x1,
            record: true,
            allowed: vec![],
            events: vec![],
            require_log: false,
        };
        put_policy(&mut tx, &n).unwrap();
        tx.commit().unwrap();
        assert_eq!(effective_policy(&mut db, "n", "g").unwrap(), Some(n));
        assert_eq!(policy_scopes(&mut db).unwrap(), ["group:g", "node:n"]);
        // Setting a scope again replaces its allowed values and events,
        // not adds to them.
        let mut tx = db.transaction().unwrap();
        let g2 = Policy {
            allowed: vec![(7, vec![1; 32])],
            events: vec![],
            ..g
        };
        put_policy(&mut tx, &g2).unwrap();
        tx.commit().unwrap();
        assert_eq!(get_policy(&mut db, "group:g").unwrap(), Some(g2));
    }
}
