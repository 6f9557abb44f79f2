//! A node of a cluster: several Tally nodes over one ClickHouse database
//! (records, shipped from each node's local store) and one PostgreSQL
//! database (claims on call keys, so that a call sent to two nodes counts
//! once). This module owns the node's name, its settings, the health of its
//! links to both stores, and the parts that run them: the claims the
//! committer asks (`claims`), the outbox it fills (`outbox`) and the task
//! that empties it (`shipper`).

pub mod access;
pub mod budgets;
pub mod claims;
pub mod control;
pub mod link;
pub mod outbox;
pub mod reads;
pub mod shipper;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::ConfigError;
use crate::durability::shared::Shared;
use crate::storage::clickhouse::ClickHouseUrl;

/// `[cluster]`: how a node runs among others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster and kept with its data dir
    /// (its records are keyed by it). Empty: made once and kept in
    /// `<data_dir>/node`.
    pub node: String,
    /// How often committed records are shipped to ClickHouse.
    pub ship_interval: String,
    /// Records per shipped block.
    pub ship_block_records: usize,
    /// Rollup totals (one per tier, bucket and series) the node keeps in
    /// memory to add shipped calls to; past it, the buckets that closed
    /// longest ago are dropped and read back from ClickHouse if a late call
    /// needs them. The buckets one block touches are kept whatever this is.
    pub rollup_cache_cells: usize,
    /// Records waiting to be shipped past which ingest answers 503.
    pub max_outbox_records: u64,
    /// Age of the oldest record waiting past which ingest answers 503.
    pub max_outbox_age: String,
    /// Longest wait for one round trip to PostgreSQL.
    pub coordination_timeout: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node: String::new(),
            ship_interval: "1s".into(),
            ship_block_records: crate::storage::clickhouse::ship::BLOCK_RECORDS,
            rollup_cache_cells: 200_000,
            max_outbox_records: 20_000_000,
            max_outbox_age: "6h".into(),
            coordination_timeout: "5s".into(),
        }
    }
}

/// The settings, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ship_interval: Duration,
    pub block_records: usize,
    pub rollup_cache_cells: usize,
    pub max_outbox_records: u64,
    pub max_outbox_age_ms: i64,
    pub coordination_timeout: Duration,
}

impl ClusterConfig {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let duration = |key: &str, value: &str| {
            crate::time::parse_duration(value)
                .map_err(|message| ConfigError::Value { key: format!("cluster.{key}"), message })
        };
        let invalid = |key: &str| ConfigError::Value {
            key: format!("cluster.{key}"),
            message: "must be at least 1".into(),
        };
        if self.ship_block_records == 0 {
            return Err(invalid("ship_block_records"));
        }
        if self.max_outbox_records == 0 {
            return Err(invalid("max_outbox_records"));
        }
        if self.rollup_cache_cells == 0 {
            return Err(invalid("rollup_cache_cells"));
        }
        let interval = duration("ship_interval", &self.ship_interval)?;
        if interval <= 0 {
            return Err(invalid("ship_interval"));
        }
        Ok(Settings {
            ship_interval: Duration::from_millis(interval as u64),
            block_records: self.ship_block_records,
            rollup_cache_cells: self.rollup_cache_cells,
            max_outbox_records: self.max_outbox_records,
            max_outbox_age_ms: duration("max_outbox_age", &self.max_outbox_age)?,
            coordination_timeout: Duration::from_millis(
                duration("coordination_timeout", &self.coordination_timeout)?.max(1) as u64,
            ),
        })
    }
}

/// The shared stores a node depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    ClickHouse,
    Coordination,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::ClickHouse => "clickhouse",
            Part::Coordination => "coordination",
        }
    }
}

/// What is wrong with the links to the shared stores, and since when.
#[derive(Default)]
pub struct Health {
    failing: Mutex<BTreeMap<Part, (String, i64)>>,
}

impl Health {
    pub fn failing(&self, part: Part, reason: &str) {
        let mut failing = self.failing.lock().expect("unpoisoned");
        if !failing.contains_key(&part) {
            warn!(part = part.name(), reason, "shared store unreachable");
        }
        let since = failing.get(&part).map_or_else(crate::time::now_ms, |(_, since)| *since);
        failing.insert(part, (reason.to_owned(), since));
    }

    pub fn ok(&self, part: Part) {
        if self.failing.lock().expect("unpoisoned").remove(&part).is_some() {
            info!(part = part.name(), "shared store reachable again");
        }
    }

