//! Retention: each kind of data is deleted past its own horizon, on the
//! configured interval; rollups outlive the raw calls they summarise.

mod common;

use std::time::Duration;

use common::{TestServer, all_records, chat, ingest, now_ms, series, summary, tokens};
use serde_json::json;

const MINUTE: i64 = 60_000;

#[tokio::test]
async fn raw_calls_and_minute_rollups_expire_while_hours_remain() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            ("TALLY_RETENTION__RAW", "2h"),
            ("TALLY_RETENTION__MINUTE", "3h"),
            ("TALLY_RETENTION__HOUR", "2d"),
            ("TALLY_RETENTION__CHECK_INTERVAL", "1s"),
            ("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "200ms"),
        ],
    );
    let base = server.url();
    let now = now_ms();
    let (old, middle, fresh) = (now - 300 * MINUTE, now - 150 * MINUTE, now - 10 * MINUTE);
    let (accepted, _) = ingest(
        base,
        &json!([
            chat("old", "gpt-4o", tokens(100, 1), old),
            chat("middle", "gpt-4o", tokens(100, 1), middle),
            chat("fresh", "gpt-4o", tokens(100, 1), fresh),
        ]),
    )
    .await;
    // (A retention run may already have happened: it runs every second.)
    assert_eq!(accepted, 3);

    // Two retention runs later: raw keeps 2 h, minute rollups 3 h.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let records = all_records(base, &[("since", "24h")], 10).await;
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["fresh"], "raw calls older than 2 h are gone");

    let minutes = series(base, &[("since", "6h"), ("step", "1m")]).await;
    let in_minutes: u64 = minutes["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(in_minutes, 2, "minute rollups older than 3 h are gone");

    let hours = series(base, &[("since", "6h"), ("step", "1h")]).await;
    let in_hours: u64 = hours["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(in_hours, 3, "hour rollups keep all three calls");
    // A 6 h summary reads minutes only at its edges (the first and last
    // partial hours), where no expired call lies, and whole hours between.
    let total = summary(base, &[("from", &(now - 360 * MINUTE).to_string())]).await;
    assert_eq!(total["total"]["requests"].as_u64(), Some(3));
}

/// Metric bins expire per tier, and a query answered before they did (and
/// so cached) does not keep showing them.
#[tokio::test]
async fn metric_bins_expire_per_tier_past_cached_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            ("TALLY_METRICS__RETENTION_10S", "20s"),
            ("TALLY_RETENTION__CHECK_INTERVAL", "1s"),
            ("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "200ms"),
        ],
    );
    let base = server.url();
    let sent = now_ms() - 1_000;
    let reply = common::post_json_to(
        base,
        "/api/v1/points",
        &json!([{"name": "expiring", "value": 2.5, "timestamp": sent}]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(common::post_json_to(base, "/api/v1/admin/flush", &json!({})).await.status, 200);
    let count = |step: &'static str| async move {
        let from = (sent / 3_600_000 - 1) * 3_600_000;
        let got = common::get_ok(
            base,
            "/api/v1/metrics/query",
            &[
                ("name", "expiring"),
                ("step", step),
                ("agg", "count"),
                ("from", &from.to_string()),
                ("to", &(now_ms() + 3_600_000).to_string()),
            ],
        )
        .await;
        let points = got["groups"][0]["points"].as_array().cloned().unwrap_or_default();
        points.iter().map(|p| p["value"].as_u64().unwrap()).sum::<u64>()
    };
    // Stored (flushed) and so cached; the bin is younger than 20 s.
    assert_eq!(count("10s").await, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count("10s").await != 0 {
        assert!(std::time::Instant::now() < deadline, "the 10 s bin outlived its 20 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(count("1m").await, 1, "the minute bin is kept 7 days");
}

/// Rollup series whose data every retention has deleted are let go, in
/// memory and in the store (a restart does not load them), and their
/// dimensions seen again count afresh.
#[tokio::test]
async fn series_with_no_data_left_are_let_go_and_not_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TALLY_RETENTION__RAW", "1d"),
        ("TALLY_RETENTION__MINUTE", "1d"),
        ("TALLY_RETENTION__HOUR", "1d"),
        ("TALLY_RETENTION__DAY", "1d"),
        ("TALLY_RETENTION__CHECK_INTERVAL", "1s"),
        ("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "200ms"),
    ];
    let mut server = TestServer::start(dir.path(), &env);
    let base = server.url().to_owned();
    let now = now_ms();
    let old: Vec<_> = (0..30)
        .map(|i| {
            let report =
                chat(&format!("old-{i}"), "gpt-4o", tokens(100, 1), now - 3 * 1440 * MINUTE);
            common::with(report, "user", json!(format!("user-{i}")))
        })
        .collect();
    ingest(&base, &json!(old)).await;
    let fresh = common::with(chat("fresh", "gpt-4o", tokens(100, 1), now), "user", json!("fresh"));
    ingest(&base, &json!([fresh])).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let left = common::metric_sample(&base, "tally_series ").await;
    // One call's series and its projections (model, user, …): far fewer
    // than the 30 old users' series with a user projection each.
    assert!(left < 30.0, "{left} series left");
    server.restart();
    let base = server.url().to_owned();
    assert_eq!(
        common::metric_sample(&base, "tally_series ").await,
        left,
        "the store forgot them too"
    );
    // An old user seen again counts from its new call.
    let back = common::with(chat("back", "gpt-4o", tokens(7, 1), now), "user", json!("user-0"));
    ingest(&base, &json!([back])).await;
    let by_user = summary(&base, &[("since", "1h"), ("group_by", "user")]).await;
    let user_0 = common::group(&by_user, &json!({"user": "user-0"}));
    assert_eq!(user_0["input_tokens"].as_u64(), Some(7), "{by_user}");
}
