//! The command line against a live server: `tally usage` in json, csv and table formats, `tally
//! prices` (catalog and config prices, unknown model), and `tally reprice` after a price change in
//! the config file.

mod common;

use common::*;
use serde_json::{Value, json};

/// Two models, two users, in the last hour; returns the expected totals by
/// model.
async fn ingest_fixture(url: &str) -> Vec<(&'static str, Expect)> {
    let t0 = now_ms() - 20 * MINUTE_MS;
    let data = [
        ("gpt-4o", "ann", tokens(1200, 300), 1),
        ("gpt-4o", "ben", tokens(800, 100), 2),
        ("gpt-4o-mini", "ann", tokens(5000, 700), 1),
    ];
    let reports: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, (model, user, t, n))| {
            let r = with(chat(&format!("cli-{i}"), model, *t, t0), "user", json!(user));
            with(r, "request_count", json!(n))
        })
        .collect();
    ingest(url, &Value::Array(reports)).await;
    ["gpt-4o", "gpt-4o-mini"]
        .into_iter()
        .map(|m| {
            let e = Expect::sum(
                &data
                    .iter()
                    .filter(|d| d.0 == m)
                    .map(|d| Expect::call(Some(&catalog_price(d.0)), d.2, d.3))
                    .collect::<Vec<_>>(),
            );
            (m, e)
        })
        .collect()
}

#[tokio::test]
async fn usage_command_prints_the_totals_as_json_csv_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let by_model = ingest_fixture(server.url()).await;
    let total = Expect::sum(by_model.iter().map(|(_, e)| e));
    let base = ["usage", "--server", server.url(), "--since", "24h", "--by", "model"];

    // JSON: the summary document.
    let out = run_tally(&[&base[..], &["--format", "json"]].concat(), &[]).await;
    assert!(out.success, "tally usage --format json failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    total.assert_matches(&doc["total"], "json total");
    for (model, e) in &by_model {
        e.assert_matches(group(&doc, &json!({ "model": model })), model);
    }

    // CSV: header plus one row per model.
    let out = run_tally(&[&base[..], &["--format", "csv"]].concat(), &[]).await;
    assert!(out.success, "tally usage --format csv failed: {}", out.stderr);
    let rows = csv_maps(&out.stdout);
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    for (model, e) in &by_model {
        let row = rows.iter().find(|r| r["model"] == *model).unwrap();
        assert_eq!(csv_u64(row, "requests"), e.requests);
        assert_eq!(csv_u64(row, "input_tokens"), e.input_tokens);
        assert_eq!(csv_u64(row, "output_tokens"), e.output_tokens);
        assert_eq!(csv_u64(row, "total_tokens"), e.total_tokens);
        assert_cost(csv_f64(row, "cost_usd"), e.cost_usd, "csv cost");
    }

    // Table (the default format): a row per model and a TOTAL row.
    for args in [&base[..], &[&base[..], &["--format", "table"]].concat()[..]] {
        let out = run_tally(args, &[]).await;
        assert!(out.success, "tally usage (table) failed: {}", out.stderr);
        let lines: Vec<Vec<&str>> =
            out.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines.len(), 4, "header, two models, total:\n{}", out.stdout);
        assert_eq!(lines[0][0], "MODEL");
        let row = |first: &str| {
            lines
                .iter()
                .find(|l| l[0] == first)
                .unwrap_or_else(|| panic!("no row {first}:\n{}", out.stdout))
                .clone()
        };
        for (name, e) in by_model.iter().map(|(m, e)| (*m, e)).chain([("TOTAL", &total)]) {
            let r = row(name);
            // MODEL REQUESTS INPUT OUTPUT CACHE_READ TOTAL ERRORS COST_USD
            assert_eq!(r[1], e.requests.to_string(), "{name} requests");
            assert_eq!(r[2], e.input_tokens.to_string(), "{name} input");
            assert_eq!(r[3], e.output_tokens.to_string(), "{name} output");
            assert_eq!(r[5], e.total_tokens.to_string(), "{name} total");
            assert_eq!(r[7], format!("{:.6}", e.cost_usd), "{name} cost");
        }
    }

    // Grouped by user, filtered to one model.
    let out = run_tally(
        &[
            "usage",
            "--server",
            server.url(),
            "--since",
            "24h",
            "--by",
            "user",
            "--filter",
            "model:gpt-4o",
            "--format",
            "json",
        ],
        &[],
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    by_model[0].1.assert_matches(&doc["total"], "filtered");
    assert_eq!(doc["groups"].as_array().unwrap().len(), 2);

    // A server that is not there: a clear failure, not a hang.
    let out =
        run_tally(&["usage", "--server", "http://127.0.0.1:9", "--format", "json"], &[]).await;
    assert!(!out.success);
    // A query the server refuses: its message is shown.
    let out = run_tally(&["usage", "--server", server.url(), "--by", "colour"], &[]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("colour"), "{}", out.stderr);
}

