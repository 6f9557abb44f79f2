//! One data dir, one server: a second `tally serve` on a data dir in use
//! refuses to start (two would hand out the same series ids).

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
