//! A private ClickHouse server for one test: `clickhouse-server` on 127.0.0.1
//! on free HTTP and native ports, with its config, data and logs in a
//! temporary directory; stopped (SIGTERM, then SIGKILL after a timeout) and
//! removed when dropped. `./scripts/test` installs Debian's `clickhouse-server`
//! (18.16) when it is missing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use tempfile::TempDir;

use super::db_server::{self, NotReady};

/// Where Debian and ClickHouse's own packages put the server binary.
const BINARY_CANDIDATES: &[&str] = &["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"];

/// A running `clickhouse-server` that the test owns.
pub struct ClickHouse {
    child: Option<Child>,
    binary: PathBuf,
    http_port: u16,
    tcp_port: u16,
    dir: TempDir,
}

impl ClickHouse {
    /// Starts a server on free ports and waits until `GET /ping` answers `Ok.`.
    pub fn start() -> ClickHouse {
        let binary =
            db_server::find_binary("clickhouse-server", BINARY_CANDIDATES).unwrap_or_else(|| {
                panic!(
                    "clickhouse-server not found (looked in {BINARY_CANDIDATES:?} and PATH); \
                 ./scripts/test installs Debian's clickhouse-server and clickhouse-client"
                )
            });
        let dir =
            tempfile::Builder::new().prefix("tally-clickhouse-").tempdir().expect("temporary dir");
        let mut server = ClickHouse { child: None, binary, http_port: 0, tcp_port: 0, dir };
        for attempt in 1..=db_server::START_ATTEMPTS {
            let ports = db_server::free_ports(2);
            server.http_port = ports[0];
            server.tcp_port = ports[1];
            server.write_config();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(NotReady::Exited(_))
                    if attempt < db_server::START_ATTEMPTS
                        && server.error_log().contains("Address already in use") =>
                {
                    continue;
                }
                Err(reason) => server.fail_start(reason),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The native protocol port (what `clickhouse-client --port` takes).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// A client of the `clickhouse` crate for this server. Validation is off:
    /// it reads and writes `RowBinaryWithNamesAndTypes`, which 18.16 lacks, so
    /// rows go as plain `RowBinary` and the struct must match the columns.
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(self.http_url()).with_validation(false)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Shuts the server down (SIGTERM; SIGKILL if it takes longer than
    /// `STOP_TIMEOUT`), keeping its data for `restart`. 18.16 waits for its
    /// open connections first: idle keep-alive ones close within 3 s, but one
    /// a client opened without sending a request holds it about 15 s.
    pub fn stop(&mut self) {
        self.stop_within(db_server::STOP_TIMEOUT);
    }

    fn stop_within(&mut self, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            db_server::stop_child(&mut child, Signal::TERM, timeout);
        }
    }

    /// SIGKILLs the server, keeping its data for `restart`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            db_server::kill_child(&mut child);
        }
    }

    /// Starts the stopped (or killed) server again on the same ports and data.
    /// A client's pooled connections to the old process are dead: the first
    /// request on one fails with `IncompleteMessage`, so take a new `client()`
    /// (or retry, as a real client must).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(reason) = self.spawn_and_wait() {
            self.fail_start(reason);
        }
    }

    /// The server's log so far (`<logger><log>`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn error_log(&self) -> String {
        let path = self.dir.path();
        let mut text = std::fs::read_to_string(path.join("error.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(path.join("console.log")).unwrap_or_default());
        text
    }

    fn spawn_and_wait(&mut self) -> Result<(), NotReady> {
        let path = self.dir.path();
        let console = std::fs::File::create(path.join("console.log")).expect("create console.log");
        let mut child = Command::new(&self.binary)
            .arg(format!("--config-file={}", path.join("config.xml").display()))
            .current_dir(path)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("clone console.log"))
            .stderr(console)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", self.binary.display()));
        let port = self.http_port;
        let result = db_server::wait_until_ready(&mut child, || answers_ping(port));
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
                format!("did not answer GET /ping within {:?}", db_server::START_TIMEOUT)
            }
        };
        panic!(
            "clickhouse-server on 127.0.0.1:{} {what}; its errors:\n{}\n{}",
            self.http_port,
            db_server::log_tail(&self.dir.path().join("error.log"), 30),
            db_server::log_tail(&self.dir.path().join("console.log"), 30),
        )
    }

    /// Writes `config.xml` and `users.xml`: listen on 127.0.0.1 only, UTC,
    /// everything under the temporary dir, no system log tables, and one
    /// `default` user without a password, reachable from 127.0.0.1 only.
    fn write_config(&self) {
        let path = self.dir.path();
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(path.join(sub)).expect("create ClickHouse dirs");
        }
        let dir = path.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{dir}/server.log</log>
        <errorlog>{dir}/error.log</errorlog>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <timezone>UTC</timezone>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <!-- 18.16 waits out idle keep-alive connections when it shuts down, and
         defaults to 10 s without this line; the client crate closes its idle
         connections after 2 s, so 3 s never races it. -->
    <keep_alive_timeout>3</keep_alive_timeout>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default/>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default/>
    </quotas>
</yandex>
"#;
        write(&path.join("config.xml"), &config);
        write(&path.join("users.xml"), users);
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        // The test's client connections may still be open (a blocked
        // current-thread runtime cannot close them), which would hold a
        // graceful shutdown for seconds; the data is deleted next anyway.
        self.stop_within(db_server::DROP_TIMEOUT);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// Whether `GET /ping` on the HTTP port answers 200 `Ok.`.
fn answers_ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.")
        && response.lines().next().is_some_and(|status| status.contains(" 200 "))
        && response.ends_with("Ok.\n")
}

/// Merges `database.table` down to one part a partition. `OPTIMIZE ... FINAL`
/// silently does nothing to a partition a background merge is working on,
/// so it is asked again until every partition is one part (at most 10 s).
pub async fn merge_fully(client: &clickhouse::Client, database: &str, table: &str) {
    let optimize = format!("OPTIMIZE TABLE {database}.{table} FINAL");
    let parts = format!(
        "SELECT count(), uniqExact(partition) FROM system.parts \
         WHERE database = '{database}' AND table = '{table}' AND active"
    );
    for _ in 0..100 {
        client.query(&optimize).execute().await.unwrap_or_else(|err| panic!("{optimize}: {err}"));
        let (parts, partitions) =
            client.query(&parts).fetch_one::<(u64, u64)>().await.expect("count parts");
        if parts == partitions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{database}.{table} was not merged to one part a partition within 10 s");
}
