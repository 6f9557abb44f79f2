//! Where projects, keys and the audit log are kept: `access.db` in the
//! data dir (SQLite, WAL), beside the secret keys are hashed under. A
//! server and `tally keys … --data-dir` may use it at the same time.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditEntry, KeyRecord, Project, Scope};
use crate::coordination::access::SharedKey;

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

/// What a change to the keys looks like from outside: reload when it moves
/// (keys, latest change, revoked keys).
pub type KeysVersion = (i64, i64, i64);

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
            "SELECT count(*), coalesce(max(changed_ms), 0), count(revoked_ms) FROM api_keys",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }

    /// The keys changed since `since_ms` (for the cluster), with when.
    pub fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<SharedKey>, AccessStoreError> {
        let changed: Vec<(String, i64)> = {
            let conn = self.conn();
            let mut stmt =
                conn.prepare("SELECT id, changed_ms FROM api_keys WHERE changed_ms > ?1")?;
            let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: std::collections::HashMap<String, KeyRecord> =
            self.keys()?.into_iter().map(|k| (k.id.clone(), k)).collect();
        Ok(changed
            .into_iter()
            .filter_map(|(id, changed_ms)| {
                keys.remove(&id).map(|key| SharedKey { key, changed_ms })
            })
            .collect())
    }

    /// Takes on keys from the cluster: new ones whole (their projects too),
    /// known ones revoked if either copy is. A key changes only when it
    /// gains something, so what is taken on is not handed back as new.
    pub fn merge_keys(&self, keys: &[SharedKey]) -> Result<(), AccessStoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for SharedKey { key, changed_ms } in keys {
            write_key(&tx, MERGE_KEY, key, *changed_ms)?;
        }
        tx.commit()?;
        Ok(())
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
        write_key(&tx, INSERT_KEY, key, key.created_ms)?;
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

/// A key's row (its last use left out), changed at `?11`.
const INSERT_KEY: &str = "INSERT INTO api_keys (id, project, scope, name, hash, created_ms, \
    expires_ms, revoked_ms, last_used_ms, requests_per_second, records_per_second, changed_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10, ?11)";

/// `INSERT_KEY`, or for a key already there, its revocation if it has none.
const MERGE_KEY: &str = "INSERT INTO api_keys (id, project, scope, name, hash, created_ms, \
    expires_ms, revoked_ms, last_used_ms, requests_per_second, records_per_second, changed_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10, ?11) \
    ON CONFLICT (id) DO UPDATE SET \
    revoked_ms = coalesce(api_keys.revoked_ms, excluded.revoked_ms), \
    changed_ms = max(api_keys.changed_ms, excluded.changed_ms) \
    WHERE api_keys.revoked_ms IS NULL AND excluded.revoked_ms IS NOT NULL";

/// Writes `key` (and its project, when new) with `statement`.
fn write_key(
    tx: &rusqlite::Transaction<'_>,
    statement: &str,
    key: &KeyRecord,
    changed_ms: i64,
) -> Result<(), AccessStoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO projects (name, created_ms) VALUES (?1, ?2)",
        params![key.project, key.created_ms],
    )?;
    tx.execute(
        statement,
        params![
            key.id,
            key.project,
            key.scope.as_str(),
            key.name,
            key.hash,
            key.created_ms,
            key.expires_ms,
            key.revoked_ms,
            key.requests_per_second,
            key.records_per_second,
            changed_ms,
        ],
    )?;
    Ok(())
}

/// The access secret of `data_dir` (made when missing).
pub fn data_dir_secret(data_dir: &Path) -> Result<Vec<u8>, AccessStoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| AccessStoreError::Secret {
        path: data_dir.display().to_string(),
        source,
    })?;
    secret(&data_dir.join("access.secret"))
}

/// Makes `cluster` the access secret of `data_dir`, as a node joining a
/// cluster must: refused while the data dir holds keys made under another
/// secret (they would stop working).
pub fn adopt_secret(data_dir: &Path, cluster: &[u8]) -> Result<(), AccessStoreError> {
    let path = data_dir.join("access.secret");
    if data_dir_secret(data_dir)? == cluster {
        return Ok(());
    }
    let keys = AccessStore::open(data_dir)?.key_count()?;
    if keys > 0 {
        return Err(AccessStoreError::Secret {
            path: path.display().to_string(),
            source: std::io::Error::other(format!(
                "this data dir holds {keys} API keys made under another secret than the cluster's (kept in PostgreSQL by the first node): start it with a data dir without keys, or move its access.db aside, and create keys through any node of the cluster"
            )),
        });
    }
    write_secret(&path, cluster)
}

/// Writes `secret` to `path` (mode 0600), durably.
fn write_secret(path: &Path, secret: &[u8]) -> Result<(), AccessStoreError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AccessStoreError::Secret { path: path.display().to_string(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(secret).map_err(io)?;
    file.sync_all().map_err(io)
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
            let secret = rand::random::<[u8; 32]>().to_vec();
            write_secret(path, &secret)?;
            Ok(secret)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, revoked_ms: Option<i64>, changed_ms: i64) -> SharedKey {
        SharedKey {
            key: KeyRecord {
                id: id.into(),
                project: "p".into(),
                scope: Scope::Read,
                name: String::new(),
                hash: "00".into(),
                created_ms: 1,
                expires_ms: None,
                revoked_ms,
                last_used_ms: None,
                requests_per_second: None,
                records_per_second: None,
            },
            changed_ms,
        }
    }

    #[test]
    fn a_data_dir_takes_the_clusters_secret_unless_it_holds_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = [7u8; 32];
        adopt_secret(dir.path(), &cluster).unwrap();
        assert_eq!(AccessStore::open(dir.path()).unwrap().secret(), &cluster);
        let store = AccessStore::open(dir.path()).unwrap();
        store.merge_keys(&[key("a", None, 5)]).unwrap();
        let err = adopt_secret(dir.path(), &[8u8; 32]).unwrap_err().to_string();
        assert!(err.contains("1 API keys made under another secret"), "{err}");
        assert_eq!(data_dir_secret(dir.path()).unwrap(), cluster, "left as it was");
    }

    #[test]
    fn merged_keys_gain_revocations_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::open(dir.path()).unwrap();
        store.merge_keys(&[key("a", None, 5), key("b", Some(9), 9)]).unwrap();
        let before = store.keys_version().unwrap();
        assert_eq!(before, (2, 9, 1));
        // The same again, and an older copy without the revocation: no change.
        store.merge_keys(&[key("a", None, 5), key("b", None, 3)]).unwrap();
        assert_eq!(store.keys_version().unwrap(), before);
        // A revocation from another node moves the version even with an
        // older change time.
        store.merge_keys(&[key("a", Some(4), 4)]).unwrap();
        let keys = store.keys().unwrap();
        assert_eq!(keys.iter().find(|k| k.id == "a").unwrap().revoked_ms, Some(4));
        assert_eq!(store.keys_version().unwrap(), (2, 9, 2));
        assert_eq!(store.keys_changed_since(4).unwrap().len(), 2);
        assert_eq!(store.keys_changed_since(5).unwrap().len(), 1);
    }
}
