//! A private PostgreSQL server for one test: `initdb` into a temporary
//! directory, then `postgres` on 127.0.0.1 on a free port (trust auth, user
//! `postgres`, its socket in the same directory), with a fresh database per
//! caller; stopped (fast shutdown, then SIGKILL after a timeout) and removed
//! when dropped. PostgreSQL refuses to run as root, so as root both run as the
//! `postgres` user that Debian's package creates. `./scripts/test` installs
//! Debian's `postgresql` when it is missing.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::process::Signal;
use tempfile::TempDir;

use super::db_server::{self, NotReady};

/// Where Debian installs each PostgreSQL version's programs.
const DEBIAN_VERSIONS_DIR: &str = "/usr/lib/postgresql";
/// The superuser `initdb` creates, which the tests connect as.
pub const SUPERUSER: &str = "postgres";

/// A running PostgreSQL server that the test owns.
pub struct Postgres {
    child: Option<Child>,
    bin_dir: PathBuf,
    /// The uid and gid the server runs as when the tests run as root.
    run_as: Option<(u32, u32)>,
    port: u16,
    dir: TempDir,
    databases_created: AtomicU32,
}

impl Postgres {
    /// Creates a cluster and starts it on a free port; returns once
    /// `pg_isready` says it accepts connections.
    pub fn start() -> Postgres {
        let bin_dir = find_bin_dir();
        let dir =
            tempfile::Builder::new().prefix("tally-postgres-").tempdir().expect("temporary dir");
        let run_as = db_server::running_as_root().then(postgres_user_ids);
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL dir");
        }
        let mut server = Postgres {
            child: None,
            bin_dir,
            run_as,
            port: 0,
            dir,
            databases_created: AtomicU32::new(0),
        };
        server.init_cluster();
        for attempt in 1..=db_server::START_ATTEMPTS {
            server.port = db_server::free_ports(1)[0];
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(NotReady::Exited(_))
                    if attempt < db_server::START_ATTEMPTS
                        && server.log().contains("already in use") =>
                {
                    continue;
                }
                Err(reason) => server.fail_start(reason),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database and returns its connection URL.
    pub fn fresh_database(&self) -> String {
        let number = self.databases_created.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("tally_test_{number}");
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-w", &name])
            .stdin(Stdio::null())
            .output()
            .expect("run createdb");
        assert!(
            output.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.url(&name)
    }

    /// Shuts the server down (SIGINT: fast shutdown, which rolls back open
    /// transactions and closes connections; SIGKILL after `STOP_TIMEOUT`),
    /// keeping its data for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            db_server::stop_child(&mut child, Signal::INT, db_server::STOP_TIMEOUT);
        }
    }

    /// Crashes the server: SIGQUIT is PostgreSQL's immediate shutdown, which
    /// ends every backend without a checkpoint, so `restart` runs crash
    /// recovery from the write-ahead log.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            db_server::stop_child(&mut child, Signal::QUIT, db_server::STOP_TIMEOUT);
        }
    }

    /// Starts the stopped (or crashed) server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(reason) = self.spawn_and_wait() {
            self.fail_start(reason);
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command that runs `program` from the server's version, as the
    /// `postgres` user when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn init_cluster(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb {} failed:\n{}{}",
            self.data_dir().display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn spawn_and_wait(&mut self) -> Result<(), NotReady> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open postgres.log");
        // Durability settings are off: the tests crash the server process,
        // never the machine, and the page cache survives a process crash.
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
            .args(["-c", "shared_buffers=32MB", "-c", "max_connections=200"])
            .stdout(log.try_clone().expect("clone postgres.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("start {}: {err}", self.bin_dir.join("postgres").display())
            });
        let pg_isready = self.bin_dir.join("pg_isready");
        let port = self.port.to_string();
        let result = db_server::wait_until_ready(&mut child, || {
            Command::new(&pg_isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                    "-t",
                    "1",
                ])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        match result {
            Ok(()) => self.child = Some(child),
            Err(NotReady::TimedOut) => db_server::kill_child(&mut child),
            Err(NotReady::Exited(_)) => {}
        }
        result
    }

    fn fail_start(&self, reason: NotReady) -> ! {
        let what = match reason {
            NotReady::Exited(status) => format!("exited ({status})"),
            NotReady::TimedOut => {
                format!("did not accept connections within {:?}", db_server::START_TIMEOUT)
            }
        };
        panic!(
            "postgres on 127.0.0.1:{} {what}; its log:\n{}",
            self.port,
            db_server::log_tail(&self.log_path(), 30)
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with a `postgres` in it,
/// else the directory `pg_config --bindir` names.
fn find_bin_dir() -> PathBuf {
    let newest_debian = std::fs::read_dir(DEBIAN_VERSIONS_DIR)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    if let Some(bin) = newest_debian {
        return bin;
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|bin| bin.join("postgres").is_file());
    from_pg_config.unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs not found (no {DEBIAN_VERSIONS_DIR}/<version>/bin/postgres, \
             and no pg_config --bindir with one); ./scripts/test installs Debian's postgresql"
        )
    })
}

/// The uid and gid of the `postgres` user.
fn postgres_user_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id").args([flag, SUPERUSER]).output().expect("run id");
        assert!(
            output.status.success(),
            "no `{SUPERUSER}` user to run PostgreSQL as (PostgreSQL refuses to run as root); \
             ./scripts/test installs Debian's postgresql, which creates it"
        );
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("numeric id")
    };
    (id("-u"), id("-g"))
}
