//! Records shipped into a real ClickHouse (Debian's 18.16, started on free
//! ports by tests/common): every field reads back as sent, and a block
//! shipped twice (a node that crashed between the insert and its own record
//! of it) counts once, while another node's calls with the same sequence
//! numbers count as theirs. The shipper sends a stopped server's committed
//! calls, after a crash mid-block too, each once, and later only the new;
//! its spans and log records the same way, each read back as stored.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::clickhouse::{ClickHouse as Server, merge_fully};
use tally::aggregate::SeriesKey;
use tally::aggregate::metric::{Bin, BinKey, MetricKey, MetricTier};
use tally::aggregate::rollup::SequencedCall;
use tally::model::{LlmCall, Operation, Source, SpanKind, SpanRecord, SpanStatus, Status, Tags};
use tally::storage::clickhouse::rollups::NodeRollups;
use tally::storage::clickhouse::ship::NodeTotals;
use tally::storage::clickhouse::{ClickHouse, ClickHouseUrl, calls, schema, ship, telemetry};

const DAY_MS: i64 = 86_400_000;

/// Registries that know none of the calls' series: each is rolled up
/// under its own dimensions.
struct Unregistered;

impl ship::Registered for Unregistered {
    fn series(&self, _: &[i64]) -> HashMap<i64, Arc<SeriesKey>> {
        HashMap::new()
    }

    fn metric_series(&self, _: &[i64]) -> HashMap<i64, Arc<MetricKey>> {
        HashMap::new()
    }
}

/// A node's running totals with room for all the tests send.
fn node(name: &str) -> NodeTotals {
    NodeTotals::new(name, 1_000_000)
}

/// Calls over three days, with optional fields set on some and not others.
fn batch(node: &str, n: i64, t0: i64) -> Vec<SequencedCall> {
    (1..=n)
        .map(|seq| {
            let time_ms = t0 + seq * (3 * DAY_MS / n);
            let call = LlmCall {
                id: (seq % 3 != 0).then(|| format!("{node}-call-{seq}")),
                project: "p".into(),
                time_ms,
                started_at_ms: Some(time_ms - 800),
                completed_at_ms: Some(time_ms),
                model: if seq % 2 == 0 { "gpt-4o".into() } else { "claude-3-5-sonnet".into() },
                response_model: (seq % 2 == 0).then(|| "gpt-4o-2024-08-06".into()),
                provider: Some("openai".into()),
                operation: if seq % 9 == 0 { Operation::Embedding } else { Operation::Chat },
                user: (seq % 5 != 0).then(|| format!("user-{}", seq % 7)),
                api_key: Some("fp-3f9c".into()),
                session: (seq % 6 == 0).then(|| format!("s-{}", seq / 6)),
                route: Some("/v1/chat/completions".into()),
                cluster: None,
                tags: Tags::from([("team".into(), format!("t{}", seq % 3))]),
                requests: 1,
                input_tokens: 100 + seq as u64,
                output_tokens: 10 + seq as u64,
                total_tokens: 110 + 2 * seq as u64,
                cache_read_tokens: seq as u64 % 50,
                cache_write_tokens: 0,
                reasoning_tokens: seq as u64 % 5,
                completed: seq % 11 != 0,
                estimated: seq % 11 == 0,
                request_bytes: Some(2048),
                output_chunks: None,
                streaming: (seq % 4 == 0).then_some(true),
                ttft_ms: (seq % 4 == 0).then_some(12.5),
                duration_ms: Some(800.0),
                status: if seq % 10 == 0 { Status::Error } else { Status::Ok },
                error_type: (seq % 10 == 0).then(|| "rate_limit".into()),
                cost_usd: seq as f64 * 0.001,
                price_id: Some("catalog:gpt-4o".into()),
                reported_cost_usd: None,
                source: Source::UsageReport,
                trace_id: None,
                span_id: None,
            };
            SequencedCall { seq, series: 1, call }
        })
        .collect()
}

