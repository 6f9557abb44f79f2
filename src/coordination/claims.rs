//! Claims on call keys (a report's id, a call's span): the first node to
//! claim a key counts the call; a call whose key another node holds is a
//! duplicate everywhere once that node confirms it committed the call, and
//! undecided until then. A commit's keys are claimed as one batch in one
//! statement (in key order: two batches taking the same keys in different
//! orders could otherwise deadlock); what is confirmed is the batch (one
//! row), with the next claim's round trip, since a node commits a batch's
//! calls in one local transaction: all of them or none.

use super::{Coordination, CoordinationError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally_claim_batches (
    batch      bigserial PRIMARY KEY,
    node       text NOT NULL,
    committed  boolean NOT NULL DEFAULT false,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tally_claim_batches_open ON tally_claim_batches (node) WHERE NOT committed;
CREATE TABLE IF NOT EXISTS tally_claims (
    project text NOT NULL,
    key     text NOT NULL,
    node    text NOT NULL,
    batch   bigint NOT NULL,
    PRIMARY KEY (project, key)
);
CREATE INDEX IF NOT EXISTS tally_claims_batch ON tally_claims (batch);
";

/// Who holds a key after a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This claim took it: the record counts here.
    Taken,
    /// This node took it before (a retry after a failed or crashed commit):
    /// the record counts here, once; the key moves to this claim's batch.
    Ours,
    /// Another node holds it; `committed` once it confirmed it committed
    /// the record (a duplicate), not yet otherwise (undecided).
    Theirs { node: String, committed: bool },
}

/// What one claim round trip gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The batch the keys taken (and this node's own) now belong to: the
    /// one to confirm once they are committed.
    pub batch: i64,
    /// Per key, in the order given.
    pub claims: Vec<Claim>,
}

/// Splits (project, key) pairs into the two arrays a statement binds.
fn columns<'a>(keys: impl Iterator<Item = &'a (String, String)>) -> (Vec<&'a str>, Vec<&'a str>) {
    keys.map(|(p, k)| (p.as_str(), k.as_str())).unzip()
}

