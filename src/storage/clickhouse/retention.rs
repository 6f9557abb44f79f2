//! Retention in ClickHouse: whole partitions dropped once everything in
//! them is past its table's retention, found in `system.parts`. Calls,
//! spans and log records are partitioned by day and kept for
//! `retention.raw`; rollups by tier and 30-day span of buckets, each tier
//! kept for its own retention; metric bins by tier and day (10 s, 1 min) or
//! 30 days (15 min, 1 h), each tier kept for its `metrics.retention_*`. Dropping a partition already gone changes
//! nothing, so nodes may all run it, and a crash mid-way is repaired by the
//! next run. (Servers with TTL could expire rows themselves; 18.16 has
//! none, and dropping partitions is cheaper on any version.)

use super::{ClickHouse, StorageError, backend};
use crate::aggregate::Tier;
use crate::aggregate::metric::MetricTier;
use crate::storage::RetentionCutoffs;

const DAY_MS: i64 = 86_400_000;
/// The width of a rollup_totals partition's bucket range (`intDiv(bucket, …)`).
const ROLLUP_PARTITION_MS: i64 = 2_592_000_000;

/// Whether the partition `partition` (as `system.parts` writes it) of
/// `table` holds only data older than its cutoff.
fn expired(table: &str, partition: &str, cutoffs: &RetentionCutoffs) -> bool {
    let partition = partition.trim_matches(|c| c == '\'' || c == '(' || c == ')');
    match table {
        "calls" | "spans" | "logs" => {
            let Some(cutoff) = cutoffs.raw else { return false };
            let Ok(day) = chrono::NaiveDate::parse_from_str(partition, "%Y-%m-%d") else {
                return false;
            };
            let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
            start + DAY_MS <= cutoff
        }
        "rollup_totals" => {
            let mut parts = partition.split(',').map(|p| p.trim().parse::<i64>());
            let (Some(Ok(tier)), Some(Ok(span)), None) = (parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            let cutoff = match Tier::from_code(tier) {
                Some(Tier::Minute) => cutoffs.minute,
                Some(Tier::Hour) => cutoffs.hour,
                Some(Tier::Day) => cutoffs.day,
                None => None,
            };
            cutoff.is_some_and(|cutoff| (span + 1) * ROLLUP_PARTITION_MS <= cutoff)
        }
        "metric_totals" => {
            let mut parts = partition.split(',').map(|p| p.trim().parse::<i64>());
            let (Some(Ok(tier)), Some(Ok(span)), None) = (parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            let Some(tier) = MetricTier::from_code(tier) else { return false };
            let width = if tier.code() <= 1 { DAY_MS } else { ROLLUP_PARTITION_MS };
            let cutoff = cutoffs.metric[tier.code() as usize];
            cutoff.is_some_and(|cutoff| (span + 1) * width <= cutoff)
        }
        _ => false,
    }
}

/// Drops every partition past its retention; returns how many it dropped.
pub async fn apply(ch: &ClickHouse, cutoffs: &RetentionCutoffs) -> Result<u64, StorageError> {
    let db = ch.database();
    let parts: Vec<(String, String, String)> = ch
        .client()
        .query(
            "SELECT table, partition, partition_id FROM system.parts \
             WHERE database = ? AND active GROUP BY table, partition, partition_id",
        )
        .bind(db)
        .fetch_all()
        .await
        .map_err(backend)?;
    let mut dropped = 0;
    for (table, partition, id) in parts {
        if expired(&table, &partition, cutoffs) {
            ch.execute(&format!("ALTER TABLE {db}.{table} DROP PARTITION ID '{id}'")).await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_expires_when_all_of_it_is_past_its_tables_cutoff() {
        let day = |d: &str| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        let cutoffs = RetentionCutoffs {
            raw: Some(day("2026-12-01") + 3_600_000),
            minute: Some(3 * ROLLUP_PARTITION_MS),
            hour: None,
            day: Some(ROLLUP_PARTITION_MS),
            metric: [Some(3 * DAY_MS), None, Some(ROLLUP_PARTITION_MS), None],
        };
        assert!(expired("calls", "'2026-11-30'", &cutoffs));
        assert!(expired("spans", "2026-11-30", &cutoffs));
        // The cutoff falls within Dec 1: kept until all of it is past.
        assert!(!expired("logs", "'2026-12-01'", &cutoffs));
        assert!(expired("rollup_totals", "(0,2)", &cutoffs));
        assert!(!expired("rollup_totals", "(0, 3)", &cutoffs));
        assert!(!expired("rollup_totals", "(1,0)", &cutoffs), "hours are kept forever");
        assert!(expired("rollup_totals", "(2,0)", &cutoffs));
        assert!(!expired("rollup_totals", "(2,1)", &cutoffs));
        assert!(expired("metric_totals", "(0,2)", &cutoffs), "10 s bins of day 2");
        assert!(!expired("metric_totals", "(0,3)", &cutoffs));
        assert!(!expired("metric_totals", "(1,0)", &cutoffs), "1 min bins kept forever");
        assert!(expired("metric_totals", "(2,0)", &cutoffs), "15 min bins of the first 30 days");
        assert!(!expired("metric_totals", "(2,1)", &cutoffs));
        assert!(!expired("tally_schema", "tuple()", &cutoffs));
        let forever = RetentionCutoffs { raw: None, ..cutoffs };
        assert!(!expired("calls", "'2000-01-01'", &forever));
    }
}
