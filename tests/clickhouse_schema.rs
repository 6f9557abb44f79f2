//! The ClickHouse schema's migrations against a real server (Debian's
//! clickhouse-server, started on free ports by tests/common): nodes that
//! start at once apply each migration and record each version once; a
//! rerun applies nothing; a new version applies alone; a database ahead of
//! this Tally is refused.

mod common;

use common::clickhouse::ClickHouse as Server;
use tally::storage::clickhouse::schema::{self, Ddl, Migration};
use tally::storage::clickhouse::{ClickHouse, ClickHouseUrl};

fn calls(ddl: &Ddl<'_>) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.calls (day Date, project {lc}, seq UInt64, \
         time_ms UInt64{delta}) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (project, seq)",
        db = ddl.database,
        lc = ddl.low_cardinality("String"),
        delta = ddl.codec("Delta, ZSTD"),
    )]
}

fn spans(ddl: &Ddl<'_>) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.spans (day Date, service {lc}, name String) \
         ENGINE = MergeTree PARTITION BY day ORDER BY service",
        db = ddl.database,
        lc = ddl.low_cardinality("String"),
    )]
}

const FIRST: &[Migration] = &[Migration { version: 1, name: "calls", statements: calls }];
const BOTH: &[Migration] = &[
    Migration { version: 1, name: "calls", statements: calls },
    Migration { version: 2, name: "spans", statements: spans },
];

async fn connect(server: &Server, database: &str) -> ClickHouse {
    let url = ClickHouseUrl::parse(&format!(
        "clickhouse://{}/{database}",
        server.http_url().trim_start_matches("http://")
    ))
    .unwrap();
    ClickHouse::connect(&url).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_apply_each_migration_once() {
    let server = Server::start();
    let (a, b) = (connect(&server, "tally_a").await, connect(&server, "tally_a").await);
    // Two nodes at once: both succeed, whoever ran which statement.
    let (ra, rb) = tokio::join!(schema::migrate(&a, FIRST), schema::migrate(&b, FIRST));
    ra.expect("node a migrates");
    rb.expect("node b migrates");
    let recorded = schema::recorded(&a).await.unwrap();
    assert_eq!(recorded, vec![(1, "calls".to_owned())]);
    // The table is there, with the dialect's column types.
    let columns: Vec<(String, String)> = a
        .client()
        .query("SELECT name, type FROM system.columns WHERE database = 'tally_a' AND table = 'calls' ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    assert!(
        columns.contains(&("project".to_owned(), "LowCardinality(String)".to_owned())),
        "{columns:?}"
    );
    // A rerun applies nothing; a new version applies alone.
    assert_eq!(schema::migrate(&a, FIRST).await.unwrap(), Vec::<u32>::new());
    assert_eq!(schema::migrate(&b, BOTH).await.unwrap(), vec![2]);
    assert_eq!(schema::recorded(&a).await.unwrap().len(), 2);
    // A Tally that knows only version 1 refuses a database at version 2.
    let err = schema::migrate(&a, FIRST).await.unwrap_err();
    assert!(err.to_string().contains("schema version 2"), "{err}");
    // The dialect this server speaks.
    assert!(!a.dialect().has_codecs(), "Debian's 18.16 has no codecs: {:?}", a.dialect());
}
