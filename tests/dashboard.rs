//! The web dashboard as a browser gets it from the binary: run from a
//! working directory without `ui/` (the files are embedded), `/` and deep
//! links serve the app, its scripts come gzipped and cached for good, and
//! the API's own paths keep their meaning.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tally_binary;

/// Starts `tally serve` with `cwd` as its working directory; returns the
/// child and its base URL.
fn serve_in(cwd: &std::path::Path, data: &std::path::Path) -> (std::process::Child, String) {
    let mut command = Command::new(tally_binary());
    // Only the defaults: `TALLY_*` variables are config keys.
    for (name, _) in std::env::vars() {
        if name.starts_with("TALLY_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .current_dir(cwd)
        .env("TALLY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tally serve");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let url = loop {
        let line = lines.next().expect("tally printed its listening line").expect("read stdout");
        if let Some(url) = line.strip_prefix("tally listening on ")
            && url.starts_with("http://")
        {
            break url.to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

#[tokio::test]
async fn the_binary_serves_its_dashboard_without_the_ui_sources() {
    let cwd = tempfile::tempdir().expect("temp dir");
    assert!(!cwd.path().join("ui").exists());
    let data = tempfile::tempdir().expect("temp dir");
    let (mut child, url) = serve_in(cwd.path(), data.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_gzip()
        .build()
        .expect("client");

    let index = client.get(format!("{url}/")).send().await.expect("GET /");
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let html = index.text().await.expect("body");
    assert!(html.contains(r#"<div id="app">"#), "not the dashboard: {html}");
    let script = regex::Regex::new(r#"src="/(assets/[^"]+\.js)""#)
        .expect("valid regex")
        .captures(&html)
        .unwrap_or_else(|| panic!("no script in {html}"))[1]
        .to_owned();

    // A client-side route gets the same page.
    let deep = client
        .get(format!("{url}/traces/5b8efff798038103d269b633813fc60c?span=1"))
        .send()
        .await
        .expect("GET deep link");
    assert_eq!(deep.status(), 200);
    assert_eq!(deep.text().await.expect("body"), html);

    let plain = client.get(format!("{url}/{script}")).send().await.expect("GET script");
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(plain.headers()["cache-control"], "public, max-age=31536000, immutable");
    let plain_len = plain.bytes().await.expect("body").len();
    let packed = client
        .get(format!("{url}/{script}"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .expect("GET script gzipped");
    assert_eq!(packed.headers()["content-encoding"], "gzip");
    let packed = packed.bytes().await.expect("body");
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut unpacked)
        .expect("valid gzip");
    assert_eq!(unpacked.len(), plain_len);
    // The issue's budget for the dashboard's JavaScript.
    assert!(packed.len() < 250 * 1024, "the script is {} bytes gzipped", packed.len());

    let missing =
        client.get(format!("{url}/assets/index-00000000.js")).send().await.expect("GET missing");
    assert_eq!(missing.status(), 404);

    // The API keeps its paths: unknown ones are 404 in its error shape.
    let unknown =
        client.get(format!("{url}/api/v1/nothing-here")).send().await.expect("GET unknown api");
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(client.get(format!("{url}/healthz")).send().await.expect("healthz").status(), 200);
    let metrics = client.get(format!("{url}/metrics")).send().await.expect("metrics");
    assert!(metrics.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let post = client.post(format!("{url}/usage")).body("{}").send().await.expect("POST page");
    assert_eq!(post.status(), 405);

    let _ = child.kill();
    let _ = child.wait();
}
