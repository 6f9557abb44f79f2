//! Claims on idempotency keys (a report's id, a span's trace and span id):
//! the first node to claim a key counts the record; a record whose key
//! another node holds is a duplicate everywhere. A commit's keys are
//! claimed in one round trip, in key order (two batches taking the same
//! keys in different orders could otherwise deadlock).

use super::{Coordination, CoordinationError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally_claims (
    project    text NOT NULL,
    key        text NOT NULL,
    node       text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, key)
);
";

/// Who holds a key after a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This claim took it: the record counts here.
    Taken,
    /// This node took it before (a retry after a crash between the claim
    /// and the local commit): the record counts here, once.
    Ours,
    /// Another node holds it: the record is a duplicate.
    Theirs(String),
}

impl Coordination {
    /// Claims `keys` ((project, key) pairs) for this node; the answer is in
    /// the order of `keys`. A key given twice gets the same answer twice.
    pub async fn claim(&self, keys: &[(String, String)]) -> Result<Vec<Claim>, CoordinationError> {
        let mut order: Vec<&(String, String)> = keys.iter().collect();
        order.sort_unstable();
        order.dedup();
        let projects: Vec<&str> = order.iter().map(|(p, _)| p.as_str()).collect();
        let names: Vec<&str> = order.iter().map(|(_, k)| k.as_str()).collect();
        let rows = self
            .bounded(self.client.query(
                "WITH wanted AS (
                     SELECT p, k FROM unnest($1::text[], $2::text[]) AS t(p, k) ORDER BY p, k
                 ), taken AS (
                     INSERT INTO tally_claims (project, key, node)
                     SELECT p, k, $3 FROM wanted
                     ON CONFLICT DO NOTHING
                     RETURNING project, key
                 )
                 SELECT w.p, w.k, c.node, (t.key IS NOT NULL) AS taken
                 FROM wanted w
                 LEFT JOIN taken t ON t.project = w.p AND t.key = w.k
                 LEFT JOIN tally_claims c ON c.project = w.p AND c.key = w.k",
                &[&projects, &names, &self.node],
            ))
            .await?;
        let mut holders = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let (project, key): (String, String) = (row.get(0), row.get(1));
            let node: Option<String> = row.get(2);
            let claim = if row.get::<_, bool>(3) {
                Claim::Taken
            } else {
                match node {
                    Some(node) if node == self.node => Claim::Ours,
                    Some(node) => Claim::Theirs(node),
                    // Taken by a transaction that committed after this
                    // statement's snapshot: another node's.
                    None => Claim::Theirs(String::new()),
                }
            };
            holders.insert((project, key), claim);
        }
        Ok(keys
            .iter()
            .map(|k| holders.get(k).cloned().unwrap_or(Claim::Theirs(String::new())))
            .collect())
    }
}
