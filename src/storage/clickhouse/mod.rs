//! The ClickHouse backend's connection: a `clickhouse://` URL read into the
//! HTTP client, the server's version (18.16 lacks codecs and needs a
//! setting for LowCardinality), the schema's versioned migrations
//! (`schema`), the tables (`calls`, `rollups`, `telemetry`, `metrics`) and
//! what a node ships to them (`ship`).

pub mod calls;
pub mod metrics;
pub mod retention;
pub mod rollups;
pub mod schema;
pub mod ship;
pub mod telemetry;
pub mod totals;
pub mod traces;

use super::StorageError;

/// Where a ClickHouse database is, from
/// `clickhouse://[user[:password]@]host[:port]/database` (port: the HTTP
/// interface, 8123 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseUrl {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub http: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
}

impl ClickHouseUrl {
    /// What the local store records shipping to: the server and database.
    pub fn destination(&self) -> String {
        format!("{}/{}", self.http, self.database)
    }

    pub fn parse(url: &str) -> Result<ClickHouseUrl, String> {
        let rest = url
            .strip_prefix("clickhouse://")
            .ok_or_else(|| format!("{url:?} does not start with clickhouse://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let host = if host.contains(':') { host.to_owned() } else { format!("{host}:8123") };
        let decode = |text: &str| {
            percent_decode(text).ok_or_else(|| format!("{url:?}: bad percent-encoding in {text:?}"))
        };
        let (user, password) = match credentials {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(decode(u)?), Some(decode(p)?)),
                None => (Some(decode(c)?), None),
            },
        };
        let database = path.split('?').next().unwrap_or("");
        let database = if database.is_empty() { "tally" } else { database };
        if !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{url:?}: the database name {database:?} may hold letters, digits and _ only"
            ));
        }
        Ok(ClickHouseUrl {
            http: format!("http://{host}"),
            user,
            password,
            database: database.into(),
        })
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the server can do, by its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub major: u32,
    pub minor: u32,
}

impl Dialect {
    fn parse(version: &str) -> Option<Dialect> {
        let mut parts = version.split('.');
        Some(Dialect { major: parts.next()?.parse().ok()?, minor: parts.next()?.parse().ok()? })
    }

    /// Per-column compression codecs (`CODEC(...)`) arrived in 19.1.
    pub fn has_codecs(self) -> bool {
        self.major >= 19
    }

    /// `LowCardinality` is experimental before 19: it needs a setting on
    /// the `CREATE`, which later servers reject as unknown.
    pub fn low_cardinality_setting(self) -> Option<&'static str> {
        (self.major < 19).then_some("allow_experimental_low_cardinality_type")
    }
}

fn backend(err: impl std::fmt::Display) -> StorageError {
    StorageError::Backend { backend: "clickhouse", message: err.to_string() }
}

/// A connection to one ClickHouse database.
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    url: ClickHouseUrl,
    dialect: Dialect,
}

impl ClickHouse {
    /// Connects (the database need not exist yet) and reads the version.
    pub async fn connect(url: &ClickHouseUrl) -> Result<ClickHouse, StorageError> {
        // Validation reads RowBinaryWithNamesAndTypes, which 18.16 lacks.
        let mut client = clickhouse::Client::default().with_url(&url.http).with_validation(false);
        if let Some(user) = &url.user {
            client = client.with_user(user);
        }
        if let Some(password) = &url.password {
            client = client.with_password(password);
        }
        let version: String =
            client.query("SELECT version()").fetch_one().await.map_err(backend)?;
        let dialect = Dialect::parse(&version)
            .ok_or_else(|| backend(format!("cannot read the server version {version:?}")))?;
        Ok(ClickHouse { client, url: url.clone(), dialect })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn database(&self) -> &str {
        &self.url.database
    }

    /// What the local store records shipping to: the server and database.
    pub fn destination(&self) -> String {
        self.url.destination()
    }

    /// The client, without a default database (statements name it).
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    async fn execute(&self, sql: &str) -> Result<(), StorageError> {
        self.client.query(sql).execute().await.map_err(|e| backend(format!("{e} in: {sql}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_credentials_and_database() {
        let url =
            ClickHouseUrl::parse("clickhouse://tally:p%40ss@ch.internal:9123/metering").unwrap();
        assert_eq!(url.http, "http://ch.internal:9123");
        assert_eq!((url.user.as_deref(), url.password.as_deref()), (Some("tally"), Some("p@ss")));
        assert_eq!(url.database, "metering");
        let url = ClickHouseUrl::parse("clickhouse://127.0.0.1").unwrap();
        assert_eq!((url.http.as_str(), url.database.as_str()), ("http://127.0.0.1:8123", "tally"));
        assert!(ClickHouseUrl::parse("clickhouse:///db").is_err());
        assert!(ClickHouseUrl::parse("clickhouse://h/bad-name").is_err());
        assert!(ClickHouseUrl::parse("http://h/db").is_err());
    }

    #[test]
    fn versions_tell_what_the_dialect_has() {
        let old = Dialect::parse("18.16.1").unwrap();
        assert!(!old.has_codecs());
        assert!(old.low_cardinality_setting().is_some());
        let new = Dialect::parse("24.8.4.13").unwrap();
        assert!(new.has_codecs());
        assert_eq!(new.low_cardinality_setting(), None);
    }
}