impl Coordination {
    /// Claims `keys` ((project, key) pairs) for this node as a new batch, and
    /// confirms the batches `confirm` (this node's, since committed), in
    /// one round trip when every key is new (a second looks up the others).
    /// The answer is in the order of `keys`; a key given twice gets the
    /// same answer twice.
    pub async fn claim(
        &self,
        keys: &[(String, String)],
        confirm: &[i64],
    ) -> Result<Claimed, CoordinationError> {
        let mut order: Vec<&(String, String)> = keys.iter().collect();
        order.sort_unstable();
        order.dedup();
        let (projects, names) = columns(order.iter().copied());
        let rows = self
            .bounded(self.client.query(
                "WITH confirmed AS (
                     UPDATE tally_claim_batches SET committed = true
                     WHERE node = $3 AND batch = ANY($4) AND NOT committed
                 ), batch AS (
                     INSERT INTO tally_claim_batches (node) VALUES ($3) RETURNING batch
                 ), taken AS (
                     INSERT INTO tally_claims (project, key, node, batch)
                     SELECT p, k, $3, (SELECT batch FROM batch)
                     FROM unnest($1::text[], $2::text[]) AS t(p, k)
                     ON CONFLICT DO NOTHING
                     RETURNING project, key
                 )
                 SELECT (SELECT batch FROM batch), count(*) FROM taken",
                &[&projects, &names, &self.node, &confirm],
            ))
            .await?;
        let batch: i64 = rows[0].get(0);
        let taken: i64 = rows[0].get(1);
        let mut holders: std::collections::HashMap<(String, String), Claim> =
            std::collections::HashMap::new();
        if taken as usize != order.len() {
            // Some were held already: who holds them, and moves this node's
            // own into the new batch (their earlier one was never confirmed,
            // or they would be duplicates here too).
            let rows = self
                .bounded(self.client.query(
                    "WITH wanted AS (
                         SELECT p, k FROM unnest($1::text[], $2::text[]) AS t(p, k)
                     ), moved AS (
                         UPDATE tally_claims c SET batch = $4
                         FROM wanted w, tally_claim_batches b
                         WHERE c.project = w.p AND c.key = w.k AND c.node = $3
                           AND c.batch <> $4 AND b.batch = c.batch AND NOT b.committed
                     )
                     SELECT c.project, c.key, c.node, b.committed, c.batch = $4
                     FROM wanted w
                     JOIN tally_claims c ON c.project = w.p AND c.key = w.k
                     JOIN tally_claim_batches b ON b.batch = c.batch",
                    &[&projects, &names, &self.node, &batch],
                ))
                .await?;
            for row in &rows {
                let node: &str = row.get(2);
                let claim = if row.get::<_, bool>(4) {
                    Claim::Taken
                } else if node == self.node {
                    Claim::Ours
                } else {
                    Claim::Theirs { node: node.to_owned(), committed: row.get(3) }
                };
                holders.insert((row.get(0), row.get(1)), claim);
            }
        }
        // Taken by this batch unless found held; a key held by a claim
        // committed after the lookup's snapshot is another node's, undecided.
        let undecided = Claim::Theirs { node: String::new(), committed: false };
        let all_taken = taken as usize == order.len();
        let claims = keys
            .iter()
            .map(|key| match all_taken {
                true => Claim::Taken,
                false => holders.get(key).cloned().unwrap_or_else(|| undecided.clone()),
            })
            .collect();
        Ok(Claimed { batch, claims })
    }

    /// This node's batches not yet confirmed (at most `limit`), each with
    /// its keys: after a crash, those whose calls it did commit are
    /// confirmed and the others given back.
    pub async fn unconfirmed(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<(String, String)>)>, CoordinationError> {
        let rows = self
            .bounded(self.client.query(
                "SELECT b.batch, c.project, c.key FROM \
                 (SELECT batch FROM tally_claim_batches WHERE node = $1 AND NOT committed \
                  ORDER BY batch LIMIT $2) b \
                 LEFT JOIN tally_claims c ON c.batch = b.batch ORDER BY b.batch",
                &[&self.node, &limit],
            ))
            .await?;
        let mut batches: Vec<(i64, Vec<(String, String)>)> = Vec::new();
        for row in rows {
            let batch: i64 = row.get(0);
            if batches.last().is_none_or(|(last, _)| *last != batch) {
                batches.push((batch, Vec::new()));
            }
            let key: Option<String> = row.get(2);
            if let Some(key) = key {
                batches.last_mut().expect("pushed").1.push((row.get(1), key));
            }
        }
        Ok(batches)
    }

    /// Confirms this node's `batches`: their calls are committed.
    pub async fn confirm(&self, batches: &[i64]) -> Result<(), CoordinationError> {
        if batches.is_empty() {
            return Ok(());
        }
        self.bounded(self.client.execute(
            "UPDATE tally_claim_batches SET committed = true \
             WHERE node = $1 AND batch = ANY($2) AND NOT committed",
            &[&self.node, &batches],
        ))
        .await
        .map(drop)
    }

    /// Gives back this node's unconfirmed `batches` (calls it never
    /// committed), keys and all, so that another node may count them.
    pub async fn release(&self, batches: &[i64]) -> Result<u64, CoordinationError> {
        if batches.is_empty() {
            return Ok(0);
        }
        let rows = self
            .bounded(self.client.query(
                "WITH gone AS (
                     DELETE FROM tally_claim_batches
                     WHERE node = $1 AND batch = ANY($2) AND NOT committed
                     RETURNING batch
                 ), keys AS (
                     DELETE FROM tally_claims WHERE batch IN (SELECT batch FROM gone) RETURNING 1
                 )
                 SELECT count(*) FROM keys",
                &[&self.node, &batches],
            ))
            .await?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    /// Whether the connection still stands (a server restart ends it).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}
