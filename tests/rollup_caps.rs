//! Many distinct users, keys, routes and tag values against a real server
//! with small `[rollups]` caps: memory stays within them, what passes a cap
//! is counted under `__other__` (never dropped), the overflow shows on
//! `/metrics`, records keep their real values, and a restart rebuilds the
//! same totals.

mod common;

use common::{TestServer, all_records, get_ok, ingest, now_ms, proc_kib, summary};
use serde_json::{Value, json};

const USERS: u64 = 20_000;
const CAP: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_values_past_the_caps_are_counted_as_other() {
    let dir = tempfile::tempdir().unwrap();
    let cap = CAP.to_string();
    let mut server = TestServer::start(
        dir.path(),
        &[("TALLY_ROLLUPS__MAX_VALUES_PER_DIMENSION", &cap), ("TALLY_ROLLUPS__MAX_TAG_NAMES", "4")],
    );
    let base = server.url().to_owned();
    let now = now_ms();
    for first in (0..USERS).step_by(2_000) {
        let reports: Vec<Value> = (first..first + 2_000)
            .map(|n| {
                json!({"id": format!("r{n}"), "model": "gpt-4o-mini", "user": format!("user-{n}"),
                       "api_key": format!("sk-{n}"), "route": format!("/t/{n}"),
                       "tags": {"team": format!("team-{n}"), format!("k{}", n % 10): "v"},
                       "input_tokens": 10, "output_tokens": 2, "completed_at": now})
            })
            .collect();
        ingest(&base, &Value::Array(reports)).await;
    }

    let check = |base: String| async move {
        let by_user =
            summary(&base, &[("since", "1h"), ("group_by", "user"), ("limit", "1000")]).await;
        assert_eq!(by_user["total"]["requests"], USERS, "nothing dropped");
        assert!(
            by_user["groups_total"].as_u64().unwrap() <= CAP + 1,
            "{}",
            by_user["groups_total"]
        );
        let other = common::group(&by_user, &json!({"user": "__other__"}));
        assert_eq!(other["requests"], USERS - CAP);
        let by_tag =
            summary(&base, &[("since", "1h"), ("group_by", "tag.team"), ("limit", "1000")]).await;
        assert!(by_tag["groups_total"].as_u64().unwrap() <= CAP + 1);
        assert_eq!(by_tag["total"]["requests"], USERS);
    };
    check(base.clone()).await;

    let text =
        common::client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    common::promtool_check(&text);
    assert_eq!(
        common::sample_in(&text, "tally_rollup_overflow_calls_total{dimension=\"user\"}"),
        (USERS - CAP) as f64
    );
    assert!(common::sample_in(&text, "tally_rollup_overflow_calls_total{dimension=\"tag\"}") > 0.0);
    // Series: at most the capped values of each dimension, not one per user.
    let series = common::sample_in(&text, "tally_series ");
    assert!(series < (6 * (CAP + 1) + 20) as f64, "{series} series");
    let log = server.log();
    let user_caps =
        log.lines().filter(|l| l.contains("rollup cap reached") && l.contains("\"user\"")).count();
    assert_eq!(user_caps, 1, "logged once per dimension: {log}");

    // A record counted under __other__ keeps its own values.
    let last = USERS - 1;
    let records =
        all_records(&base, &[("since", "1h"), ("filter", "user:__other__")], 10_000).await;
    assert_eq!(records.len() as u64, USERS - CAP);
    let record = records.iter().find(|r| r["id"] == format!("r{last}")).expect("the last report");
    assert_eq!(record["user"], format!("user-{last}"));
    assert_eq!(record["route"], format!("/t/{last}"));
    assert_eq!(record["tags"]["team"], format!("team-{last}"));

    // After a crash the replay counts the same, with the caps applied again.
    common::post_json_to(&base, "/api/v1/admin/flush", &json!({})).await;
    server.restart();
    let base = server.url().to_owned();
    check(base.clone()).await;
    let rss = proc_kib(server.pid(), "VmRSS");
    assert!(rss < 300 * 1024, "server RSS {rss} KiB after restart");
    let again = get_ok(&base, "/api/v1/usage/summary", &[("since", "1h")]).await;
    assert_eq!(again["total"]["requests"], USERS);
}
