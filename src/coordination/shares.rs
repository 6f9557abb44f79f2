//! Budget spend shared by the nodes: each node's spend and reserved amount
//! per budget in the budget's current period, written by that node, summed
//! by the others; and the lock under which a reservation reads the other
//! nodes' shares and writes its own, so that two reservations on two nodes
//! cannot both take the last of a limit. A reservation settled through a
//! node other than the one that made it is released there: the settling
//! node leaves word, which the maker takes at its next sync.

use super::{Coordination, CoordinationError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally_budget_shares (
    budget_id  text NOT NULL,
    node       text NOT NULL,
    period     bigint NOT NULL,
    spend      double precision NOT NULL,
    reserved   double precision NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (budget_id, node)
);
CREATE TABLE IF NOT EXISTS tally_reservation_releases (
    reservation_id text PRIMARY KEY,
    boot           text NOT NULL,
    released_ms    bigint NOT NULL
);
";

/// One node's share of one budget: in the period starting at `period`
/// (0 for a rolling window), its spend and what it holds reserved.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub budget_id: String,
    pub period: i64,
    pub spend: f64,
    pub reserved: f64,
}

/// Another node's share, and when it wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherShare {
    pub node: String,
    pub share: Share,
    pub updated_ms: i64,
}

const UPSERT: &str = "
INSERT INTO tally_budget_shares (budget_id, node, period, spend, reserved, updated_ms)
SELECT b, $2, p, s, r, $6 FROM unnest($1::text[], $3::bigint[], $4::float8[], $5::float8[])
    AS t(b, p, s, r)
ON CONFLICT (budget_id, node) DO UPDATE SET period = EXCLUDED.period, spend = EXCLUDED.spend,
    reserved = EXCLUDED.reserved, updated_ms = EXCLUDED.updated_ms
";

const OTHERS: &str = "
SELECT node, budget_id, period, spend, reserved, updated_ms FROM tally_budget_shares
WHERE node <> $1 AND ($2::text[] IS NULL OR budget_id = ANY($2))
";

impl Coordination {
    /// Writes this node's `shares`.
    pub async fn publish_shares(
        &self,
        shares: &[Share],
        now_ms: i64,
    ) -> Result<(), CoordinationError> {
        if shares.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = shares.iter().map(|s| s.budget_id.as_str()).collect();
        let periods: Vec<i64> = shares.iter().map(|s| s.period).collect();
        let spend: Vec<f64> = shares.iter().map(|s| s.spend).collect();
        let reserved: Vec<f64> = shares.iter().map(|s| s.reserved).collect();
        self.bounded(
            self.client.execute(UPSERT, &[&ids, &self.node, &periods, &spend, &reserved, &now_ms]),
        )
        .await
        .map(drop)
    }

    /// The other nodes' shares of `budgets` (of every budget when None).
    pub async fn other_shares(
        &self,
        budgets: Option<&[String]>,
    ) -> Result<Vec<OtherShare>, CoordinationError> {
        let rows = self.bounded(self.client.query(OTHERS, &[&self.node, &budgets])).await?;
        Ok(rows
            .iter()
            .map(|r| OtherShare {
                node: r.get(0),
                share: Share {
                    budget_id: r.get(1),
                    period: r.get(2),
                    spend: r.get(3),
                    reserved: r.get(4),
                },
                updated_ms: r.get(5),
            })
            .collect())
    }

    /// Leaves word that reservation `id`, made by the node whose budgets
    /// boot as `boot`, was settled here (its usage recorded).
    pub async fn release_elsewhere(
        &self,
        id: &str,
        boot: &str,
        now_ms: i64,
    ) -> Result<(), CoordinationError> {
        self.bounded(self.client.execute(
            "INSERT INTO tally_reservation_releases (reservation_id, boot, released_ms) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&id, &boot, &now_ms],
        ))
        .await
        .map(drop)
    }

    /// Takes the word left for reservations of `boot` (and drops what no
    /// node took since `stale_ms`: a boot that is gone).
    pub async fn take_releases(
        &self,
        boot: &str,
        stale_ms: i64,
    ) -> Result<Vec<String>, CoordinationError> {
        let rows = self
            .bounded(self.client.query(
                "DELETE FROM tally_reservation_releases WHERE boot = $1 OR released_ms < $2 \
                 RETURNING reservation_id, boot",
                &[&boot, &stale_ms],
            ))
            .await?;
        Ok(rows
            .iter()
            .filter(|r| r.get::<_, &str>(1) == boot)
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    /// Runs one reservation in a transaction holding `budgets`' locks:
    /// `decide` gets the other nodes' fresh shares and gives back its
    /// answer and this node's shares to write before the locks go. Use a
    /// connection of its own: statements of other tasks on this one would
    /// run inside the transaction.
    pub async fn under_budget_locks<T>(
        &self,
        budgets: &[String],
        now_ms: i64,
        decide: impl FnOnce(Vec<OtherShare>) -> (T, Vec<Share>),
    ) -> Result<T, CoordinationError> {
        let mut ids: Vec<&str> = budgets.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        self.bounded(self.client.batch_execute("BEGIN")).await?;
        let result = async {
            self.bounded(self.client.execute(
                "SELECT pg_advisory_xact_lock(hashtext('tally budget ' || b)) \
                 FROM unnest($1::text[]) AS t(b)",
                &[&ids],
            ))
            .await?;
            let others = self.other_shares(Some(budgets)).await?;
            let (answer, mine) = decide(others);
            self.publish_shares(&mine, now_ms).await?;
            self.bounded(self.client.batch_execute("COMMIT")).await?;
            Ok(answer)
        }
        .await;
        if result.is_err() {
            let _ = self.bounded(self.client.batch_execute("ROLLBACK")).await;
        }
        result
    }
}
