//! The outbox: records committed here and not yet copied to ClickHouse. The
//! local store holds them (it is the queue); this counts them and knows
//! since when the oldest has waited, and refuses new work past the bounds,
//! so that a node cut off from ClickHouse fills its disk no further than
//! configured and drops nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::durability::CommitError;
use crate::time::now_ms;

#[derive(Debug, Default)]
struct Waiting {
    /// Records committed and not yet shipped, as far as this process saw.
    records: u64,
    /// When the oldest of them was committed (None: none waits).
    since_ms: Option<i64>,
}

pub struct Outbox {
    waiting: Mutex<Waiting>,
    /// Records shipped since the start, for the rate on /metrics.
    shipped: AtomicU64,
    max_records: u64,
    max_age_ms: i64,
}

/// What /metrics shows of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxState {
    pub records: u64,
    pub age_ms: i64,
    pub shipped: u64,
}

impl Outbox {
    pub fn new(max_records: u64, max_age_ms: i64) -> Self {
        Self {
            waiting: Mutex::new(Waiting::default()),
            shipped: AtomicU64::new(0),
            max_records,
            max_age_ms,
        }
    }

    pub fn state(&self) -> OutboxState {
        let waiting = self.waiting.lock().expect("unpoisoned");
        OutboxState {
            records: waiting.records,
            age_ms: waiting.since_ms.map_or(0, |since| (now_ms() - since).max(0)),
            shipped: self.shipped.load(Ordering::Relaxed),
        }
    }

    /// A shipping pass sent `records`; `caught_up` when nothing committed
    /// before `pass_started_ms` is left.
    pub fn shipped(&self, records: u64, caught_up: bool, pass_started_ms: i64) {
        self.shipped.fetch_add(records, Ordering::Relaxed);
        let mut waiting = self.waiting.lock().expect("unpoisoned");
        waiting.records = waiting.records.saturating_sub(records);
        if caught_up {
            // What was committed during the pass waits since its start at
            // the earliest.
            waiting.since_ms = (waiting.records > 0).then_some(pass_started_ms);
        }
    }

    /// Records found waiting at start (committed before a restart).
    pub fn found(&self, records: u64, oldest_ms: Option<i64>) {
        let mut waiting = self.waiting.lock().expect("unpoisoned");
        waiting.records += records;
        waiting.since_ms = match (waiting.since_ms, oldest_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl crate::durability::shared::Outbox for Outbox {
    fn admit(&self) -> Result<(), CommitError> {
        let state = self.state();
        if state.records >= self.max_records {
            return Err(CommitError::Backlog {
                message: format!(
                    "{} records wait to be copied to ClickHouse (cluster.max_outbox_records is {}); nothing in this batch was acknowledged, retry later",
                    state.records, self.max_records
                ),
                retry_after_s: 10,
            });
        }
        if state.age_ms >= self.max_age_ms {
            return Err(CommitError::Backlog {
                message: format!(
                    "the oldest record waiting to be copied to ClickHouse was committed {} s ago (cluster.max_outbox_age is {} s); nothing in this batch was acknowledged, retry later",
                    state.age_ms / 1000,
                    self.max_age_ms / 1000
                ),
                retry_after_s: 10,
            });
        }
        Ok(())
    }

    fn committed(&self, records: u64) {
        if records == 0 {
            return;
        }
        let mut waiting = self.waiting.lock().expect("unpoisoned");
        waiting.records += records;
        waiting.since_ms.get_or_insert_with(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::shared::Outbox as _;

    #[test]
    fn past_either_bound_new_work_is_refused_until_shipping_catches_up() {
        let outbox = Outbox::new(100, 60_000);
        outbox.admit().unwrap();
        outbox.committed(60);
        outbox.admit().unwrap();
        outbox.committed(40);
        let refused = outbox.admit().unwrap_err().to_string();
        assert!(refused.contains("100 records wait"), "{refused}");
        outbox.shipped(100, true, now_ms());
        assert_eq!(outbox.state().records, 0);
        outbox.admit().unwrap();
        // Records found at start that waited an hour: too old.
        outbox.found(5, Some(now_ms() - 3_600_000));
        let refused = outbox.admit().unwrap_err().to_string();
        assert!(refused.contains("max_outbox_age is 60 s"), "{refused}");
        outbox.shipped(5, true, now_ms());
        outbox.admit().unwrap();
        assert_eq!(outbox.state().shipped, 105);
    }
}
