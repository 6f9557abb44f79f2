//! API keys shared by the nodes: the secret their texts are hashed under
//! (the first node's, taken on by the others) and every key with its
//! revocation, each node keeping a copy in its own access store.

use super::{Coordination, CoordinationError};
use crate::access::{KeyRecord, Scope};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally_access_secret (
    id     integer PRIMARY KEY CHECK (id = 1),
    secret bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS tally_api_keys (
    id                  text PRIMARY KEY,
    project             text NOT NULL,
    scope               text NOT NULL,
    name                text NOT NULL,
    hash                text NOT NULL,
    created_ms          bigint NOT NULL,
    expires_ms          bigint,
    revoked_ms          bigint,
    requests_per_second double precision,
    records_per_second  double precision,
    changed_ms          bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tally_api_keys_changed ON tally_api_keys (changed_ms);
";

/// A key as the cluster keeps it (its last use stays with each node), and
/// when it last changed.
#[derive(Debug, Clone)]
pub struct SharedKey {
    pub key: KeyRecord,
    pub changed_ms: i64,
}

const PUSH: &str = "
INSERT INTO tally_api_keys (id, project, scope, name, hash, created_ms, expires_ms, revoked_ms,
    requests_per_second, records_per_second, changed_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET
    revoked_ms = coalesce(tally_api_keys.revoked_ms, EXCLUDED.revoked_ms),
    changed_ms = greatest(tally_api_keys.changed_ms, EXCLUDED.changed_ms)
";

impl Coordination {
    /// The cluster's access secret: `mine` when no node stored one yet.
    pub async fn access_secret(&self, mine: &[u8]) -> Result<Vec<u8>, CoordinationError> {
        self.bounded(self.client.execute(
            "INSERT INTO tally_access_secret (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
            &[&mine],
        ))
        .await?;
        let row = self
            .bounded(self.client.query_one("SELECT secret FROM tally_access_secret", &[]))
            .await?;
        Ok(row.get(0))
    }

    /// Stores `keys`: new ones whole, known ones revoked if either copy is.
    pub async fn push_keys(&self, keys: &[SharedKey]) -> Result<(), CoordinationError> {
        for shared in keys {
            let k = &shared.key;
            self.bounded(self.client.execute(
                PUSH,
                &[
                    &k.id,
                    &k.project,
                    &k.scope.as_str(),
                    &k.name,
                    &k.hash,
                    &k.created_ms,
                    &k.expires_ms,
                    &k.revoked_ms,
                    &k.requests_per_second,
                    &k.records_per_second,
                    &shared.changed_ms,
                ],
            ))
            .await?;
        }
        Ok(())
    }

    /// The keys changed since `since_ms`.
    pub async fn keys_changed_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<SharedKey>, CoordinationError> {
        let rows = self
            .bounded(self.client.query(
                "SELECT id, project, scope, name, hash, created_ms, expires_ms, revoked_ms, \
                 requests_per_second, records_per_second, changed_ms FROM tally_api_keys \
                 WHERE changed_ms > $1",
                &[&since_ms],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| SharedKey {
                key: KeyRecord {
                    id: r.get(0),
                    project: r.get(1),
                    scope: Scope::parse(r.get(2)).unwrap_or(Scope::Read),
                    name: r.get(3),
                    hash: r.get(4),
                    created_ms: r.get(5),
                    expires_ms: r.get(6),
                    revoked_ms: r.get(7),
                    last_used_ms: None,
                    requests_per_second: r.get(8),
                    records_per_second: r.get(9),
                },
                changed_ms: r.get(10),
            })
            .collect())
    }
}
