//! The backend test suite, written once against the `Storage` trait and
//! instantiated for every backend at the bottom of this file.

use std::sync::Arc;

use super::{
    AppendBatch, CallFilter, RetentionCutoffs, RollupVisitor, ShipWatermarks, Storage, TraceFilter,
    suite,
};
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::series::SeriesView;
use crate::aggregate::{Cell, CellKey, RollupEngine, SeriesKey, Tier};
use crate::model::{LlmCall, Tags};

fn call(id: Option<&str>, time_ms: i64, input: u64) -> LlmCall {
    LlmCall {
        id: id.map(str::to_owned),
        time_ms,
        completed_at_ms: Some(time_ms),
        provider: Some("openai".into()),
        user: Some("alice".into()),
        session: Some("s1".into()),
        tags: Tags::from([("team".to_owned(), "search".to_owned())]),
        input_tokens: input,
        output_tokens: 1,
        total_tokens: input + 1,
        streaming: Some(true),
        ttft_ms: Some(10.0),
        duration_ms: Some(100.0),
        cost_usd: 0.5,
        price_id: Some("catalog:gpt-4o".into()),
        ..LlmCall::example()
    }
}

/// Appends through a fresh engine (so series are registered), returns seqs.
async fn append(
    storage: &dyn Storage,
    engine: &RollupEngine,
    calls: Vec<LlmCall>,
) -> Vec<Option<i64>> {
    let (series_ids, new_series) = (engine.assign(&calls).ids, engine.pending_series());
    let ids: Vec<i64> = new_series.iter().map(|(id, _)| *id).collect();
    let batch = AppendBatch {
        calls: vec![calls],
        series_ids,
        new_series,
        spans: vec![],
        logs: vec![],
        metric_log: None,
        new_metric_series: vec![],
        encoded: vec![],
        refused: vec![],
    };
    let appended = storage.append(batch).await.unwrap();
    engine.confirm_series(&ids);
    appended.seqs
}

/// Every call of `filter`'s window, page by page (`filter.limit` a page).
async fn all_pages(storage: &dyn Storage, mut filter: CallFilter) -> Vec<SequencedCall> {
    let mut seen = Vec::new();
    loop {
        let page = storage.list_calls(filter.clone()).await.unwrap();
        let Some(last) = page.last() else { break };
        filter.after = Some((last.call.time_ms, last.seq));
        seen.extend(page);
    }
    seen
}

pub async fn dedupes_by_project_and_id(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let mut other_project = call(Some("a"), 1_000, 1);
    other_project.project = "other".into();
    let seqs = append(
        &*storage,
        &engine,
        vec![
            call(Some("a"), 1_000, 1),
            call(Some("a"), 1_000, 1),
            call(None, 1_000, 1),
            other_project,
        ],
    )
    .await;
    assert!(seqs[0].is_some() && seqs[1].is_none() && seqs[2].is_some() && seqs[3].is_some());
    let again =
        append(&*storage, &engine, vec![call(Some("a"), 2_000, 9), call(None, 1_000, 1)]).await;
    assert!(again[0].is_none() && again[1].is_some());
    // Of two calls with one id in one append, the first sent is kept even
    // when the second is stamped earlier.
    let pair = append(
        &*storage,
        &engine,
        vec![call(Some("x"), 5_000, 1), call(Some("x"), 1_000, 2), call(Some("y"), 500, 1)],
    )
    .await;
    assert!(pair[0].is_some() && pair[1].is_none() && pair[2].is_some());
    let kept = storage.calls_between(0, 10_000, 0, 100).await.unwrap();
    let x: Vec<u64> = kept
        .iter()
        .filter(|c| c.call.id.as_deref() == Some("x"))
        .map(|c| c.call.input_tokens)
        .collect();
    assert_eq!(x, vec![1]);
}

