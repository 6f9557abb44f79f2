//! `GET /api/v1/usage/prices`: the models in use in a window with their
//! usage and the price each matches (the dashboard's Prices page), checked
//! against the catalog read independently.

mod common;

use common::{
    TestServer, catalog_price, chat, expected_cost, get, get_ok, ingest, now_ms, tokens, with,
};
use serde_json::{Value, json};

#[tokio::test]
async fn models_in_use_come_with_their_matched_price_or_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), &[]);
    let url = server.url();
    let now = now_ms();
    let reports = json!([
        with(chat("a", "gpt-4o", tokens(1000, 100), now - 60_000), "provider", json!("openai")),
        with(chat("b", "gpt-4o", tokens(3000, 200), now - 120_000), "provider", json!("openai")),
        with(
            chat("c", "no-such-model-x", tokens(500, 50), now - 60_000),
            "provider",
            json!("acme")
        ),
        // Outside the window asked for below.
        with(
            chat("d", "gpt-4o-mini", tokens(10, 10), now - 3 * 3_600_000),
            "provider",
            json!("openai")
        ),
    ]);
    assert_eq!(ingest(url, &reports).await, (4, 0));

    let answer = get_ok(url, "/api/v1/usage/prices", &[("since", "1h")]).await;
    let models = answer["models"].as_array().expect("models");
    let find = |name: &str| -> &Value {
        models
            .iter()
            .find(|m| m["model"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {answer}"))
    };
    assert_eq!(models.len(), 2, "{answer}");

    let gpt = find("gpt-4o");
    let price = catalog_price("gpt-4o");
    assert_eq!(gpt["provider"], "openai");
    assert_eq!(gpt["requests"], 2);
    assert_eq!(gpt["unpriced_requests"], 0);
    assert_eq!(gpt["input_tokens"], 4000);
    let cost = expected_cost(&price, &tokens(4000, 300));
    common::assert_cost(gpt["cost_usd"].as_f64().expect("cost"), cost, "gpt-4o");
    assert_eq!(gpt["price"]["price_id"], "catalog:gpt-4o");
    assert_eq!(gpt["price"]["source"], "catalog");
    assert_eq!(gpt["price"]["input_per_token"].as_f64(), Some(price.input));
    assert_eq!(gpt["price"]["output_per_token"].as_f64(), Some(price.output));
    assert_eq!(gpt["price"]["cache_read_per_token"].as_f64(), price.cache_read);

    let unknown = find("no-such-model-x");
    assert_eq!(unknown["price"], Value::Null);
    assert_eq!(unknown["unpriced_requests"], 1);
    assert_eq!(unknown["cost_usd"].as_f64(), Some(0.0));

    // The window parameters are checked like every usage query's.
    get(url, "/api/v1/usage/prices", &[("since", "soon")])
        .await
        .assert_error(400, Some("bad_request"));
}
