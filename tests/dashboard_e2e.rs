//! The dashboard end to end in headless Chromium (Debian's `chromium`,
//! driven by `playwright-core` from `ui/node_modules`): a real server gets
//! the fixed data set of `ui/e2e/dataset.mjs` through its ingest endpoints,
//! then `ui/e2e/run.mjs` checks every page against the API, clicks through
//! filters, a trace and the budget form, runs axe-core on every page and
//! saves screenshots to `ui/test-output/`. `./scripts/test` installs
//! Chromium and the npm packages when they are missing.
//!
//! `DASHBOARD_E2E_DOCS=1` also refreshes the README's screenshots in `docs/`.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

/// The whole run takes about a minute and a half on two cores.
const DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn every_page_shows_what_the_api_answers_in_a_real_browser() {
    let ui = common::browser_ui_dir();

    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), &[]);
    let mut command = Command::new("node");
    command
        .current_dir(&ui)
        .args(["e2e/run.mjs", "--url", server.url(), "--out", "test-output"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var("DASHBOARD_E2E_DOCS").is_ok_and(|v| v == "1") {
        command.args(["--docs", "../docs"]);
    }
    let mut child = command.spawn().expect("run node (Node.js 20 or newer)");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the end-to-end run did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    println!("{out}");
    assert!(
        status.success(),
        "the end-to-end run failed ({status}):\n{out}\n{err}\nserver log:\n{}",
        server.log()
    );
    // The run names each check; make sure they all ran.
    let summary = out.lines().rev().find(|l| l.ends_with(" failed")).expect("a summary line");
    assert!(summary.ends_with(", 0 failed"), "{summary}");
    let passed: usize = summary.split(' ').next().and_then(|n| n.parse().ok()).expect("a count");
    assert!(passed >= 50, "only {passed} checks ran: {summary}");
}
