//! One data dir, one server: a second `tally serve` on a data dir in use
//! refuses to start (two would hand out the same series ids). A clean stop
//! leaves no log; a store keeps the page size it was made with.

mod common;

use std::process::Command;

use common::TestServer;

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = TestServer::start(dir.path(), &[]);
    let second = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally serve");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another tally process"), "stderr: {stderr}");
}

/// A clean stop folds the write-ahead log into the database: the data dir
/// holds no log of any size afterwards, and everything is there at the
/// next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_no_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]);
    let reports: Vec<serde_json::Value> = (0..5_000)
        .map(|i| {
            common::chat(&format!("wal-{i}"), "gpt-4o", common::tokens(100, 10), common::now_ms())
        })
        .collect();
    for batch in reports.chunks(1_000) {
        let (accepted, _) = common::ingest(server.url(), &serde_json::json!(batch)).await;
        assert_eq!(accepted, 1_000);
    }
    let wal = dir.path().join("tally.db-wal");
    let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(before > 0, "the running server writes through its log");
    assert!(server.terminate().success());
    let after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(after, 0, "{before} bytes of log before the stop, {after} after");
    server.restart();
    let summary = common::summary(server.url(), &[]).await;
    assert_eq!(summary["total"]["requests"], 5_000, "{summary}");
}

fn vacuum(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["vacuum", "--data-dir"])
        .arg(dir)
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally vacuum")
}

/// `tally vacuum` on a dir without a store says so and makes none.
#[test]
fn vacuum_without_a_store_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = vacuum(dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tally.db"), "{stderr}");
    assert!(!dir.path().join("tally.db").exists());
}

fn page_size(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("tally.db")).unwrap();
    conn.pragma_query_value(None, "page_size", |row| row.get(0)).unwrap()
}

/// A store is made with 16 KiB pages; one made with 8 KiB (by an earlier
/// version) keeps them and goes on taking reports, and gets 16 KiB pages
/// from `tally vacuum` (refused while its server runs), its reports still
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_made_with_16_kib_pages_and_one_of_8_keeps_its_own() {
    let (new, old) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    {
        let conn = rusqlite::Connection::open(old.path().join("tally.db")).unwrap();
        conn.execute_batch("PRAGMA page_size = 8192; CREATE TABLE t (x); DROP TABLE t;").unwrap();
    }
    for (dir, pages) in [(&new, 16_384), (&old, 8_192)] {
        let mut server = TestServer::start(dir.path(), &[]);
        let reports: Vec<serde_json::Value> = (0..200)
            .map(|i| {
                common::chat(
                    &format!("page-{i}"),
                    "gpt-4o",
                    common::tokens(10, 1),
                    common::now_ms(),
                )
            })
            .collect();
        assert_eq!(common::ingest(server.url(), &serde_json::json!(reports)).await.0, 200);
        assert!(server.terminate().success());
        assert_eq!(page_size(dir.path()), pages);
        server.restart();
        let summary = common::summary(server.url(), &[]).await;
        assert_eq!(summary["total"]["requests"], 200, "{summary}");
        if pages == 8_192 {
            let refused = vacuum(dir.path());
            assert!(!refused.status.success());
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(stderr.contains("in use by another tally process"), "{stderr}");
            assert_eq!(page_size(dir.path()), 8_192);
            assert!(server.terminate().success());
            let done = vacuum(dir.path());
            let stdout = String::from_utf8_lossy(&done.stdout);
            assert!(done.status.success(), "{stdout} {}", String::from_utf8_lossy(&done.stderr));
            assert!(
                stdout.contains("in pages of 8192 -> ") && stdout.contains("in pages of 16384")
            );
            assert_eq!(page_size(dir.path()), 16_384);
            server.restart();
            let summary = common::summary(server.url(), &[]).await;
            assert_eq!(summary["total"]["requests"], 200, "{summary}");
        }
    }
}
