//! The behaviour suites of the roles a backend of its own may take,
//! written once against the role's trait: the control role (the SQLite
//! store's unit tests and the PostgreSQL coordination store's integration
//! tests run the same suite) and the telemetry role (spans and logs
//! appended to a node's local store, read from it or, once shipped, from
//! ClickHouse). Only tests call it.

use super::{
    AlertFilter, AppendBatch, ControlStore, DeliveryUpdate, NewAlert, Storage, StoredBudget,
    TelemetryStore, TraceBounds, TraceFilter,
};
use crate::model::{Attributes, LogRecord, SpanEvent, SpanKind, SpanRecord, SpanStatus};

/// A telemetry store under test: spans and logs are appended to `writer`
/// (a node's local store) and read from `reader` once `publish` made them
/// readable there (nothing to do for the local store itself; shipping, for
/// ClickHouse).
#[async_trait::async_trait]
pub trait TelemetryUnderTest: Sync {
    fn writer(&self) -> &dyn Storage;
    fn reader(&self) -> &dyn TelemetryStore;
    async fn publish(&self);
}

/// Budgets saved, replaced, loaded and deleted; alerts recorded once per
/// budget, period and threshold; deliveries due, retried, delivered,
/// failed and refused, and alerts listed by filter.
pub async fn budgets_alerts_and_deliveries(storage: &dyn ControlStore) {
    let budget = |id: &str, name: &str| StoredBudget {
        id: id.into(),
        project: "default".into(),
        name: name.into(),
        origin: "api".into(),
        definition: format!("{{\"name\":\"{name}\"}}"),
    };
    storage.save_budget(budget("b1", "one")).await.unwrap();
    storage.save_budget(budget("b2", "two")).await.unwrap();
    storage.save_budget(budget("b1", "one-renamed")).await.unwrap();
    let loaded = storage.load_budgets().await.unwrap();
    assert_eq!(loaded, vec![budget("b1", "one-renamed"), budget("b2", "two")]);
    assert!(storage.delete_budget("b2").await.unwrap());
    assert!(!storage.delete_budget("b2").await.unwrap());

    let alert = |threshold: f64, crossed_ms: i64, urls: &[&str]| NewAlert {
        budget_id: "b1".into(),
        threshold,
        period_start: 1_000,
        crossed_ms,
        body: format!("{{\"threshold\":{threshold}}}"),
        signature: "sha256=00".into(),
        urls: urls.iter().map(|u| u.to_string()).collect(),
    };
    let first = storage.insert_alert(alert(50.0, 2_000, &["http://a/", "http://b/"])).await;
    assert!(first.unwrap().is_some());
    // The same budget, period and threshold is recorded once.
    assert_eq!(storage.insert_alert(alert(50.0, 9_000, &["http://a/"])).await.unwrap(), None);
    storage.insert_alert(alert(80.0, 3_000, &[])).await.unwrap().unwrap();
    let mut since = storage.alerts_since("b1", 2_500).await.unwrap();
    since.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(since, vec![(80.0, 1_000, 3_000)]);
    assert_eq!(storage.alerts_since("b1", 0).await.unwrap().len(), 2);

    assert_eq!(storage.next_delivery_ms().await.unwrap(), Some(2_000));
    assert!(storage.due_deliveries(1_999, 10).await.unwrap().is_empty());
    let due = storage.due_deliveries(2_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!((due[0].url.as_str(), due[0].attempts, due[0].crossed_ms), ("http://a/", 0, 2_000));
    assert_eq!(due[0].body, "{\"threshold\":50}");
    let retry = DeliveryUpdate::Retry { next_ms: 5_000, error: "HTTP 500".into() };
    storage.update_delivery(due[0].id, retry).await.unwrap();
    storage.update_delivery(due[1].id, DeliveryUpdate::Delivered { at_ms: 2_100 }).await.unwrap();
    assert_eq!(storage.next_delivery_ms().await.unwrap(), Some(5_000));
    let again = storage.due_deliveries(6_000, 10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    let failed = DeliveryUpdate::Failed { error: "gave up".into() };
    storage.update_delivery(again[0].id, failed).await.unwrap();
    assert_eq!(storage.next_delivery_ms().await.unwrap(), None);

    let all = storage.list_alerts(AlertFilter { limit: 10, ..AlertFilter::default() }).await;
    let all = all.unwrap();
    assert_eq!(all.iter().map(|a| a.threshold).collect::<Vec<_>>(), vec![80.0, 50.0]);
    let delivered: Vec<&str> = all[1].deliveries.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(delivered, vec!["failed", "delivered"]);
    assert_eq!(all[1].deliveries[0].last_error.as_deref(), Some("gave up"));
    assert_eq!(all[1].payload["threshold"], 50.0);
    let failed_only =
        AlertFilter { status: Some("failed".into()), limit: 10, ..AlertFilter::default() };
    assert_eq!(storage.list_alerts(failed_only).await.unwrap().len(), 1);
    let other = AlertFilter { budget_id: Some("b9".into()), limit: 10, ..AlertFilter::default() };
    assert!(storage.list_alerts(other).await.unwrap().is_empty());

    // A refused delivery is final and was never attempted.
    storage
        .insert_alert(alert(100.0, 10_000, &["http://169.254.169.254/"]))
        .await
        .unwrap()
        .unwrap();
    let due = storage.due_deliveries(10_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let refused = DeliveryUpdate::Refused { error: "refused: metadata".into() };
    storage.update_delivery(due[0].id, refused).await.unwrap();
    assert_eq!(storage.next_delivery_ms().await.unwrap(), None);
    let refused_only =
        AlertFilter { status: Some("refused".into()), limit: 10, ..AlertFilter::default() };
    let refused = storage.list_alerts(refused_only).await.unwrap();
    assert_eq!(refused.len(), 1);
    let d = &refused[0].deliveries[0];
    assert_eq!(
        (d.status.as_str(), d.attempts, d.last_error.as_deref()),
        ("refused", 0, Some("refused: metadata"))
    );
}

fn span(trace: &str, id: &str, parent: Option<&str>, start_ms: i64, end_ms: i64) -> SpanRecord {
    SpanRecord {
        trace_id: trace.repeat(32 / trace.len()),
        span_id: id.repeat(16 / id.len()),
        parent_span_id: parent.map(|p| p.repeat(16 / p.len())),
        name: format!("op-{id}"),
        start_ns: start_ms * 1_000_000,
        end_ns: end_ms * 1_000_000,
        attributes: Attributes::from_iter([("k".to_owned(), serde_json::json!("v"))]),
        events: vec![SpanEvent {
            time_ns: start_ms * 1_000_000,
            name: "e".into(),
            attributes: Attributes::new(),
        }],
        ..SpanRecord::example()
    }
}

/// An append of spans and logs only, with the parts `Storage::encode` made
/// for them (none: the store encodes them itself).
fn telemetry_batch(
    spans: Vec<SpanRecord>,
    logs: Vec<LogRecord>,
    encoded: Vec<super::EncodedPart>,
) -> AppendBatch {
    AppendBatch {
        calls: vec![],
        series_ids: vec![],
        new_series: vec![],
        spans: vec![spans],
        logs,
        metric_log: None,
        new_metric_series: vec![],
        encoded,
        refused: vec![],
    }
}

async fn append_telemetry(storage: &dyn Storage, spans: Vec<SpanRecord>, logs: Vec<LogRecord>) {
    storage.append(telemetry_batch(spans, logs, vec![])).await.unwrap();
}

/// Every trace of the default project, ten to a page.
fn all_traces() -> TraceFilter {
    TraceFilter {
        project: "default".into(),
        from_ns: 0,
        to_ns: i64::MAX,
        limit: 10,
        ..TraceFilter::default()
    }
}

/// Two requests of one append carry spans of one trace, one span in both:
/// the trace gets each span once, the first sent, and totals over both.
pub async fn one_trace_from_two_requests_of_one_append(under_test: &dyn TelemetryUnderTest) {
    let storage = under_test.writer();
    let mut first =
        vec![span("c", "1", None, 2_000, 2_100), span("c", "2", Some("1"), 2_010, 2_020)];
    first[1].input_tokens = 7;
    let mut again = first[1].clone();
    again.name = "sent again".into();
    again.input_tokens = 1_000;
    let mut second = vec![again, span("c", "3", Some("1"), 2_030, 2_040)];
    second[1].input_tokens = 5;
    let spans: Vec<SpanRecord> = first.iter().chain(&second).cloned().collect();
    let encoded = vec![
        storage.encode(&[], &[], &mut first, &mut []),
        storage.encode(&[], &[], &mut second, &mut []),
    ];
    storage.append(telemetry_batch(spans, vec![], encoded)).await.unwrap();
    under_test.publish().await;
    let storage = under_test.reader();
    let traces = storage.list_traces(all_traces()).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!((traces[0].span_count, traces[0].input_tokens), (3, 12));
    assert_eq!(traces[0].root_name, "op-1");
    let stored = storage.trace("default", &"c".repeat(32), WHOLE).await.unwrap();
    let names: Vec<&str> = stored.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["op-1", "op-2", "op-3"]);
    assert_eq!(stored.spans_left_out, 0);
    assert_eq!(stored.summary.as_ref().map(|t| (t.span_count, t.dropped_spans)), Some((3, 0)));

    // Cut to the earliest two: the third is counted, and the trace's totals
    // still hold every span.
    let bounded = TraceBounds { max_spans: 2, max_logs: 1 };
    let stored = storage.trace("default", &"c".repeat(32), bounded).await.unwrap();
    let names: Vec<&str> = stored.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["op-1", "op-2"]);
    assert_eq!(stored.spans_left_out, 1);
    let summary = stored.summary.expect("totals when spans are left out");
    assert_eq!((summary.span_count, summary.input_tokens), (3, 12));
}

/// A trace read with no practical bound.
pub const WHOLE: TraceBounds = TraceBounds { max_spans: usize::MAX, max_logs: usize::MAX };

/// Spans of one trace over three appends, a child before its root and
/// sent twice; a log record of it; another trace: totals, span and trace
/// conditions, paging, the trace read whole and cut, sessions.
pub async fn spans_sum_into_traces_once(under_test: &dyn TelemetryUnderTest) {
    let storage = under_test.writer();
    // The child arrives before its root; then the same child again.
    let mut llm = span("a", "2", Some("1"), 1_010, 1_050);
    llm.kind = SpanKind::Llm;
    llm.model = Some("gpt-4o".into());
    llm.llm_call = true;
    llm.input_tokens = 100;
    llm.output_tokens = 10;
    llm.cost_usd = 0.25;
    llm.status = SpanStatus::Error;
    llm.user = Some("alice".into());
    let mut root = span("a", "1", None, 1_000, 1_100);
    root.session = Some("chat-1".into());
    let log = LogRecord {
        project: "default".into(),
        time_ns: 1_020_000_000,
        severity_number: 9,
        severity_text: Some("INFO".into()),
        body: serde_json::json!("hello"),
        attributes: Attributes::new(),
        trace_id: Some("a".repeat(32)),
        span_id: Some("2".repeat(16)),
        service: "svc".into(),
    };
    append_telemetry(storage, vec![llm.clone()], vec![log.clone()]).await;
    append_telemetry(storage, vec![root.clone(), llm.clone()], vec![]).await;
    append_telemetry(storage, vec![span("b", "3", None, 5_000, 5_001)], vec![]).await;
    under_test.publish().await;
    let storage = under_test.reader();

    let all = all_traces();
    let traces = storage.list_traces(all.clone()).await.unwrap();
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0].trace_id, "b".repeat(32), "newest first");
    let a = &traces[1];
    assert_eq!((a.root_name.as_str(), a.span_count, a.error_count, a.llm_calls), ("op-1", 2, 1, 1));
    assert_eq!((a.start_ns, a.end_ns), (1_000_000_000, 1_100_000_000));
    assert_eq!((a.input_tokens, a.output_tokens, a.cost_usd), (100, 10, 0.25));
    assert_eq!((a.user.as_deref(), a.session.as_deref()), (Some("alice"), Some("chat-1")));

    // Span conditions, trace conditions and paging.
    let with = |f: fn(&mut TraceFilter)| {
        let mut filter = all.clone();
        f(&mut filter);
        async move {
            storage
                .list_traces(filter)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.trace_id)
                .collect::<Vec<_>>()
        }
    };
    let only_a = vec!["a".repeat(32)];
    assert_eq!(with(|f| f.model = Some("gpt-4o".into())).await, only_a);
    assert_eq!(with(|f| f.kind = Some("llm".into())).await, only_a);
    assert_eq!(with(|f| f.errors_only = true).await, only_a);
    assert_eq!(with(|f| f.session = Some("chat-1".into())).await, only_a);
    assert_eq!(with(|f| f.min_duration_ns = Some(50_000_000)).await, only_a);
    assert_eq!(with(|f| f.attributes = vec![("k".into(), "v".into())]).await.len(), 2);
    assert!(with(|f| f.attributes = vec![("k".into(), "w".into())]).await.is_empty());
    assert_eq!(with(|f| f.before = Some((5_000_000_000, "b".repeat(32)))).await, only_a);
    assert!(with(|f| f.project = "other".into()).await.is_empty());

    let stored = storage.trace("default", &"a".repeat(32), WHOLE).await.unwrap();
    assert_eq!(stored.spans, vec![root, llm], "in start order, the re-sent span once");
    assert_eq!(stored.logs, vec![log.clone()]);
    let no_logs = TraceBounds { max_spans: 10, max_logs: 0 };
    let stored = storage.trace("default", &"a".repeat(32), no_logs).await.unwrap();
    assert!(stored.logs.is_empty() && stored.logs_cut);

    let sessions = storage.list_sessions("default", 0, i64::MAX, 10).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!((sessions[0].session.as_str(), sessions[0].traces), ("chat-1", 1));
}
