//! Claims on call keys (a report's id, a call's span): the first node to
//! claim a key counts the call; a call whose key another node holds is a
//! duplicate everywhere once that node confirms it committed the call, and
//! undecided until then. A commit's keys are claimed in one round trip, in
//! key order (two batches taking the same keys in different orders could
//! otherwise deadlock), together with the confirmations of earlier commits.

use super::{Coordination, CoordinationError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally_claims (
    project    text NOT NULL,
    key        text NOT NULL,
    node       text NOT NULL,
    committed  boolean NOT NULL DEFAULT false,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, key)
);
CREATE INDEX IF NOT EXISTS tally_claims_unconfirmed ON tally_claims (node) WHERE NOT committed;
";

/// Who holds a key after a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This claim took it: the record counts here.
    Taken,
    /// This node took it before (a retry after a crash between the claim
    /// and the local commit): the record counts here, once.
    Ours,
    /// Another node holds it; `committed` once it confirmed it committed
    /// the record (a duplicate), not yet otherwise (undecided).
    Theirs { node: String, committed: bool },
}

/// Splits (project, key) pairs into the two arrays a statement binds.
fn columns<'a>(keys: impl Iterator<Item = &'a (String, String)>) -> (Vec<&'a str>, Vec<&'a str>) {
    keys.map(|(p, k)| (p.as_str(), k.as_str())).unzip()
}

impl Coordination {
    /// Claims `keys` ((project, key) pairs) for this node and confirms
    /// `confirm` (keys this node claimed and has since committed), in one
    /// round trip; the answer is in the order of `keys`. A key given twice
    /// gets the same answer twice.
    pub async fn claim(
        &self,
        keys: &[(String, String)],
        confirm: &[(String, String)],
    ) -> Result<Vec<Claim>, CoordinationError> {
        let mut order: Vec<&(String, String)> = keys.iter().collect();
        order.sort_unstable();
        order.dedup();
        let (projects, names) = columns(order.into_iter());
        let mut confirm: Vec<&(String, String)> = confirm.iter().collect();
        confirm.sort_unstable();
        confirm.dedup();
        let (confirm_projects, confirm_names) = columns(confirm.into_iter());
        let rows = self
            .bounded(self.client.query(
                "WITH confirmed AS (
                     UPDATE tally_claims SET committed = true
                     WHERE node = $3 AND NOT committed AND (project, key) IN
                         (SELECT * FROM unnest($4::text[], $5::text[]))
                 ), wanted AS (
                     SELECT p, k FROM unnest($1::text[], $2::text[]) AS t(p, k) ORDER BY p, k
                 ), taken AS (
                     INSERT INTO tally_claims (project, key, node)
                     SELECT p, k, $3 FROM wanted
                     ON CONFLICT DO NOTHING
                     RETURNING project, key
                 )
                 SELECT w.p, w.k, c.node, c.committed, (t.key IS NOT NULL) AS taken
                 FROM wanted w
                 LEFT JOIN taken t ON t.project = w.p AND t.key = w.k
                 LEFT JOIN tally_claims c ON c.project = w.p AND c.key = w.k",
                &[&projects, &names, &self.node, &confirm_projects, &confirm_names],
            ))
            .await?;
        let mut holders = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let (project, key): (String, String) = (row.get(0), row.get(1));
            let node: Option<String> = row.get(2);
            let committed: Option<bool> = row.get(3);
            let claim = if row.get::<_, bool>(4) {
                Claim::Taken
            } else {
                match node {
                    Some(node) if node == self.node => Claim::Ours,
                    Some(node) => Claim::Theirs { node, committed: committed.unwrap_or(false) },
                    // Taken by a transaction that committed after this
                    // statement's snapshot: another node's, not yet
                    // confirmed.
                    None => Claim::Theirs { node: String::new(), committed: false },
                }
            };
            holders.insert((project, key), claim);
        }
        let undecided = Claim::Theirs { node: String::new(), committed: false };
        Ok(keys.iter().map(|k| holders.get(k).cloned().unwrap_or(undecided.clone())).collect())
    }

    /// This node's claims not yet confirmed (at most `limit`): after a
    /// crash, those of calls it did commit are confirmed and the others
    /// given back.
    pub async fn unconfirmed(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String)>, CoordinationError> {
        let rows = self
            .bounded(self.client.query(
                "SELECT project, key FROM tally_claims WHERE node = $1 AND NOT committed \
                 ORDER BY project, key LIMIT $2",
                &[&self.node, &limit],
            ))
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Gives back claims of this node not confirmed (calls it never
    /// committed), so that another node may count them.
    pub async fn release(&self, keys: &[(String, String)]) -> Result<u64, CoordinationError> {
        let (projects, names) = columns(keys.iter());
        self.bounded(self.client.execute(
            "DELETE FROM tally_claims WHERE node = $1 AND NOT committed AND (project, key) IN \
             (SELECT * FROM unnest($2::text[], $3::text[]))",
            &[&self.node, &projects, &names],
        ))
        .await
    }

    /// Whether the connection still stands (a server restart ends it).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}
