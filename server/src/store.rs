//! The server's persisted state: SQLite (schema + migrations) in the state
//! folder, overlay blobs as files named by their SHA-256 next to it.
//!
//! Every admin command runs in one transaction, so a failed command leaves
//! nothing half-written.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// Ordered schema migrations; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
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
    CREATE TABLE overlays (
        version_id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 BLOB NOT NULL,
        size INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at INTEGER NOT NULL
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
pub fn lock_down(state: &StateDir) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let root = state.root();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("create state folder {}", root.display()))?;
    fn walk(dir: &Path) -> Result<()> {
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

/// Opens (creating if needed) the database and brings its schema up to date.
pub fn open(state: &StateDir) -> Result<Connection> {
    lock_down(state)?;
    std::fs::create_dir_all(state.blobs())?;
    let mut conn =
        Connection::open(state.db()).with_context(|| format!("open {}", state.db().display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    // Table rebuilds (migration 2) need foreign keys off while they run.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = migrate_all(conn);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    result
}

fn migrate_all(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: usize =
        tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        bail!(
            "state database has schema version {applied}, newer than this ember ({})",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)
            .with_context(|| format!("schema migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
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

pub fn get_policy(conn: &Connection, scope: &str) -> Result<Option<Policy>> {
    let row = conn
        .query_row(
            "SELECT hash_alg, mask, mode, event_log FROM pcr_policies WHERE scope = ?1",
            [scope],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((hash_alg, mask, mode, event_log)) = row else {
        return Ok(None);
    };
    let mut stmt =
        conn.prepare("SELECT pcr, value FROM pcr_allowed WHERE scope = ?1 ORDER BY pcr, value")?;
    let allowed = stmt
        .query_map([scope], |r| {
            Ok((r.get::<_, i64>(0)? as u8, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare(
        "SELECT pcr, value, label, digest FROM pcr_events WHERE scope = ?1 ORDER BY pcr, value, seq",
    )?;
    let rows = stmt
        .query_map([scope], |r| {
            Ok((
                r.get::<_, i64>(0)? as u8,
                r.get::<_, Vec<u8>>(1)?,
                ember_tpm::eventlog::Expected {
                    label: r.get(2)?,
                    digest: r.get(3)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut events: Vec<AllowedEvents> = Vec::new();
    for (pcr, value, e) in rows {
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
        hash_alg: hash_alg as u16,
        mask: mask as u32,
        record: mode == "record",
        allowed,
        events,
        require_log: event_log == "required",
    }))
}

pub fn put_policy(tx: &Transaction, p: &Policy) -> Result<()> {
    tx.execute("DELETE FROM pcr_policies WHERE scope = ?1", [&p.scope])?;
    tx.execute(
        "INSERT INTO pcr_policies(scope, hash_alg, mask, mode, updated_at, event_log) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![p.scope, p.hash_alg as i64, p.mask as i64, if p.record { "record" } else { "values" }, now_ms(),
            if p.require_log { "required" } else { "optional" }],
    )?;
    for a in &p.events {
        for (seq, e) in a.events.iter().enumerate() {
            tx.execute(
                "INSERT OR REPLACE INTO pcr_events(scope, pcr, value, seq, label, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.scope, a.pcr as i64, a.value, seq as i64, e.label, e.digest],
            )?;
        }
    }
    for (pcr, value) in &p.allowed {
        tx.execute(
            "INSERT OR IGNORE INTO pcr_allowed(scope, pcr, value) VALUES (?1, ?2, ?3)",
            params![p.scope, *pcr as i64, value],
        )?;
    }
    Ok(())
}

/// The policy that applies to a node: its own, its group's, the default;
/// `None` when none is set.
pub fn effective_policy(conn: &Connection, node_name: &str, group: &str) -> Result<Option<Policy>> {
    for scope in [
        format!("node:{node_name}"),
        format!("group:{group}"),
        "default".to_string(),
    ] {
        if let Some(p) = get_policy(conn, &scope)? {
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

pub fn node_by_ek_hash(conn: &Connection, ek_hash: &[u8; 32]) -> Result<Option<Node>> {
    Ok(conn
        .query_row(
            "SELECT id, name, group_name FROM nodes WHERE ek_hash = ?1",
            [&ek_hash[..]],
            |r| {
                Ok(Node {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    group: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub fn node_by_name(conn: &Connection, name: &str) -> Result<Option<Node>> {
    Ok(conn
        .query_row(
            "SELECT id, name, group_name FROM nodes WHERE name = ?1",
            [name],
            |r| {
                Ok(Node {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    group: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub fn ensure_group(tx: &Transaction, group: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO groups(name, created_at) VALUES (?1, ?2)",
        params![group, now_ms()],
    )?;
    Ok(())
}

#[cfg(test)]
pub fn group_exists(conn: &Connection, group: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM groups WHERE name = ?1", [group], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn insert_node(
    tx: &Transaction,
    ek_hash: &[u8; 32],
    ek_cert: Option<&[u8]>,
    name: &str,
    group: &str,
    enrolled_by: &str,
) -> Result<Node> {
    ensure_group(tx, group)?;
    if node_by_ek_hash(tx, ek_hash)?.is_some() {
        bail!("this EK is already enrolled");
    }
    if node_by_name(tx, name)?.is_some() {
        bail!("a node named {name:?} already exists");
    }
    tx.execute(
        "INSERT INTO nodes(ek_hash, ek_cert, name, group_name, enrolled_at, enrolled_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![&ek_hash[..], ek_cert, name, group, now_ms(), enrolled_by],
    )?;
    Ok(Node {
        id: tx.last_insert_rowid(),
        name: name.into(),
        group: group.into(),
    })
}

#[derive(Debug, Clone)]
pub struct Overlay {
    pub version_id: i64,
    pub sha256: [u8; 32],
    pub size: u64,
}

fn overlay_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Overlay> {
    let sha: Vec<u8> = r.get(1)?;
    let mut sha256 = [0u8; 32];
    if sha.len() == 32 {
        sha256.copy_from_slice(&sha);
    }
    Ok(Overlay {
        version_id: r.get(0)?,
        sha256,
        size: r.get::<_, i64>(2)? as u64,
    })
}

pub fn overlay(conn: &Connection, version_id: i64) -> Result<Option<Overlay>> {
    Ok(conn
        .query_row(
            "SELECT version_id, sha256, size FROM overlays WHERE version_id = ?1",
            [version_id],
            overlay_row,
        )
        .optional()?)
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
pub fn assigned_overlay(conn: &Connection, node: &Node) -> Result<Option<Assigned>> {
    for target in [
        format!("node:{}", node.name),
        format!("group:{}", node.group),
    ] {
        let row = conn
            .query_row(
                "SELECT o.version_id, a.manifest, o.data_key FROM assignments a JOIN overlays o USING (version_id) WHERE a.target = ?1",
                [&target],
                |r| {
                    Ok(Assigned {
                        version_id: r.get(0)?,
                        manifest: r.get(1)?,
                        data_key: r.get(2)?,
                    })
                },
            )
            .optional()?;
        if row.is_some() {
            return Ok(row);
        }
    }
    Ok(None)
}

/// Started, unfinished, unexpired sessions of one EK.
pub fn open_sessions_of_ek(conn: &Connection, ek_hash: &[u8; 32], now: i64) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM sessions WHERE ek_hash = ?1 AND state = 'started' AND expires_at > ?2",
        params![&ek_hash[..], now],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Started, unfinished, unexpired sessions one client address opened.
pub fn open_sessions_of_peer(conn: &Connection, peer: &str, now: i64) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM sessions WHERE peer = ?1 AND state = 'started' AND expires_at > ?2",
        params![peer, now],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Started, unfinished, unexpired sessions (the metrics gauge).
pub fn open_sessions(conn: &Connection, now: i64) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM sessions WHERE state = 'started' AND expires_at > ?1",
        [now],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Deletes expired credentials and the sessions (with their secrets) no
/// credential needs any more; returns (credentials, sessions) removed.
pub fn purge_expired(conn: &Connection, now: i64) -> Result<(usize, usize)> {
    let creds = conn.execute("DELETE FROM credentials WHERE expires_at < ?1", [now])?;
    let sessions = conn.execute(
        "DELETE FROM sessions WHERE expires_at < ?1 AND id NOT IN (SELECT session_id FROM credentials)",
        [now],
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
        drop(open(&s).unwrap());
        let conn = open(&s).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        assert!(group_exists(&conn, "default").unwrap());
    }

    #[test]
    fn migration_2_keeps_sessions_and_credentials_of_a_version_1_database() {
        let (_d, s) = scratch();
        std::fs::create_dir_all(s.root()).unwrap();
        {
            let conn = Connection::open(s.db()).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO nodes(id, ek_hash, name, group_name, enrolled_at, enrolled_by) VALUES (7, x'aa', 'a', 'default', 0, 't');
                 INSERT INTO sessions VALUES (x'01', 7, x'00', x'00', x'00', x'00', 11, 1, 0, 99, 'finished');
                 INSERT INTO credentials(hash, session_id, node_id, expires_at) VALUES (x'02', x'01', 7, 99);",
            )
            .unwrap();
        }
        let conn = open(&s).unwrap();
        let (node, ek, peer): (i64, Vec<u8>, String) = conn
            .query_row(
                "SELECT node_id, ek_hash, peer FROM sessions WHERE id = x'01'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((node, ek, peer), (7, vec![0xaa], String::new()));
        let fk: i64 = conn
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk, 0, "credentials still reference their sessions");
        assert_eq!(open_sessions_of_ek(&conn, &[0; 32], 0).unwrap(), 0);
    }

    #[test]
    fn failed_enrolment_leaves_nothing_behind() {
        let (_d, s) = scratch();
        let mut conn = open(&s).unwrap();
        let tx = conn.transaction().unwrap();
        insert_node(&tx, &[1; 32], None, "a", "rack1", "test").unwrap();
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        // New group created, then the duplicate name fails: the group must not remain.
        assert!(insert_node(&tx, &[2; 32], None, "a", "rack2", "test").is_err());
        drop(tx);
        assert!(!group_exists(&conn, "rack2").unwrap());
        assert!(node_by_ek_hash(&conn, &[2; 32]).unwrap().is_none());
    }

    #[test]
    fn purge_drops_expired_sessions_but_keeps_those_a_credential_needs() {
        let (_d, s) = scratch();
        let mut conn = open(&s).unwrap();
        let tx = conn.transaction().unwrap();
        let n = insert_node(&tx, &[1; 32], None, "a", "default", "test").unwrap();
        tx.commit().unwrap();
        for (id, expires) in [(1u8, 10i64), (2, 10), (3, 1000)] {
            conn.execute(
                "INSERT INTO sessions(id, node_id, ek_hash, peer, secret, nonce, ak_public, transcript, hash_alg, mask, created_at, expires_at, state)
                 VALUES (?1, ?2, x'01', '127.0.0.1', x'00', x'00', x'00', x'00', 11, 1, 0, ?3, 'finished')",
                params![vec![id; 16], n.id, expires],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO credentials(hash, session_id, node_id, expires_at) VALUES (x'01', ?1, ?2, 1000)",
            params![vec![2u8; 16], n.id],
        )
        .unwrap();
        assert_eq!(purge_expired(&conn, 100).unwrap(), (0, 1));
        assert_eq!(purge_expired(&conn, 2000).unwrap(), (1, 2));
    }

    #[test]
    fn node_policy_overrides_group_and_default() {
        let (_d, s) = scratch();
        let mut conn = open(&s).unwrap();
        assert_eq!(effective_policy(&conn, "n", "g").unwrap(), None);
        let tx = conn.transaction().unwrap();
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
        put_policy(&tx, &g).unwrap();
        tx.commit().unwrap();
        assert_eq!(effective_policy(&conn, "n", "g").unwrap(), Some(g));
        let tx = conn.transaction().unwrap();
        let n = Policy {
            scope: "node:n".into(),
            hash_alg: 11,
            mask: 0x1,
            record: true,
            allowed: vec![],
            events: vec![],
            require_log: false,
        };
        put_policy(&tx, &n).unwrap();
        tx.commit().unwrap();
        assert_eq!(effective_policy(&conn, "n", "g").unwrap(), Some(n));
    }
}