    /// Each failing part with its reason and since when (ms).
    pub fn problems(&self) -> Vec<(Part, String, i64)> {
        let failing = self.failing.lock().expect("unpoisoned");
        failing.iter().map(|(part, (reason, since))| (*part, reason.clone(), *since)).collect()
    }
}

/// A running node's place in its cluster.
pub struct Cluster {
    pub node: String,
    pub clickhouse: ClickHouseUrl,
    pub settings: Settings,
    pub health: Arc<Health>,
    pub outbox: Arc<outbox::Outbox>,
    pub claims: Option<Arc<claims::ClusterClaims>>,
    /// What queries read from ClickHouse.
    pub reads: Arc<reads::SharedReads>,
    /// The coordination store's URL.
    pub coordination: String,
    /// The connection budgets and their shares use.
    pub link: Arc<link::Link>,
}

impl Cluster {
    /// The cluster `storage` and `coordination` name, if any: `storage`
    /// `clickhouse://…` needs `coordination` `postgres://…` and the other
    /// way round.
    pub fn configure(
        storage: &str,
        coordination: &str,
        config: &ClusterConfig,
        data_dir: &Path,
    ) -> Result<Option<Cluster>, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Value { key: key.into(), message };
        let clickhouse = storage.starts_with("clickhouse://");
        match (clickhouse, coordination.is_empty()) {
            (false, true) => return Ok(None),
            (true, true) => {
                return Err(invalid(
                    "coordination",
                    "storage clickhouse://… needs a coordination store: set coordination (or --coordination) to postgres://…, where nodes claim the calls they count".into(),
                ));
            }
            (false, false) => {
                return Err(invalid(
                    "coordination",
                    "a coordination store is for nodes over ClickHouse: set storage (or --storage) to clickhouse://…".into(),
                ));
            }
            (true, false) => {}
        }
        if !(coordination.starts_with("postgres://") || coordination.starts_with("postgresql://")) {
            return Err(invalid(
                "coordination",
                format!("{coordination:?} is not a postgres://… URL"),
            ));
        }
        let url = ClickHouseUrl::parse(storage).map_err(|message| invalid("storage", message))?;
        let settings = config.settings()?;
        let node = node_name(config, data_dir)
            .map_err(|err| invalid("cluster.node", format!("{}: {err}", data_dir.display())))?;
        let health = Arc::new(Health::default());
        let claims = claims::ClusterClaims::new(
            coordination,
            &node,
            settings.coordination_timeout,
            health.clone(),
        );
        let outbox = outbox::Outbox::new(settings.max_outbox_records, settings.max_outbox_age_ms);
        let link =
            link::Link::new(coordination, &node, settings.coordination_timeout, health.clone());
        Ok(Some(Cluster {
            link: Arc::new(link),
            coordination: coordination.to_owned(),
            node,
            reads: Arc::new(reads::SharedReads::new(url.clone())),
            clickhouse: url,
            settings,
            health,
            outbox: Arc::new(outbox),
            claims: Some(Arc::new(claims)),
        }))
    }

    /// A connection of its own to the coordination store.
    pub fn new_link(&self) -> link::Link {
        link::Link::new(
            &self.coordination,
            &self.node,
            self.settings.coordination_timeout,
            self.health.clone(),
        )
    }

    /// The seams the committer takes.
    pub fn shared(&self) -> Shared {
        Shared {
            claims: self
                .claims
                .clone()
                .map(|c| c as Arc<dyn crate::durability::shared::SharedClaims>),
            outbox: Some(self.outbox.clone()),
        }
    }
}

/// The node's name: configured, else the one kept in the data dir, else a
/// new one (the host's name and a random suffix) written there.
fn node_name(config: &ClusterConfig, data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node");
    let kept = std::fs::read_to_string(&path).ok().map(|s| s.trim().to_owned());
    if !config.node.is_empty() {
        if kept.as_deref().is_some_and(|kept| !kept.is_empty() && kept != config.node) {
            return Err(std::io::Error::other(format!(
                "this data dir belongs to node {:?}, not {:?}: its records were shipped under that name",
                kept.unwrap_or_default(),
                config.node
            )));
        }
        std::fs::write(&path, &config.node)?;
        return Ok(config.node.clone());
    }
    if let Some(kept) = kept.filter(|k| !k.is_empty()) {
        return Ok(kept);
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let name = format!("{host}-{}", hex::encode(rand::random::<[u8; 3]>()));
    std::fs::write(&path, &name)?;
    Ok(name)
}