/// A connection to database `tally` on `server`, its schema made.
async fn migrated(server: &Server) -> ClickHouse {
    let host = server.http_url().trim_start_matches("http://").to_owned();
    let url = ClickHouseUrl::parse(&format!("clickhouse://{host}/tally")).unwrap();
    let ch = ClickHouse::connect(&url).await.unwrap();
    schema::migrate(&ch, schema::MIGRATIONS).await.unwrap();
    ch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_calls_read_back_whole_and_a_block_shipped_twice_counts_once() {
    let server = Server::start();
    let ch = migrated(&server).await;

    let t0 = 1_790_000_000_000;
    let a = batch("a", 500, t0);
    let b = batch("b", 300, t0);
    calls::insert(&ch, "node-a", &a).await.unwrap();
    // Node a crashed before recording the block as shipped: it ships again.
    calls::insert(&ch, "node-a", &a).await.unwrap();
    calls::insert(&ch, "node-b", &b).await.unwrap();

    let read = calls::read(&ch, "p", t0, t0 + 4 * DAY_MS).await.unwrap();
    assert_eq!(read.len(), 800, "each call once");
    let mut sent: Vec<(String, i64, LlmCall)> = a
        .iter()
        .map(|c| ("node-a".to_owned(), c.seq, c.call.clone()))
        .chain(b.iter().map(|c| ("node-b".to_owned(), c.seq, c.call.clone())))
        .collect();
    sent.sort_by(|x, y| (x.2.time_ms, &x.0, x.1).cmp(&(y.2.time_ms, &y.0, y.1)));
    for (got, want) in read.iter().zip(&sent) {
        assert_eq!(got, want, "a call read back differs");
    }
    let cost: f64 = read.iter().map(|(_, _, c)| c.cost_usd).sum();
    let expected: f64 = sent.iter().map(|(_, _, c)| c.cost_usd).sum();
    assert!((cost - expected).abs() < 1e-9, "{cost} against {expected}");
    // A window reads only its calls; another project none.
    let first_day = calls::read(&ch, "p", t0, t0 + DAY_MS).await.unwrap();
    assert!(first_day.iter().all(|(_, _, c)| c.time_ms < t0 + DAY_MS));
    assert!(!first_day.is_empty() && first_day.len() < 800);
    assert!(calls::read(&ch, "q", t0, t0 + 4 * DAY_MS).await.unwrap().is_empty());
    // Merging the parts keeps one row per (node, seq) on disk too.
    merge_fully(ch.client(), ch.database(), "calls").await;
    let rows: u64 = ch.client().query("SELECT count() FROM tally.calls").fetch_one().await.unwrap();
    assert_eq!(rows, 800);
}

/// Opens a stopped server's store, as the shipper reads it.
fn local_store(dir: &std::path::Path) -> std::sync::Arc<dyn tally::storage::Storage> {
    let sqlite = tally::config::SqliteConfig::default();
    tally::storage::open(&tally::storage::OpenOptions {
        url: "",
        data_dir: dir,
        max_spans_per_trace: 10_000,
        sqlite: &sqlite,
    })
    .expect("open the local store")
}

async fn ingest(base: &str, from: usize, to: usize) {
    let reports: Vec<serde_json::Value> = (from..to)
        .map(|i| {
            common::chat(
                &format!("ship-{i}"),
                "gpt-4o",
                common::tokens(100 + i as u64, 10),
                common::now_ms(),
            )
        })
        .collect();
    for batch in reports.chunks(1_000) {
        let (accepted, _) = common::ingest(base, &serde_json::json!(batch)).await;
        assert_eq!(accepted as usize, batch.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ships_what_it_committed_once_even_after_a_crash_mid_block() {
    let clickhouse = Server::start();
    let ch = migrated(&clickhouse).await;

    let dir = tempfile::tempdir().unwrap();
    let mut server = common::TestServer::start(dir.path(), &[]);
    ingest(server.url(), 0, 3_000).await;
    assert!(server.terminate().success());

    let local = local_store(dir.path());
    // A crash after inserting the first block, before recording it.
    let first = local.calls_after(0, 1_000).await.unwrap();
    calls::insert(&ch, "node-a", &first).await.unwrap();
    let shipped = ship::ship(&*local, &ch, &node("node-a"), 1_000, &Unregistered).await.unwrap();
    assert_eq!(shipped.calls, 3_000);
    assert_eq!(
        ship::ship(&*local, &ch, &node("node-a"), 1_000, &Unregistered).await.unwrap(),
        ship::Shipped::default()
    );
    let window = (common::now_ms() - 86_400_000, common::now_ms() + 60_000);
    let remote = calls::read(&ch, "default", window.0, window.1).await.unwrap();
    assert_eq!(remote.len(), 3_000, "each call once");
    let everything = local.calls_after(0, 10_000).await.unwrap();
    let mut local_calls: Vec<_> = everything.iter().map(|c| (c.seq, c.call.clone())).collect();
    let mut remote_calls: Vec<_> = remote.into_iter().map(|(_, seq, call)| (seq, call)).collect();
    local_calls.sort_by_key(|(seq, _)| *seq);
    remote_calls.sort_by_key(|(seq, _)| *seq);
    assert_eq!(remote_calls, local_calls, "ClickHouse holds the calls as committed");
    drop(local);

    // More traffic later: only the new calls go.
    server.restart();
    ingest(server.url(), 3_000, 3_500).await;
    assert!(server.terminate().success());
    let local = local_store(dir.path());
    assert_eq!(
        ship::ship(&*local, &ch, &node("node-a"), 1_000, &Unregistered).await.unwrap().calls,
        500
    );
    let remote = calls::read(&ch, "default", window.0, window.1).await.unwrap();
    assert_eq!(remote.len(), 3_500);
}

fn attr(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({"key": key, "value": {"stringValue": value}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_logs_ship_once_and_read_back_as_stored() {
    let clickhouse = Server::start();
    let ch = migrated(&clickhouse).await;

    let dir = tempfile::tempdir().unwrap();
    let mut server = common::TestServer::start(dir.path(), &[]);
    let t0 = (common::now_ms() - 60_000) * 1_000_000;
    // 40 traces of 3 spans, one export each, and a log record per trace.
    for t in 1..=40 {
        let trace = format!("{t:032x}");
        let span = |id: u64, parent: Option<u64>, name: &str, extra: Vec<serde_json::Value>| {
            let mut s = serde_json::json!({
                "traceId": trace, "spanId": format!("{id:016x}"), "name": name,
                "startTimeUnixNano": (t0 + id as i64 * 1_000_000).to_string(),
                "endTimeUnixNano": (t0 + id as i64 * 1_000_000 + 500_000).to_string(),
                "attributes": extra,
            });
            if let Some(p) = parent {
                s["parentSpanId"] = serde_json::json!(format!("{p:016x}"));
            }
            s
        };
        let body = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [attr("service.name", "agent")]},
            "scopeSpans": [{"spans": [
                span(1, None, "invoke_agent", vec![attr("gen_ai.operation.name", "invoke_agent")]),
                span(2, Some(1), "chat gpt-4o", vec![
                    attr("gen_ai.operation.name", "chat"),
                    attr("gen_ai.request.model", "gpt-4o"),
                    serde_json::json!({"key": "gen_ai.usage.input_tokens", "value": {"intValue": "120"}}),
                ]),
                span(3, Some(1), "execute_tool search", vec![attr("gen_ai.operation.name", "execute_tool")]),
            ]}],
        }]});
        let logs = serde_json::json!({"resourceLogs": [{
            "resource": {"attributes": [attr("service.name", "agent")]},
            "scopeLogs": [{"logRecords": [{
                "timeUnixNano": (t0 + 2_000_000).to_string(), "severityNumber": 9,
                "body": {"stringValue": format!("answered {t}")}, "traceId": trace,
                "spanId": format!("{:016x}", 2),
            }]}],
        }]});
        for (path, body) in [("/v1/traces", body), ("/v1/logs", logs)] {
            let answer = common::client()
                .post(format!("{}{path}", server.url()))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            let answer: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(answer.get("partialSuccess"), None, "{path}: {answer}");
        }
    }
    assert!(server.terminate().success());

    let local = local_store(dir.path());
    // A crash after the first block of spans went, before it was recorded.
    let first = local.spans_after(0, 30).await.unwrap();
    tally::storage::clickhouse::telemetry::insert_spans(&ch, "node-a", &first).await.unwrap();
    let shipped = ship::ship(&*local, &ch, &node("node-a"), 30, &Unregistered).await.unwrap();
    assert_eq!((shipped.spans, shipped.logs), (120, 40), "{shipped:?}");
    for t in [1, 17, 40] {
        let trace = format!("{t:032x}");
        let remote =
            tally::storage::clickhouse::telemetry::trace(&ch, "default", &trace).await.unwrap();
        let bounds = tally::storage::TraceBounds { max_spans: 100, max_logs: 100 };
        let stored = local.trace("default", &trace, bounds).await.unwrap();
        assert_eq!(remote.len(), 3, "each span once");
        assert_eq!(remote, stored.spans, "trace {trace} reads back as stored");
    }
    let logs = tally::storage::clickhouse::telemetry::logs(&ch, "default").await.unwrap();
    assert_eq!(logs.len(), 40);
    assert!(logs.iter().any(|l| l.body == serde_json::json!("answered 17")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_of_two_nodes_add_up_and_a_block_sent_again_replaces_its_rows() {
    use tally::aggregate::Tier;
    use tally::storage::clickhouse::rollups;
    let clickhouse = Server::start();
    let ch = migrated(&clickhouse).await;

    // Two nodes, each with its own traffic.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, from, to) in [(&dir_a, 0, 2_500), (&dir_b, 2_500, 4_000)] {
        let mut server = common::TestServer::start(dir.path(), &[]);
        ingest(server.url(), from, to).await;
        assert!(server.terminate().success());
    }
    let (a, b) = (local_store(dir_a.path()), local_store(dir_b.path()));
    // Node a crashed after sending the rollup of a smaller first block.
    let smaller = a.calls_after(0, 400).await.unwrap();
    calls::insert(&ch, "node-a", &smaller).await.unwrap();
    node("node-a").rollups.insert_block(&ch, &smaller, &HashMap::new()).await.unwrap();
    assert_eq!(
        ship::ship(&*a, &ch, &node("node-a"), 1_000, &Unregistered).await.unwrap().calls,
        2_500
    );
    assert_eq!(
        ship::ship(&*b, &ch, &node("node-b"), 1_000, &Unregistered).await.unwrap().calls,
        1_500
    );

    // Exact totals from the two local ledgers.
    let mut expected = tally::aggregate::Cell::default();
    for local in [&a, &b] {
        for stored in local.calls_after(0, 10_000).await.unwrap() {
            expected.add_call(&stored.call);
        }
    }
    let day = 86_400_000;
    let now = common::now_ms();
    for tier in [Tier::Minute, Tier::Hour, Tier::Day] {
        let cells = rollups::read(&ch, "default", tier, now - 2 * day, now + day).await.unwrap();
        let mut total = tally::aggregate::Cell::default();
        for (_, key, cell) in &cells {
            assert_eq!(key.project, "default");
            total.merge(cell);
        }
        assert_eq!(
            (total.requests, total.input_tokens, total.output_tokens),
            (expected.requests, expected.input_tokens, expected.output_tokens),
            "{tier:?}"
        );
        assert!((total.cost_usd - expected.cost_usd).abs() < 1e-6, "{tier:?}");
        assert_eq!(total.latency_ms.count(), expected.latency_ms.count(), "{tier:?}");
    }
    assert_eq!(expected.requests, 4_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_days_of_calls_and_tiers_of_rollups_past_their_cutoffs() {
    use tally::aggregate::Tier;
    use tally::storage::RetentionCutoffs;
    use tally::storage::clickhouse::{retention, rollups};
    let server = Server::start();
    let ch = migrated(&server).await;
    // Calls over three days from midnight, and their rollups.
    let t0 = 1_790_035_200_000 - 1_790_035_200_000 % DAY_MS;
    let calls_sent = batch("a", 300, t0);
    calls::insert(&ch, "node-a", &calls_sent).await.unwrap();
    node("node-a").rollups.insert_block(&ch, &calls_sent, &HashMap::new()).await.unwrap();
    let count = |day_from: i64| calls_sent.iter().filter(|c| c.call.time_ms >= day_from).count();
    // Raw data kept from the second day on; minute rollups for none of
    // these days' 30-day span; hours and days forever.
    let cutoffs = RetentionCutoffs {
        raw: Some(t0 + DAY_MS + 3_600_000),
        minute: Some(t0 + 3 * DAY_MS + 31 * DAY_MS),
        hour: None,
        day: None,
        metric: [None; 4],
    };
    let dropped = retention::apply(&ch, &cutoffs).await.unwrap();
    assert!(dropped >= 2, "the first day of calls and the minute rollups: {dropped}");
    let left = calls::read(&ch, "p", t0 - DAY_MS, t0 + 5 * DAY_MS).await.unwrap();
    assert_eq!(left.len(), count(t0 + DAY_MS), "calls from the second day on");
    assert!(left.iter().all(|(_, _, c)| c.time_ms >= t0 + DAY_MS));
    let minute = rollups::read(&ch, "p", Tier::Minute, 0, i64::MAX).await.unwrap();
    assert!(minute.is_empty(), "minute rollups dropped");
    let hours = rollups::read(&ch, "p", Tier::Hour, 0, i64::MAX).await.unwrap();
    let requests: u64 = hours.iter().map(|(_, _, cell)| cell.requests).sum();
    assert_eq!(requests, 300, "hour rollups kept");
    // Run again (another node, or after a crash): nothing more to drop.
    assert_eq!(retention::apply(&ch, &cutoffs).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_rolled_up_under_the_series_the_node_registered_them_in() {
    use tally::aggregate::Tier;
    use tally::storage::clickhouse::rollups;
    let server = Server::start();
    let ch = migrated(&server).await;
    let t0 = 1_790_035_200_000 - 1_790_035_200_000 % DAY_MS;
    // Seven users in two series ids: the node's registry counted users
    // past its cap under `__other__` (series 2), the rest under user-1.
    let mut sent = batch("a", 140, t0);
    for call in &mut sent {
        call.series = if call.call.user.as_deref() == Some("user-1") { 1 } else { 2 };
    }
    let key = |user: &str| {
        let mut key = SeriesKey::of(&sent[0].call);
        key.user = Some(user.into());
        key.model = "m".into();
        key.operation = Operation::Chat;
        key.status = Status::Ok;
        key.tags = Tags::new();
        Arc::new(key)
    };
    let registered = HashMap::from([(1, key("user-1")), (2, key("__other__"))]);
    let node_a = node("node-a");
    node_a.rollups.insert_block(&ch, &sent, &registered).await.unwrap();
    let days = rollups::read(&ch, "p", Tier::Day, 0, i64::MAX).await.unwrap();
    let mut by_user: HashMap<String, u64> = HashMap::new();
    for (_, key, cell) in &days {
        *by_user.entry(key.user.clone().unwrap()).or_default() += cell.requests;
    }
    let user_1 = sent.iter().filter(|c| c.series == 1).count() as u64;
    assert!(user_1 > 0 && user_1 < 140);
    assert_eq!(
        by_user,
        HashMap::from([("user-1".to_owned(), user_1), ("__other__".to_owned(), 140 - user_1)])
    );
    // A call whose series the registry no longer knows keeps its own.
    let mut unknown = batch("b", 3, t0);
    for call in &mut unknown {
        call.seq += 1_000;
        call.series = 99;
    }
    node_a.rollups.insert_block(&ch, &unknown, &registered).await.unwrap();
    let days = rollups::read(&ch, "p", Tier::Day, 0, i64::MAX).await.unwrap();
    let requests: u64 = days.iter().map(|(_, _, cell)| cell.requests).sum();
    assert_eq!(requests, 143);
    assert!(days.iter().any(|(_, key, _)| key.model == "claude-3-5-sonnet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_totals_hold_one_row_per_key_and_node_whatever_the_blocks_and_the_cache_bound() {
    use tally::aggregate::{Cell, Tier};
    use tally::storage::clickhouse::rollups;
    let server = Server::start();
    let ch = migrated(&server).await;
    let t0 = 1_790_035_200_000 - 1_790_035_200_000 % DAY_MS;
    // 600 calls over three days in blocks of 20, through a node holding at
    // most 40 totals: most blocks touch buckets it dropped, read back.
    let sent = batch("a", 600, t0);
    let small = NodeRollups::new("node-a", 40);
    for block in sent.chunks(20) {
        small.insert_block(&ch, block, &HashMap::new()).await.unwrap();
    }
    let held = small.held_cells();
    // Late calls into the first day's buckets, dropped from memory long ago,
    // and a block sent again (a crash before it was recorded).
    let mut late = batch("late", 30, t0);
    for (i, call) in late.iter_mut().enumerate() {
        call.seq = 1_000 + i as i64;
        call.call.time_ms = t0 + 1_000 * i as i64;
    }
    small.insert_block(&ch, &late, &HashMap::new()).await.unwrap();
    small.insert_block(&ch, &late[..10], &HashMap::new()).await.unwrap();
    node("node-a").rollups.insert_block(&ch, &late, &HashMap::new()).await.unwrap();

    let mut expected = Cell::default();
    for stored in sent.iter().chain(&late) {
        expected.add_call(&stored.call);
    }
    for tier in Tier::ALL {
        let cells = rollups::read(&ch, "p", tier, 0, i64::MAX).await.unwrap();
        let mut total = Cell::default();
        for (_, _, cell) in &cells {
            total.merge(cell);
        }
        assert_eq!(
            (total.requests, total.input_tokens, total.output_tokens, total.latency_ms.count()),
            (
                expected.requests,
                expected.input_tokens,
                expected.output_tokens,
                expected.latency_ms.count()
            ),
            "{tier:?}"
        );
    }
    // Merged, one row per (tier, bucket, series) of the node, however many
    // blocks wrote to it.
    merge_fully(ch.client(), ch.database(), "rollup_totals").await;
    let sql = format!(
        "SELECT count(), uniqExact(tier, bucket, series), countIf(projection = '') \
         FROM {}.rollup_totals",
        ch.database()
    );
    let (all, keys, rows) = ch.client().query(&sql).fetch_one::<(u64, u64, u64)>().await.unwrap();
    assert_eq!(all, keys);
    let day_keys = rollups::read(&ch, "p", Tier::Day, 0, i64::MAX).await.unwrap().len() as u64;
    assert!(day_keys < 600 && rows < 3 * 630, "{day_keys} day keys, {rows} rows");
    assert!(held < all as usize / 2, "{held} of {all} totals held");
}

/// Metric commits as a node logs them: commit `seq` holds one 10 s bin per
/// series (local ids 1..=3), of point values `seq` and `seq + 0.5`.
fn metric_commits(seqs: std::ops::Range<i64>, t0: i64) -> Vec<(i64, Vec<(BinKey, Bin)>)> {
    seqs.map(|seq| {
        let time_ms = t0 + seq * 7_000;
        let bins = (1..=3)
            .map(|series| {
                let mut bin = Bin::default();
                bin.add(seq as f64, time_ms);
                bin.add(seq as f64 + 0.5, time_ms + 1);
                let at = BinKey {
                    tier: MetricTier::S10,
                    bucket: MetricTier::S10.bucket(time_ms),
                    series,
                };
                (at, bin)
            })
            .collect();
        (seq, bins)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_totals_hold_one_row_per_key_and_node_and_count_a_commit_once() {
    use tally::storage::clickhouse::metrics::{self, NodeMetricBins};
    let server = Server::start();
    let ch = migrated(&server).await;
    let t0 = 1_790_035_200_000 - 1_790_035_200_000 % DAY_MS;
    let keys: HashMap<i64, Arc<MetricKey>> = (1..=3)
        .map(|series| {
            let tags = Tags::from_iter([("host".to_owned(), format!("h{series}"))]);
            (series, Arc::new(MetricKey { project: "p".into(), name: "load".into(), tags }))
        })
        .collect();
    // 1,200 commits (2.3 h of 7 s commits) in blocks of 25, through a node
    // holding at most 30 totals; then late commits into the first buckets,
    // a block sent again, and the same from a fresh node (a restart).
    let sent = metric_commits(1..1_201, t0);
    let small = NodeMetricBins::new("node-a", 30);
    for block in sent.chunks(25) {
        assert_eq!(small.insert_block(&ch, block, &keys).await.unwrap(), 0);
    }
    let held = small.held_cells();
    assert!(held <= 30 + 25 * 3 * 4, "{held} totals held past what a block needs");
    let late: Vec<_> = metric_commits(2_000..2_010, t0 - 2_000 * 7_000);
    small.insert_block(&ch, &late, &keys).await.unwrap();
    small.insert_block(&ch, &late[..4], &keys).await.unwrap();
    NodeMetricBins::new("node-a", 1_000).insert_block(&ch, &late, &keys).await.unwrap();
    NodeMetricBins::new("node-a", 1_000).insert_block(&ch, &sent[100..150], &keys).await.unwrap();
    // A series the node does not know is left out, and counted.
    let unknown = metric_commits(5_000..5_001, t0);
    let only_known: HashMap<i64, Arc<MetricKey>> =
        keys.iter().filter(|(id, _)| **id != 3).map(|(id, k)| (*id, k.clone())).collect();
    assert_eq!(
        NodeMetricBins::new("node-b", 1_000)
            .insert_block(&ch, &unknown, &only_known)
            .await
            .unwrap(),
        1
    );

    let (mut points, mut sum) = (0u64, 0.0);
    for (seq, _) in sent.iter().chain(&late).chain(&unknown) {
        let series = if *seq == 5_000 { 2 } else { 3 };
        points += 2 * series;
        sum += (2.0 * *seq as f64 + 0.5) * series as f64;
    }
    for tier in MetricTier::ALL {
        let (mut count, mut total, mut last) = (0, 0.0, 0.0f64);
        metrics::scan(&ch, ("p", "load"), tier, (0, i64::MAX), |read| {
            count += read.bin.count;
            total += read.bin.sum;
            last = last.max(read.bin.last);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!((count, total), (points, sum), "{tier:?}");
        assert_eq!(last, 5_000.5, "{tier:?}: the latest point's value");
    }
    // Merged, one row per (tier, bucket, series, node).
    merge_fully(ch.client(), ch.database(), "metric_totals").await;
    let sql = format!(
        "SELECT count(), uniqExact(tier, bucket, series, node) FROM {}.metric_totals",
        ch.database()
    );
    let (all, keys) = ch.client().query(&sql).fetch_one::<(u64, u64)>().await.unwrap();
    assert_eq!(all, keys);
    // 10 s bins: one per commit's bucket and series, far fewer above.
    assert!(all < 3 * (1_210 + 300), "{all} rows");
    assert!(held < all as usize / 4, "{held} of {all} totals held");
}

/// A span of `trace` (a number) as a node would ship it.
fn span_of(trace: u64, id: u64, parent: Option<u64>, start_ns: i64, error: bool) -> SpanRecord {
    SpanRecord {
        project: "p".into(),
        trace_id: format!("{trace:032x}"),
        span_id: format!("{id:016x}"),
        parent_span_id: parent.map(|p| format!("{p:016x}")),
        name: if parent.is_none() { "invoke_agent".into() } else { "chat".into() },
        kind: if parent.is_none() { SpanKind::Agent } else { SpanKind::Llm },
        service: "agent".into(),
        start_ns,
        end_ns: start_ns + 5_000_000,
        status: if error { SpanStatus::Error } else { SpanStatus::Ok },
        input_tokens: 10,
        output_tokens: 1,
        ..SpanRecord::example()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_list_pages_newest_first_through_candidates_and_the_rest_of_its_window() {
    use tally::storage::{TelemetryStore, TraceFilter};
    let server = Server::start();
    let ch = migrated(&server).await;
    let t0: i64 = 1_790_035_200_000_000_000; // midnight
    let second = 1_000_000_000;
    // 2,000 traces a second apart, a root and a child 1 ms later; every
    // 400th has an error. Trace 0 starts a minute before the window with a
    // child inside it; the newest 200 go to both nodes.
    let mut spans = Vec::new();
    for t in 0..2_000u64 {
        let start = t0 + t as i64 * second;
        spans.push(span_of(t, 2 * t + 1, None, start, false));
        spans.push(span_of(t, 2 * t + 2, Some(2 * t + 1), start + 1_000_000, t % 400 == 399));
    }
    spans[0].start_ns = t0 - 60 * second;
    let numbered: Vec<(i64, SpanRecord)> =
        spans.iter().cloned().enumerate().map(|(i, s)| (i as i64 + 1, s)).collect();
    telemetry::insert_spans(&ch, "node-a", &numbered).await.unwrap();
    telemetry::insert_spans(&ch, "node-b", &numbered[3_600..]).await.unwrap();

    let filter = |limit: usize, before: Option<(i64, String)>, errors_only: bool| TraceFilter {
        project: "p".into(),
        from_ns: t0,
        to_ns: t0 + 2_000 * second,
        service: None,
        kind: None,
        model: None,
        attributes: Vec::new(),
        errors_only,
        user: None,
        session: None,
        min_duration_ns: None,
        max_duration_ns: None,
        before,
        limit,
    };
    // Every page of 70 in turn: traces 1999 down to 1, each once, whole.
    let mut listed = Vec::new();
    let mut before = None;
    loop {
        let page = ch.list_traces(filter(70, before.clone(), false)).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some((last.start_ns, last.trace_id.clone()));
        assert!(page.iter().all(|t| t.span_count == 2 && t.input_tokens == 20), "{page:?}");
        listed.extend(page.iter().map(|t| (t.start_ns, t.trace_id.clone())));
    }
    let expected: Vec<(i64, String)> =
        (1..2_000u64).rev().map(|t| (t0 + t as i64 * second, format!("{t:032x}"))).collect();
    assert_eq!(listed, expected, "trace 0 starts before the window");
    // Five errors wanted, the oldest far down the window: the
    // candidates' rounds run out and the rest of the window is grouped.
    let errors = ch.list_traces(filter(5, None, true)).await.unwrap();
    let ids: Vec<&str> = errors.iter().map(|t| t.trace_id.as_str()).collect();
    let expected: Vec<String> =
        [1_999u64, 1_599, 1_199, 799, 399].map(|t| format!("{t:032x}")).to_vec();
    assert_eq!(ids, expected);
    assert!(errors.iter().all(|t| t.error_count == 1));
}

/// The telemetry role on ClickHouse: spans and logs appended to a node's
/// local store, read from ClickHouse once shipped.
struct ShippedTelemetry {
    _dir: tempfile::TempDir,
    local: Arc<dyn tally::storage::Storage>,
    ch: ClickHouse,
}

impl ShippedTelemetry {
    async fn start(server: &Server) -> ShippedTelemetry {
        let dir = tempfile::tempdir().unwrap();
        let local = local_store(dir.path());
        ShippedTelemetry { _dir: dir, local, ch: migrated(server).await }
    }
}

#[async_trait::async_trait]
impl tally::storage::suite::TelemetryUnderTest for ShippedTelemetry {
    fn writer(&self) -> &dyn tally::storage::Storage {
        &*self.local
    }
    fn reader(&self) -> &dyn tally::storage::TelemetryStore {
        &self.ch
    }
    async fn publish(&self) {
        ship::ship(&*self.local, &self.ch, &node("node-a"), 1_000, &Unregistered).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_suite_one_trace_from_two_requests_of_one_append() {
    let server = Server::start();
    let under_test = ShippedTelemetry::start(&server).await;
    tally::storage::suite::one_trace_from_two_requests_of_one_append(&under_test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_suite_spans_sum_into_traces_once() {
    let server = Server::start();
    let under_test = ShippedTelemetry::start(&server).await;
    tally::storage::suite::spans_sum_into_traces_once(&under_test).await;
}
