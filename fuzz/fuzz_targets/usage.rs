//! `POST /api/v1/usage` bodies: batch splitting, report parsing and
//! normalization (`tally::ingest::usage::usage_batch`).
//!
//! Input: the first byte's low bit says NDJSON; the rest is the body.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally::ingest::usage::usage_batch;
use tally::normalize::usage_report::NormalizeContext;
use tally::normalize::{AccountingRules, KeyFingerprinter};
use tally::pricing::PriceTable;

/// A fixed clock, so that a crash reproduces.
const NOW_MS: i64 = 1_700_000_000_000;

fn prices() -> &'static PriceTable {
    static PRICES: OnceLock<PriceTable> = OnceLock::new();
    PRICES.get_or_init(PriceTable::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let fingerprinter = KeyFingerprinter::new(b"fuzz");
    let context = NormalizeContext {
        now_ms: NOW_MS,
        rules: AccountingRules::default(),
        prices: prices(),
        fingerprinter: &fingerprinter,
        default_project: "default",
    };
    let Ok(batch) = usage_batch(body, flags & 1 == 1, &context) else {
        return;
    };
    // Every record is either a call or a rejection naming its index.
    assert_eq!(batch.calls.len() + batch.rejected.len(), batch.records);
    assert!(batch.rejected.iter().all(|r| r.index < batch.records));
    for call in &batch.calls {
        assert!(call.cost_usd.is_finite() && call.cost_usd >= 0.0, "cost {}", call.cost_usd);
        assert!(call.cache_read_tokens + call.cache_write_tokens <= call.input_tokens);
        assert!(call.reasoning_tokens <= call.output_tokens);
        assert!(call.requests >= 1);
    }
});