#[tokio::test]
async fn prices_command_shows_the_catalog_price_and_fails_on_unknown_models() {
    let out = run_tally(&["prices", "gpt-4o"], &[]).await;
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("catalog:gpt-4o"), "{}", out.stdout);
    let p = catalog_price("gpt-4o");
    let line = |label: &str| -> String {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line:\n{}", out.stdout))
            .to_owned()
    };
    assert!(line("input").contains(&format!("${:.4}", p.input * 1e6)), "{}", out.stdout);
    assert!(line("output").contains(&format!("${:.4}", p.output * 1e6)), "{}", out.stdout);
    assert!(
        line("cache read").contains(&format!("${:.4}", p.cache_read.unwrap() * 1e6)),
        "{}",
        out.stdout
    );

    let out = run_tally(&["prices", "no-such-model-xyz"], &[]).await;
    assert!(!out.success, "unknown model must fail: {}", out.stdout);
    assert!(out.stderr.contains("no-such-model-xyz"), "{}", out.stderr);

    // A config override wins over the catalog.
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "prices.toml",
        "[[prices]]\nmodel = \"gpt-4o\"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n",
    );
    let out = run_tally(&["prices", "gpt-4o", "--config", &config], &[]).await;
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("config:"), "{}", out.stdout);
    assert!(line_of(&out.stdout, "input").contains("$1.0000"));
    assert!(line_of(&out.stdout, "output").contains("$2.0000"));
}

fn line_of<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} line:\n{text}"))
}

/// The config price of the reprice test: $1 / $2 per million, no cache price.
fn config_cost(t: &Tokens) -> f64 {
    let price =
        Price { input: 1e-6, output: 2e-6, cache_read: None, cache_write: None, reasoning: None };
    expected_cost(&price, t)
}

#[tokio::test]
async fn reprice_after_a_config_price_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plain = write_file(dir.path(), "plain.toml", "[accounting]\nbytes_per_input_token = 4\n");
    let priced = write_file(
        dir.path(),
        "priced.toml",
        "[[prices]]\nmodel = \"gpt-4o\"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n",
    );
    let now = now_ms();
    let catalog = catalog_price("gpt-4o");
    // (id, completed_at, tokens): two inside the re-priced window, one before it.
    let calls = [
        (
            "in-90m",
            now - 90 * MINUTE_MS,
            Tokens { input: 10_000, output: 2_000, cache_read: 4_000, ..Tokens::default() },
        ),
        ("in-30m", now - 30 * MINUTE_MS, tokens(3_000, 500)),
        ("old-5h", now - 5 * HOUR_MS, tokens(7_000, 900)),
    ];

    let mut server = TestServer::start_with_args(&data, &[], &["--config", &plain]);
    let reports: Vec<Value> = calls
        .iter()
        .map(|(id, at, t)| with(chat(id, "gpt-4o", *t, *at), "provider", json!("openai")))
        .collect();
    ingest(server.url(), &Value::Array(reports)).await;
    let catalog_total: f64 = calls.iter().map(|c| expected_cost(&catalog, &c.2)).sum();
    assert_cost(
        summary(server.url(), &[]).await["total"]["cost_usd"].as_f64().unwrap(),
        catalog_total,
        "catalog cost",
    );
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    drop(server);

    let mut server = TestServer::start_with_args(&data, &[], &["--config", &priced]);
    // Stored costs do not change by themselves...
    assert_cost(
        summary(server.url(), &[]).await["total"]["cost_usd"].as_f64().unwrap(),
        catalog_total,
        "before reprice",
    );
    // ...while new calls get the new price at once.
    let fresh = tokens(1_000, 100);
    ingest(server.url(), &chat("fresh-10m", "gpt-4o", fresh, now - 10 * MINUTE_MS)).await;

    let from = rfc3339(now - 2 * HOUR_MS);
    let to = (now_ms() + MINUTE_MS).to_string();
    let out =
        run_tally(&["reprice", "--from", &from, "--to", &to, "--server", server.url()], &[]).await;
    assert!(out.success, "tally reprice failed: {}", out.stderr);
    assert!(out.stdout.contains("repriced 3 calls (2 changed)"), "{}", out.stdout);

    let repriced = config_cost(&calls[0].2) + config_cost(&calls[1].2) + config_cost(&fresh);
    let want = repriced + expected_cost(&catalog, &calls[2].2);
    let check = |url: String, what: &'static str| async move {
        let s = summary(&url, &[]).await;
        assert_cost(s["total"]["cost_usd"].as_f64().unwrap(), want, what);
        // The series (other tiers) agrees.
        let h = series(&url, &[("step", "1h")]).await;
        let series_cost: f64 = h["groups"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["cost_usd"].as_f64().unwrap())
            .sum();
        assert_cost(series_cost, want, what);
        let d = summary(&url, &[("since", "3d")]).await;
        assert_cost(d["total"]["cost_usd"].as_f64().unwrap(), want, what);
        let records = all_records(&url, &[], 100).await;
        assert_eq!(records.len(), 4);
        for r in &records {
            let id = r["id"].as_str().unwrap();
            let price_id = r["price_id"].as_str().unwrap_or("");
            if id == "old-5h" {
                assert_eq!(price_id, "catalog:gpt-4o", "{what}: outside the window");
            } else {
                assert!(price_id.starts_with("config:"), "{what}: {id} has {price_id}");
            }
        }
        let in_90 = records.iter().find(|r| r["id"] == "in-90m").unwrap();
        assert_cost(in_90["cost_usd"].as_f64().unwrap(), config_cost(&calls[0].2), "in-90m record");
    };
    check(server.url().to_owned(), "after reprice").await;

    // Durable: survives a SIGKILL.
    server.kill_9();
    server.restart();
    check(server.url().to_owned(), "after reprice and a kill").await;

    // A window the wrong way round is an error.
    let out =
        run_tally(&["reprice", "--from", &to, "--to", &from, "--server", server.url()], &[]).await;
    assert!(!out.success);
}