pub async fn calls_round_trip_and_page(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let calls: Vec<LlmCall> =
        (0..25).map(|i| call(Some(&format!("c{i}")), 60_000 + i * 10, i as u64)).collect();
    append(&*storage, &engine, calls.clone()).await;
    let filter = CallFilter {
        project: "default".into(),
        from_ms: 0,
        to_ms: 1_000_000,
        series: None,
        session: Some("s1".into()),
        after: None,
        limit: 10,
    };
    let seen: Vec<LlmCall> =
        all_pages(&*storage, filter).await.into_iter().map(|c| c.call).collect();
    assert_eq!(seen, calls, "every field survives storage, in time order");
    let none = storage
        .list_calls(CallFilter {
            project: "default".into(),
            from_ms: 0,
            to_ms: 1_000_000,
            series: Some(Vec::new()),
            session: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let replay = storage.calls_after(0, 100).await.unwrap();
    assert_eq!(replay.len(), 25);
    assert!(replay.windows(2).all(|w| w[0].seq < w[1].seq));
}

pub async fn rollups_merge_and_record_the_watermark(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let calls = vec![call(Some("x"), 120_000, 10), call(Some("y"), 130_000, 20)];
    let seqs = append(&*storage, &engine, calls.clone()).await;
    engine.apply(seqs.iter().zip(&calls).map(|(s, c)| (s.unwrap(), 1, c)));
    let flush = engine.begin_flush().await;
    let (cells, watermark) = (Arc::new(flush.cells.clone()), flush.watermark);
    let new_series = flush.new_series.clone();
    drop(flush);
    storage.flush_rollups(cells.clone(), watermark, new_series.clone()).await.unwrap();
    storage.flush_rollups(cells, watermark, new_series).await.unwrap();
    assert_eq!(storage.rollup_watermark().await.unwrap(), watermark);
    // The projection series are stored with the cells.
    let stored = storage.load_series().await.unwrap();
    let total = stored
        .iter()
        .map(|(id, flat)| (id, SeriesView::of(flat).to_key()))
        .find(|(_, key)| key.projection.as_deref() == Some(""));
    let (total_id, _) = total.expect("the project-total projection is stored");
    let minutes = storage.read_rollups(Tier::Minute, 0, 600_000).await.unwrap();
    let total_cell = &minutes.iter().find(|(key, _)| key.series == *total_id).unwrap().1;
    assert_eq!(total_cell.requests, 4);
    let minute: Vec<_> = minutes.into_iter().filter(|(key, _)| key.series == 1).collect();
    assert_eq!(minute.len(), 1);
    let (key, cell) = &minute[0];
    assert_eq!(*key, CellKey { tier: Tier::Minute, bucket: 120_000, series: 1 });
    assert_eq!((cell.requests, cell.input_tokens), (4, 60), "two flushes of the same cells add up");
    assert_eq!(cell.latency_ms.count(), 4);
    assert!(storage.read_rollups(Tier::Hour, 3_600_000, 7_200_000).await.unwrap().is_empty());

    // Scanning hands out the same rows, sketches still encoded.
    struct Collect(Vec<(CellKey, Cell)>);
    impl RollupVisitor for Collect {
        fn visit(
            &mut self,
            key: CellKey,
            mut counters: Cell,
            latency: &[u8],
            ttft: &[u8],
        ) -> Result<(), super::StorageError> {
            counters.latency_ms.merge_encoded(latency).unwrap();
            counters.ttft_ms.merge_encoded(ttft).unwrap();
            self.0.push((key, counters));
            Ok(())
        }
    }
    let visitor: Box<dyn std::any::Any> = storage
        .scan_rollups(Tier::Minute, 0, 600_000, (i64::MIN, i64::MAX), Box::new(Collect(Vec::new())))
        .await
        .unwrap();
    let scanned = visitor.downcast::<Collect>().unwrap().0;
    assert_eq!(scanned.len(), 11, "series 1 and its 10 projections");
    let scanned: Vec<_> = scanned.into_iter().filter(|(key, _)| key.series == 1).collect();
    assert_eq!(scanned, minute);
    // A series range limits the scan to its ids.
    let visitor: Box<dyn std::any::Any> = storage
        .scan_rollups(Tier::Minute, 0, 600_000, (1, i64::MAX), Box::new(Collect(Vec::new())))
        .await
        .unwrap();
    assert_eq!(visitor.downcast::<Collect>().unwrap().0, minute);
}

pub async fn replace_window_and_retention(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let calls = vec![call(Some("old"), 60_000, 5), call(Some("new"), 200_000_000, 7)];
    let seqs = append(&*storage, &engine, calls.clone()).await;
    let mut repriced = calls[0].clone();
    repriced.cost_usd = 9.0;
    let cell = Cell { requests: 1, cost_usd: 9.0, ..Cell::default() };
    let key = CellKey { tier: Tier::Day, bucket: 0, series: 1 };
    storage
        .replace_window(
            vec![(seqs[0].unwrap(), repriced)],
            0,
            86_400_000,
            vec![(key, cell)],
            vec![],
        )
        .await
        .unwrap();
    let stored = storage.calls_between(0, 86_400_000, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].call.cost_usd, 9.0);
    assert_eq!(storage.read_rollups(Tier::Day, 0, 86_400_000).await.unwrap()[0].1.cost_usd, 9.0);

    let deleted = storage
        .apply_retention(RetentionCutoffs {
            raw: Some(100_000_000),
            day: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(deleted, 2, "one call and one day row");
    assert_eq!(storage.calls_after(0, 10).await.unwrap().len(), 1);
    assert_eq!(storage.stats().await.unwrap().calls, 1);
}

/// Calls appended over several commits, out of time order, with a late call
/// and another project's calls among them: windows page in (time, seq) order
/// without loss or repeats, re-pricing reads each once, and retention keeps
/// exactly the calls at or after its cutoff.
pub async fn windows_over_many_appends(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let mut all = Vec::new();
    let mut state: u64 = 7;
    for batch in 0..5 {
        let mut calls = Vec::new();
        for i in 0..2_500 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let time = batch * 20_000 + (state >> 33) as i64 % 30_000;
            let mut c = call(Some(&format!("c{batch}-{i}")), time, 1);
            if i % 10 == 0 {
                c.project = "other".into();
            }
            calls.push(c);
        }
        if batch == 4 {
            calls.push(call(Some("late"), 15_000, 1));
        }
        append(&*storage, &engine, calls.clone()).await;
        all.extend(calls);
    }
    // Sparse appends (as the calls of spans are): a few calls far apart in
    // time, whose blocks span many seconds.
    for batch in 0..2 {
        let calls: Vec<LlmCall> = (0..150)
            .map(|i| {
                call(Some(&format!("sparse{batch}-{i}")), (i * 1_333 + batch * 500) % 200_000, 1)
            })
            .collect();
        append(&*storage, &engine, calls.clone()).await;
        all.extend(calls);
    }
    let order = |from: i64, to: i64| -> Vec<String> {
        let mut chosen: Vec<(i64, usize, String)> = all
            .iter()
            .enumerate()
            .filter(|(_, c)| c.project == "default" && c.time_ms >= from && c.time_ms < to)
            .map(|(i, c)| (c.time_ms, i, c.id.clone().unwrap()))
            .collect();
        chosen.sort();
        chosen.into_iter().map(|(_, _, id)| id).collect()
    };
    let page_all = |from_ms: i64, to_ms: i64| {
        let storage = storage.clone();
        async move {
            let filter = CallFilter {
                project: "default".into(),
                from_ms,
                to_ms,
                series: None,
                session: None,
                after: None,
                limit: 97,
            };
            let pages = all_pages(&*storage, filter).await;
            pages.into_iter().map(|c| c.call.id.unwrap()).collect::<Vec<_>>()
        }
    };
    assert_eq!(page_all(10_000, 90_000).await, order(10_000, 90_000));
    assert_eq!(page_all(0, 200_000).await, order(0, 200_000));

    let (mut seqs, mut after) = (Vec::new(), 0);
    loop {
        let page = storage.calls_between(10_000, 90_000, after, 1_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        assert!(page.iter().all(|c| (10_000..90_000).contains(&c.call.time_ms)));
        seqs.extend(page.into_iter().map(|c| c.seq));
    }
    let expected = all.iter().filter(|c| (10_000..90_000).contains(&c.time_ms)).count();
    assert_eq!(seqs.len(), expected);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order, each once");

    let deleted = storage
        .apply_retention(RetentionCutoffs { raw: Some(50_000), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(deleted as usize, all.iter().filter(|c| c.time_ms < 50_000).count());
    assert_eq!(page_all(0, 200_000).await, order(50_000, 200_000));
}

/// Seqs are never handed out again, even after retention emptied the calls
/// (the rollup watermark and the replay after a crash count on it).
pub async fn seqs_never_repeat_after_retention(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let first =
        append(&*storage, &engine, vec![call(Some("a"), 1_000, 1), call(None, 2_000, 1)]).await;
    let highest = first.iter().flatten().max().copied().unwrap();
    let cutoffs = RetentionCutoffs { raw: Some(10_000), ..Default::default() };
    assert_eq!(storage.apply_retention(cutoffs).await.unwrap(), 2);
    assert_eq!(storage.stats().await.unwrap().calls, 0);
    let later = append(&*storage, &engine, vec![call(Some("b"), 20_000, 1)]).await;
    assert!(later[0].unwrap() > highest, "{later:?} after {highest}");
    assert_eq!(storage.calls_after(highest, 10).await.unwrap().len(), 1);
}

pub async fn series_survive_reopen(storage: Arc<dyn Storage>) -> Vec<(i64, SeriesKey)> {
    let engine = RollupEngine::new(Vec::new(), 0);
    let mut other = call(None, 1, 1);
    other.model = "claude".into();
    append(&*storage, &engine, vec![call(None, 1, 1), other, call(None, 2, 2)]).await;
    let series = storage.load_series().await.unwrap();
    let series: Vec<(i64, SeriesKey)> =
        series.iter().map(|(id, flat)| (*id, SeriesView::of(flat).to_key())).collect();
    let ordinary = series.iter().filter(|(_, key)| !key.is_projection()).count();
    assert_eq!(ordinary, 2);
    // Total, 8 dimensions and tag.team, shared but for the two models.
    assert_eq!(series.len() - ordinary, 11);
    series
}

/// The telemetry suite's spans and logs, then retention: spans, logs and
/// traces that ended before the cutoff are dropped (ClickHouse drops whole
/// days, tested with its shipping).
pub async fn telemetry_retention(storage: Arc<dyn Storage>) {
    let local = Local(storage.clone());
    suite::spans_sum_into_traces_once(&local).await;
    let all = TraceFilter {
        project: "default".into(),
        from_ns: 0,
        to_ns: i64::MAX,
        limit: 10,
        ..TraceFilter::default()
    };
    // Retention drops spans, logs and traces that ended before the cutoff.
    storage
        .apply_retention(RetentionCutoffs { raw: Some(2_000), ..Default::default() })
        .await
        .unwrap();
    let traces = storage.list_traces(all).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert!(
        storage.trace("default", &"a".repeat(32), suite::WHOLE).await.unwrap().spans.is_empty()
    );
    assert_eq!(storage.stats().await.unwrap().logs, 0);
}

/// The local store as the telemetry suite's writer and reader.
struct Local(Arc<dyn Storage>);

#[async_trait::async_trait]
impl suite::TelemetryUnderTest for Local {
    fn writer(&self) -> &dyn Storage {
        &*self.0
    }
    fn reader(&self) -> &dyn super::TelemetryStore {
        &*self.0
    }
    async fn publish(&self) {}
}

pub async fn calls_dedupe_by_span(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let mut from_span = call(Some("chatcmpl-1"), 1_000, 5);
    from_span.trace_id = Some("a".repeat(32));
    from_span.span_id = Some("1".repeat(16));
    // The same call reported by a gateway that knew the span, without an id.
    let mut report = call(None, 1_000, 5);
    report.trace_id = from_span.trace_id.clone();
    report.span_id = from_span.span_id.clone();
    // The span sent again with another response id: still the same call.
    let mut resent = from_span.clone();
    resent.id = Some("chatcmpl-2".into());
    let seqs = append(&*storage, &engine, vec![from_span, report, resent]).await;
    assert!(seqs[0].is_some());
    assert_eq!(&seqs[1..], &[None, None]);
}

/// Logs one metric commit of a point of series 1 at `time_ms`; returns
/// its logged sequence number.
async fn log_metric_commit(storage: &dyn Storage, time_ms: i64) -> i64 {
    use crate::aggregate::metric::{Bin, BinKey, MetricTier, encode_log};
    let mut bin = Bin::default();
    bin.add(1.0, time_ms);
    let key = BinKey { tier: MetricTier::S10, bucket: MetricTier::S10.bucket(time_ms), series: 1 };
    let batch = AppendBatch {
        calls: vec![],
        series_ids: vec![],
        new_series: vec![],
        spans: vec![],
        logs: vec![],
        metric_log: Some(encode_log(&[(key, bin)])),
        new_metric_series: vec![],
        encoded: vec![],
        refused: vec![],
    };
    storage.append(batch).await.unwrap().metric_seq.expect("a metric commit logged")
}

/// On a node of a cluster the metric log keeps what its flushes took until
/// it is shipped too; on a single node (or once shipped) a flush drops it.
pub async fn metric_log_waits_for_shipping(storage: Arc<dyn Storage>) {
    let logged = |after| {
        let storage = storage.clone();
        async move { storage.metric_log_after(after, 100).await.unwrap().len() }
    };
    let to = "metrics http://ch:8123/tally".to_owned();
    storage.keep_metric_log_for(Some(to.clone())).await.unwrap();
    let first = log_metric_commit(&*storage, 10_000).await;
    let second = log_metric_commit(&*storage, 20_000).await;
    storage.flush_metric_bins(Arc::new(vec![]), second).await.unwrap();
    assert_eq!(logged(0).await, 2, "flushed, not shipped: kept");
    storage.mark_shipped(&to, first).await.unwrap();
    storage.flush_metric_bins(Arc::new(vec![]), second).await.unwrap();
    assert_eq!(logged(0).await, 1, "the first shipped: dropped");
    let after = ShipWatermarks { metric_commits: first, ..ShipWatermarks::default() };
    assert_eq!(storage.committed_after(after).await.unwrap(), 1);
    // Another destination (or none) forgets this one's shipping.
    storage.keep_metric_log_for(None).await.unwrap();
    storage.flush_metric_bins(Arc::new(vec![]), second).await.unwrap();
    assert_eq!(logged(0).await, 0);
    assert_eq!(storage.shipped(&to).await.unwrap(), 0);
}

macro_rules! backend_suite {
    ($module:ident, $open:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn one_trace_from_two_requests_of_one_append() {
                let (_dir, storage) = $open;
                suite::one_trace_from_two_requests_of_one_append(&Local(storage)).await;
            }

            #[tokio::test]
            async fn spans_sum_into_traces_once_and_retention_drops_them() {
                let (_dir, storage) = $open;
                super::telemetry_retention(storage).await;
            }

            #[tokio::test]
            async fn calls_dedupe_by_span() {
                let (_dir, storage) = $open;
                super::calls_dedupe_by_span(storage).await;
            }

            #[tokio::test]
            async fn dedupes_by_project_and_id() {
                let (_dir, storage) = $open;
                super::dedupes_by_project_and_id(storage).await;
            }

            #[tokio::test]
            async fn calls_round_trip_and_page() {
                let (_dir, storage) = $open;
                super::calls_round_trip_and_page(storage).await;
            }

            #[tokio::test]
            async fn rollups_merge_and_record_the_watermark() {
                let (_dir, storage) = $open;
                super::rollups_merge_and_record_the_watermark(storage).await;
            }

            #[tokio::test]
            async fn replace_window_and_retention() {
                let (_dir, storage) = $open;
                super::replace_window_and_retention(storage).await;
            }

            #[tokio::test]
            async fn seqs_never_repeat_after_retention() {
                let (_dir, storage) = $open;
                super::seqs_never_repeat_after_retention(storage).await;
            }

            #[tokio::test]
            async fn windows_over_many_appends() {
                let (_dir, storage) = $open;
                super::windows_over_many_appends(storage).await;
            }

            #[tokio::test]
            async fn metric_log_waits_for_shipping() {
                let (_dir, storage) = $open;
                super::metric_log_waits_for_shipping(storage).await;
            }

            #[tokio::test]
            async fn budgets_alerts_and_deliveries() {
                let (_dir, storage) = $open;
                crate::storage::suite::budgets_alerts_and_deliveries(&*storage).await;
            }

            #[tokio::test]
            async fn series_survive_reopen() {
                let (_dir, storage) = $open;
                let series = super::series_survive_reopen(storage).await;
                assert!(series.iter().any(|(_, k)| k.model == "claude"));
            }
        }
    };
}

fn open_sqlite() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = crate::config::SqliteConfig::default();
    let options = super::OpenOptions {
        url: "",
        data_dir: dir.path(),
        max_spans_per_trace: 10_000,
        sqlite: &sqlite,
    };
    let storage = super::open(&options).unwrap();
    (dir, storage)
}

backend_suite!(sqlite, open_sqlite());
