//! Where projects, keys and the audit log are kept: `access.db` in the
//! data dir (SQLite, WAL), beside the secret keys are hashed under. A
//! server and `tally keys … --data-dir` may use it at the same time.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditEntry, KeyRecord, Project, Scope};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    last_used_ms INTEGER,
    requests_per_second REAL,
    records_per_second REAL,
    -- Bumped by every change but last use, so listeners reload.
    changed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    key_id TEXT,
    project TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS audit_project ON audit (project, id);
";

#[derive(Debug, thiserror::Error)]
pub enum AccessStoreError {
    #[error("access store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("access secret {path}: {source}")]
    Secret { path: String, source: std::io::Error },
}

/// The access data of one data dir.
pub struct AccessStore {
    conn: Mutex<Connection>,
    /// What keys are hashed under (`access.secret`, 32 random bytes).
    secret: Vec<u8>,
}

/// What a change to the keys looks like from outside: reload when it moves.
pub type KeysVersion = (i64, i64);

impl AccessStore {
    /// Opens (creating when missing) the access store of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<AccessStore, AccessStoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| AccessStoreError::Secret {
            path: data_dir.display().to_string(),
            source,
        })?;
        let secret = secret(&data_dir.join("access.secret"))?;
        let conn = Connection::open(data_dir.join("access.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(AccessStore { conn: Mutex::new(conn), secret })
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn keys_version(&self) -> Result<KeysVersion, AccessStoreError> {
        Ok(self.conn().query_row(
            "SELECT count(*), coalesce(max(changed_ms), 0) FROM api_keys",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    pub fn keys(&self) -> Result<Vec<KeyRecord>, AccessStoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, project, scope, name, hash, created_ms, expires_ms, revoked_ms, \
             last_used_ms, requests_per_second, records_per_second FROM api_keys ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let scope: String = r.get(2)?;
            Ok(KeyRecord {
                id: r.get(0)?,
                project: r.get(1)?,
                scope: Scope::parse(&scope).unwrap_or(Scope::Read),
                name: r.get(3)?,
                hash: r.get(4)?,
                created_ms: r.get(5)?,
                expires_ms: r.get(6)?,
                revoked_ms: r.get(7)?,
                last_used_ms: r.get(8)?,
                requests_per_second: r.get(9)?,
                records_per_second: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn key_count(&self) -> Result<usize, AccessStoreError> {
        Ok(self.conn().query_row("SELECT count(*) FROM api_keys", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    /// Adds a key (and its project, when new).
    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), AccessStoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO projects (name, created_ms) VALUES (?1, ?2)",
            params![key.project, key.created_ms],
        )?;
        tx.execute(
            "INSERT INTO api_keys (id, project, scope, name, hash, created_ms, expires_ms, \
             revoked_ms, last_used_ms, requests_per_second, records_per_second, changed_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, ?9, ?6)",
            params![
                key.id,
                key.project,
                key.scope.as_str(),
                key.name,
                key.hash,
                key.created_ms,
                key.expires_ms,
                key.requests_per_second,
                key.records_per_second,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Revokes key `id` of `project` (any project when None) at `now`;
    /// false when there is no such key. Revoking twice keeps the first time.
    pub fn revoke(
        &self,
        id: &str,
        project: Option<&str>,
        now: i64,
    ) -> Result<bool, AccessStoreError> {
        let changed = self.conn().execute(
            "UPDATE api_keys SET revoked_ms = coalesce(revoked_ms, ?2), changed_ms = max(changed_ms + 1, ?2) \
             WHERE id = ?1 AND (?3 IS NULL OR project = ?3)",
            params![id, now, project],
        )?;
        Ok(changed > 0)
    }

    /// Records when keys were last used (coarse: written a minute at a time).
    pub fn touch(&self, used: &[(String, i64)]) -> Result<(), AccessStoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE api_keys SET last_used_ms = max(coalesce(last_used_ms, 0), ?2) WHERE id = ?1",
            )?;
            for (id, at) in used {
                stmt.execute(params![id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn projects(&self) -> Result<Vec<Project>, AccessStoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, created_ms FROM projects ORDER BY name")?;
        let rows =
            stmt.query_map([], |r| Ok(Project { name: r.get(0)?, created_ms: r.get(1)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn project_exists(&self, name: &str) -> Result<bool, AccessStoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM projects WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn project_count(&self) -> Result<usize, AccessStoreError> {
        Ok(self.conn().query_row("SELECT count(*) FROM projects", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), AccessStoreError> {
        self.conn().execute(
            "INSERT INTO audit (time_ms, key_id, project, action, target, client) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.time_ms,
                entry.key_id,
                entry.project,
                entry.action,
                entry.target,
                entry.client
            ],
        )?;
        Ok(())
    }

    /// The newest `limit` entries of `project` (all when None) before id
    /// `before`, newest first, with their ids.
    pub fn audit(
        &self,
        project: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, AuditEntry)>, AccessStoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, time_ms, key_id, project, action, target, client FROM audit \
             WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR id < ?2) \
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![project, before, limit as i64], |r| {
            Ok((
                r.get(0)?,
                AuditEntry {
                    time_ms: r.get(1)?,
                    key_id: r.get(2)?,
                    project: r.get(3)?,
                    action: r.get(4)?,
                    target: r.get(5)?,
                    client: r.get(6)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes audit entries older than `cutoff_ms`.
    pub fn expire_audit(&self, cutoff_ms: i64) -> Result<usize, AccessStoreError> {
        Ok(self.conn().execute("DELETE FROM audit WHERE time_ms < ?1", [cutoff_ms])?)
    }
}

/// The secret at `path`, made (32 random bytes, mode 0600) when missing.
fn secret(path: &Path) -> Result<Vec<u8>, AccessStoreError> {
    let io = |source| AccessStoreError::Secret { path: path.display().to_string(), source };
    match std::fs::read(path) {
        Ok(secret) if secret.len() >= 32 => Ok(secret),
        Ok(_) => Err(io(std::io::Error::other(
            "shorter than 32 bytes; every key was hashed under it, so it is not replaced",
        ))),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io(err)),
        Err(_) => {
            use std::io::Write;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt;
            let secret = rand::random::<[u8; 32]>().to_vec();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            options.mode(0o600);
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&secret).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(secret)
        }
    }
}
