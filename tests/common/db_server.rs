//! The process plumbing the private database servers of the tests share
//! (ClickHouse in `clickhouse.rs`, PostgreSQL in `postgres.rs`): free ports,
//! finding a server's binary, waiting for it to answer, and stopping it with a
//! signal and then SIGKILL after a timeout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long a database server may take to answer after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a database server may take to exit after its shutdown signal.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server being dropped at the end of a test may take to exit
/// after its shutdown signal before it is SIGKILLed: its data is deleted next.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a start is retried when another process took a port between
/// our probe and the server's bind.
pub const START_ATTEMPTS: usize = 5;

/// `count` distinct ports that were free on 127.0.0.1 a moment ago: each is
/// bound to port 0 at the same time (so they differ), then released for the
/// server to take. Another process may take one in between; callers retry
/// their start on "address in use".
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    listeners.iter().map(|listener| listener.local_addr().expect("local address").port()).collect()
}

/// The first of `candidates` that exists, or the first `name` on `PATH`.
pub fn find_binary(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates.iter().map(PathBuf::from).chain(from_path).find(|path| path.is_file())
}

/// Whether the tests run as root (CI does), where PostgreSQL must be started
/// as another user.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why a wait for a server ended without it answering.
pub enum NotReady {
    /// The process exited, with this status.
    Exited(std::process::ExitStatus),
    /// It neither answered nor exited within the timeout.
    TimedOut,
}

/// Polls `ready` every 50 ms until it is true, the child exits, or
/// `START_TIMEOUT` passes.
pub fn wait_until_ready(
    child: &mut Child,
    mut ready: impl FnMut() -> bool,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("poll the server process") {
            return Err(NotReady::Exited(status));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NotReady::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal`, waits up to `timeout` for the exit, then SIGKILLs.
/// Returns whether the process exited on the signal alone.
pub fn stop_child(child: &mut Child, signal: Signal, timeout: Duration) -> bool {
    if child.try_wait().ok().flatten().is_some() {
        return true;
    }
    let _ = kill_process(Pid::from_child(child), signal);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// SIGKILLs the process and reaps it.
pub fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `max_lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}
