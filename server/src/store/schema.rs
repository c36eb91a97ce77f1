//! The schema: one ordered list of migrations for both backends, written
//! once in the SQL both dialects read, and the code that brings a
//! database up to date in one transaction.

use super::db::{Db, Dialect, Error, Result, Sql, Tx};
use crate::params;

/// Ordered schema migrations, written once in the SQL both dialects read
/// (SQLite's type names; [`postgres_ddl`] maps them). A migration that
/// cannot be shared has its PostgreSQL text in [`POSTGRES_MIGRATIONS`].
/// SQLite records how many ran in `user_version`, PostgreSQL in
/// `ember_schema`.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 6: every boot's phase table (issue 26). A node's Report carries the
    // phases its init ran; each is a row, so the console's per-phase
    // percentiles are one query. The overlay stage counters ride on the
    // report itself (NULL for a report without a table: an old node, an
    // attestation, a refusal). An attestation keeps the UKI Finish
    // identified (the console's "booted UKI"; sessions are purged), and
    // operators get client certificates for the console.
    r#"
    ALTER TABLE boot_reports ADD COLUMN boot_image BLOB;
    ALTER TABLE boot_reports ADD COLUMN timeline_version INTEGER;
    ALTER TABLE boot_reports ADD COLUMN overlay_sealed_bytes INTEGER;
    ALTER TABLE boot_reports ADD COLUMN overlay_plain_bytes INTEGER;
    ALTER TABLE boot_reports ADD COLUMN overlay_receive_ms INTEGER;
    ALTER TABLE boot_reports ADD COLUMN overlay_open_ms INTEGER;
    ALTER TABLE boot_reports ADD COLUMN overlay_unpack_ms INTEGER;
    ALTER TABLE boot_reports ADD COLUMN overlay_write_ms INTEGER;
    CREATE TABLE boot_phases (
        report_id INTEGER NOT NULL REFERENCES boot_reports(id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        took_ms INTEGER NOT NULL,
        cpu_ms INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
        PRIMARY KEY (report_id, seq)
    );
    CREATE INDEX boot_phases_name ON boot_phases(name);
    CREATE TABLE operators (
        name TEXT PRIMARY KEY,
        cert_sha256 BLOB NOT NULL UNIQUE,
        issued_at INTEGER NOT NULL,
        issued_by TEXT NOT NULL,
        revoked_at INTEGER
    );
    "#,
    // 7: rollouts (issue 29). A rollout moves one group from one UKI to
    // another in waves; each of the group's nodes has a row saying which
    // wave it is in and where it stands, decided by the server's ticks
    // (any replica: the rollout's row lock orders them). Its timeline is
    // kept as events. Reboot locks (FleetLock-style): one row per node
    // that holds one.
    r#"
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        group_name TEXT NOT NULL REFERENCES groups(name),
        target BLOB NOT NULL,
        target_script BLOB NOT NULL,
        previous BLOB NOT NULL,
        previous_script BLOB NOT NULL,
        canary INTEGER NOT NULL,
        wave_count INTEGER,
        wave_percent INTEGER,
        max_in_flight INTEGER NOT NULL,
        failure_budget INTEGER NOT NULL,
        soak_ms INTEGER NOT NULL,
        timeout_ms INTEGER NOT NULL,
        auto_revert INTEGER NOT NULL,
        max_rebooting INTEGER NOT NULL,
        windows TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'halted', 'done', 'aborted')),
        wave INTEGER NOT NULL,
        soak_until INTEGER,
        reason TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        started_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX rollouts_group ON rollouts(group_name, state);
    CREATE TABLE rollout_nodes (
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        wave INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('waiting', 'handed', 'upgraded', 'failed', 'reverted')),
        handed_at INTEGER,
        since_report INTEGER,               -- the node's newest report id when handed
        settled_at INTEGER,
        reason TEXT NOT NULL,
        PRIMARY KEY (rollout_id, node_id)
    );
    CREATE INDEX rollout_nodes_node ON rollout_nodes(node_id);
    CREATE TABLE rollout_events (
        id INTEGER PRIMARY KEY,
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
        at INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX rollout_events_rollout ON rollout_events(rollout_id, id);
    CREATE TABLE reboot_locks (
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        group_name TEXT NOT NULL,
        taken_at INTEGER NOT NULL,
        PRIMARY KEY (node_id)
    );
    "#,
    // 8: a refusal's explanation (issue 26): per measurement that differed,
    // what the server expected and what the node quoted, and on the report
    // the command that would allow it. One row per PCR or event, so a
    // refusal naming PCRs 4 and 11 shows both.
    r#"
    ALTER TABLE boot_reports ADD COLUMN fix TEXT;
    CREATE TABLE refusal_explanations (
        report_id INTEGER NOT NULL REFERENCES boot_reports(id),
        seq INTEGER NOT NULL,
        pcr INTEGER,
        what TEXT NOT NULL,
        expected TEXT NOT NULL,
        received TEXT NOT NULL,
        PRIMARY KEY (report_id, seq)
    );
    "#,
    // 9: what is inside each UKI (issue 30). `ember policy set --uki`
    // stores the UKI's SPDX SBOM and the packages it names, so "which
    // nodes run containerd 1.6.20" is answered from the UKI each node's
    // quote identified, never from what a node says.
    r#"
    CREATE TABLE image_sboms (
        sha256 BLOB PRIMARY KEY REFERENCES boot_images(sha256),
        document BLOB NOT NULL,
        stored_at INTEGER NOT NULL
    );
    CREATE TABLE image_packages (
        sha256 BLOB NOT NULL REFERENCES boot_images(sha256),
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        purl TEXT NOT NULL,
        PRIMARY KEY (sha256, name, version, purl)
    );
    CREATE INDEX image_packages_name ON image_packages(name, version);
    CREATE INDEX boot_reports_attested ON boot_reports(node_id, outcome, id);
    "#,
];

/// PostgreSQL's text for the migrations SQLite's cannot share, by number.
pub(super) const POSTGRES_MIGRATIONS: &[(usize, &str)] = &[
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
pub(super) fn migration(dialect: Dialect, number: usize) -> std::borrow::Cow<'static, str> {
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
                Some(r) => r.get("version"),
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
pub(super) fn migrate(db: &mut Db) -> Result<()> {
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
