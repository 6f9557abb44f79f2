//! `tally bench soak` as a black box, bounded: a minute of mixed load with
//! two SIGKILL restarts must keep every acknowledged record exactly once,
//! and the same run against a server told to forget spans (a one-second
//! raw retention) must say FAIL and exit non-zero, so the checks can fail.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long a soak of a minute may take in all: the load, resends after it
/// (at most a minute), the checks, and a slow debug build on a busy machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `tally bench soak` with `args`; returns whether it succeeded and
/// what it printed.
fn soak(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(tally_binary())
        .args(["bench", "soak", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("TALLY_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tally bench soak");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).expect("read stdout");
        text
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tally bench soak ran past {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = reader.join().expect("stdout reader");
    println!("{text}");
    (status.success(), text)
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line"))
}

#[test]
fn a_minute_with_two_restarts_keeps_every_acknowledged_record_once() {
    let dir = tempfile::tempdir().unwrap();
    // A debug build answers slower than the release build the 1 s limit is
    // meant for, so the latency bound here is looser.
    let (ok, text) = soak(
        dir.path(),
        &[
            "--duration=60s",
            "--restarts=2",
            "--rate=5",
            "--slow-connections=4",
            "--latency-limit=10s",
            "--seed=7",
        ],
    );
    assert!(ok, "the soak failed:\n{text}");
    assert!(!text.lines().any(|l| l.starts_with("FAIL")), "{text}");
    for check in ["PASS usage", "PASS spans", "PASS traces", "PASS points", "PASS no crash"] {
        line(&text, check);
    }
    assert!(line(&text, "  restarts").starts_with("  restarts        2 "), "{text}");
    // The checks compared real numbers, not zeros.
    let acknowledged = line(&text, "  acknowledged");
    assert!(!acknowledged.contains(" 0 usage reports"), "{acknowledged}");
    assert!(!acknowledged.contains(" 0 spans"), "{acknowledged}");
    assert!(!acknowledged.contains(" 0 metric points"), "{acknowledged}");
}

#[test]
fn a_server_that_forgets_spans_fails_the_soak() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = soak(
        dir.path(),
        &[
            "--duration=15s",
            "--restarts=0",
            "--rate=5",
            "--slow-connections=1",
            "--latency-limit=10s",
            "--server-env=TALLY_RETENTION__RAW=1s",
            "--server-env=TALLY_RETENTION__CHECK_INTERVAL=1s",
        ],
    );
    assert!(!ok, "the soak passed against a server that deletes spans:\n{text}");
    line(&text, "FAIL spans");
    line(&text, "FAIL traces");
    // Usage totals come from rollups, which the raw retention leaves alone.
    line(&text, "PASS usage");
}
