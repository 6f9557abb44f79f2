//! The ClickHouse schema as versioned migrations. Each migration's
//! statements are idempotent (`CREATE … IF NOT EXISTS`), so that nodes
//! starting at once may all run them; the versions applied are recorded in
//! `tally_schema` (a ReplacingMergeTree: a version recorded by two nodes
//! reads once). Statements are written for the server's dialect: codecs
//! only where it has them, and the setting 18.16 wants for LowCardinality.

use super::{ClickHouse, Dialect, StorageError, backend};

/// One step of the schema.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// The statements, for a database and a dialect.
    pub statements: fn(&Ddl<'_>) -> Vec<String>,
}

/// What statements are written for: the database and the server's dialect.
pub struct Ddl<'a> {
    pub database: &'a str,
    pub dialect: Dialect,
}

impl Ddl<'_> {
    /// `LowCardinality(ty)`: dictionary-encoded, for columns of few values.
    pub fn low_cardinality(&self, ty: &str) -> String {
        format!("LowCardinality({ty})")
    }

    /// ` CODEC(codecs)` where the server has codecs, else nothing (18.16
    /// compresses by its server-wide setting).
    pub fn codec(&self, codecs: &str) -> String {
        if self.dialect.has_codecs() { format!(" CODEC({codecs})") } else { String::new() }
    }
}

/// The schema this Tally writes and reads; later versions append here.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "calls", statements: super::calls::create },
    Migration { version: 2, name: "spans and logs", statements: super::telemetry::create },
    Migration { version: 3, name: "rollups", statements: super::rollups::create_blocks },
    Migration { version: 4, name: "metric bins", statements: super::metrics::create_blocks },
    Migration { version: 5, name: "rollup totals", statements: super::rollups::create },
    Migration { version: 6, name: "metric totals", statements: super::metrics::create },
];

/// Creates the database and the record of versions, then applies every
/// migration not yet recorded, in order. Returns the versions applied now.
pub async fn migrate(ch: &ClickHouse, migrations: &[Migration]) -> Result<Vec<u32>, StorageError> {
    let db = ch.database();
    ch.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.tally_schema \
         (version UInt32, name String, applied_at DateTime) \
         ENGINE = ReplacingMergeTree ORDER BY version"
    ))
    .await?;
    let applied: Vec<u32> = ch
        .client()
        .query(&format!("SELECT DISTINCT version FROM {db}.tally_schema ORDER BY version"))
        .fetch_all()
        .await
        .map_err(backend)?;
    if let Some(newest) = applied.last()
        && migrations.last().is_none_or(|m| m.version < *newest)
    {
        return Err(StorageError::SchemaVersion {
            found: i64::from(*newest),
            needed: migrations.last().map_or(0, |m| i64::from(m.version)),
        });
    }
    let ddl = Ddl { database: db, dialect: ch.dialect() };
    let mut client = ch.client().clone();
    if let Some(setting) = ch.dialect().low_cardinality_setting() {
        client = client.with_setting(setting, "1");
    }
    let mut now_applied = Vec::new();
    for migration in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        for sql in (migration.statements)(&ddl) {
            client
                .query(&sql)
                .execute()
                .await
                .map_err(|e| backend(format!("migration {}: {e} in: {sql}", migration.version)))?;
        }
        client
            .query(&format!(
                "INSERT INTO {db}.tally_schema (version, name, applied_at) VALUES (?, ?, now())"
            ))
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(backend)?;
        now_applied.push(migration.version);
    }
    Ok(now_applied)
}

/// The versions recorded, each once.
pub async fn recorded(ch: &ClickHouse) -> Result<Vec<(u32, String)>, StorageError> {
    ch.client()
        .query(&format!(
            "SELECT version, any(name) FROM {}.tally_schema GROUP BY version ORDER BY version",
            ch.database()
        ))
        .fetch_all()
        .await
        .map_err(backend)
}
