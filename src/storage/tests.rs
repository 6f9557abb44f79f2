//! The backend test suite, written once against the `Storage` trait and
//! instantiated for every backend at the bottom of this file.

use std::sync::Arc;

use super::{AppendBatch, CallFilter, RetentionCutoffs, RollupVisitor, Storage};
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
    let (series_ids, new_series) = engine.assign_series(&calls);
    let ids: Vec<i64> = new_series.iter().map(|(id, _)| *id).collect();
    let appended = storage.append(AppendBatch { calls, series_ids, new_series }).await.unwrap();
    engine.confirm_series(&ids);
    appended.seqs
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
}

pub async fn calls_round_trip_and_page(storage: Arc<dyn Storage>) {
    let engine = RollupEngine::new(Vec::new(), 0);
    let calls: Vec<LlmCall> =
        (0..25).map(|i| call(Some(&format!("c{i}")), 60_000 + i * 10, i as u64)).collect();
    append(&*storage, &engine, calls.clone()).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = storage
            .list_calls(CallFilter {
                project: "default".into(),
                from_ms: 0,
                to_ms: 1_000_000,
                series: None,
                session: Some("s1".into()),
                after,
                limit: 10,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.call.time_ms, last.seq));
        seen.extend(page.into_iter().map(|c| c.call));
    }
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
    let total = stored.iter().find(|(_, key)| key.projection.as_deref() == Some(""));
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

pub async fn series_survive_reopen(storage: Arc<dyn Storage>) -> Vec<(i64, SeriesKey)> {
    let engine = RollupEngine::new(Vec::new(), 0);
    let mut other = call(None, 1, 1);
    other.model = "claude".into();
    append(&*storage, &engine, vec![call(None, 1, 1), other, call(None, 2, 2)]).await;
    let series = storage.load_series().await.unwrap();
    let ordinary = series.iter().filter(|(_, key)| !key.is_projection()).count();
    assert_eq!(ordinary, 2);
    // Total, 8 dimensions and tag.team, shared but for the two models.
    assert_eq!(series.len() - ordinary, 11);
    series
}

macro_rules! backend_suite {
    ($module:ident, $open:expr) => {
        mod $module {
            use super::*;

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
    let storage = super::open("", dir.path(), &Default::default()).unwrap();
    (dir, storage)
}

backend_suite!(sqlite, open_sqlite());
