//! Budgets: spend limits per scope and period, quota reservations for
//! gateways, and threshold alerts delivered by webhook.
//!
//! `rule` says what a budget is and `period` where an instant falls; `book`
//! holds the live state, counted as calls commit (this service is the
//! committer's `CommitObserver`); `load` reads spend so far from the rollups;
//! `alerts` records crossings and delivers them through `webhook`, which
//! reaches only the targets `target` allows; `api` is the HTTP surface.

pub mod alerts;
pub mod api;
mod book;
pub use book::reservation_boot;
mod load;
pub mod period;
pub mod rule;
pub mod target;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono_tz::Tz;
use tracing::info;

pub use book::{BudgetStatus, Decision, Estimate, SettleError, Ticket};
pub use rule::{Budget, BudgetSpec, Origin, RuleError};

use alerts::AlertSender;
use book::{Book, Fired};
use rule::RuleContext;

use crate::aggregate::RollupEngine;
use crate::config::{AlertsConfig, BudgetSettings, BudgetsConfig, ConfigError};
use crate::durability::{CommitError, CommitObserver, Committer};
use crate::model::LlmCall;
use crate::normalize::KeyFingerprinter;
use crate::storage::{ControlStore, RollupStore, StorageError, StoredBudget};
use crate::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("budgets.define[{index}] ({name:?}): {source}")]
    Config { index: usize, name: String, source: RuleError },
    #[error("budgets.define[{index}] ({name:?}): {message}")]
    ConfigInvalid { index: usize, name: String, message: String },
    #[error("stored budget {id} cannot be read: {message}")]
    Stored { id: String, message: String },
    #[error(transparent)]
    Setting(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("{0}")]
    Conflict(String),
    #[error("no budget {0}")]
    Gone(String),
}

/// Every budget, live.
pub struct Budgets {
    book: Mutex<Book>,
    /// Budgets, alerts and deliveries.
    storage: Arc<dyn ControlStore>,
    /// Stored rollups, which spend so far is read from at start.
    rollups: Arc<dyn RollupStore>,
    engine: Arc<RollupEngine>,
    pub alerts: AlertSender,
    pub fingerprinter: Arc<KeyFingerprinter>,
    pub default_timezone: Tz,
    /// Whether webhooks may target loopback and private networks.
    allow_private_targets: bool,
    /// Whether any budget exists: commits skip the lock when none does.
    active: AtomicBool,
}

/// A budget as the store keeps it.
pub fn stored(b: &Budget) -> StoredBudget {
    StoredBudget {
        id: b.id.clone(),
        project: b.project.clone(),
        name: b.name.clone(),
        origin: match b.origin {
            Origin::Api => "api".into(),
            Origin::Config => "config".into(),
        },
        definition: serde_json::to_string(b).expect("budgets serialize"),
    }
}

impl Budgets {
    /// Loads the stored budgets and those of the config file (which replace
    /// stored ones of the same id), reads their spend so far and starts the
    /// alert task. Call before the committer starts.
    pub async fn open(
        storage: Arc<dyn ControlStore>,
        rollups: Arc<dyn RollupStore>,
        engine: Arc<RollupEngine>,
        config: &BudgetsConfig,
        alerts_config: &AlertsConfig,
        fingerprinter: Arc<KeyFingerprinter>,
    ) -> Result<Arc<Budgets>, BudgetError> {
        let BudgetSettings {
            timezone: default_timezone,
            retry,
            webhook_timeout,
            webhook_connect_timeout,
        } = config.settings()?;
        let allow_private_targets = alerts_config.allow_private_targets;
        let delivery = webhook::DeliveryConfig {
            connect_timeout: webhook_connect_timeout,
            timeout: webhook_timeout,
            allow_private_targets,
        };
        let now = now_ms();
        let mut by_id: HashMap<String, Budget> = HashMap::new();
        for s in storage.load_budgets().await? {
            let budget: Budget = serde_json::from_str(&s.definition)
                .map_err(|e| BudgetError::Stored { id: s.id.clone(), message: e.to_string() })?;
            by_id.insert(s.id, budget);
        }
        let context = RuleContext {
            default_timezone,
            fingerprinter: &fingerprinter,
            allow_private_targets,
            now_ms: now,
        };
        let mut from_config: HashSet<String> = HashSet::new();
        let mut names: HashSet<(String, String)> = HashSet::new();
        for (index, spec) in config.define.iter().enumerate() {
            let name = spec.name.clone();
            let mut spec = spec.clone();
            spec.id.get_or_insert_with(|| name.clone());
            let keep_secret = spec.secret.is_none();
            if keep_secret && !spec.webhooks.is_empty() {
                // The API never shows a config budget's secret, so a
                // generated one could not be used to check signatures.
                return Err(BudgetError::ConfigInvalid {
                    index,
                    name,
                    message:
                        "secret: required when webhooks are given (the key of their signatures)"
                            .into(),
                });
            }
            let mut budget = Budget::from_spec(spec, Origin::Config, &context)
                .map_err(|source| BudgetError::Config { index, name: name.clone(), source })?;
            if !from_config.insert(budget.id.clone())
                || !names.insert((budget.project.clone(), budget.name.clone()))
            {
                return Err(BudgetError::ConfigInvalid {
                    index,
                    name,
                    message: "another budget in the config file has the same id or name".into(),
                });
            }
            if let Some(old) = by_id.get(&budget.id) {
                if keep_secret {
                    budget.secret = old.secret.clone();
                }
                budget.created_ms = old.created_ms;
            }
            storage.save_budget(stored(&budget)).await?;
            by_id.insert(budget.id.clone(), budget);
        }
        let gone: Vec<String> = by_id
            .values()
            .filter(|b| b.origin == Origin::Config && !from_config.contains(&b.id))
            .map(|b| b.id.clone())
            .collect();
        for id in gone {
            info!(budget = %id, "budget removed from the config file; deleting it");
            storage.delete_budget(&id).await?;
            by_id.remove(&id);
        }
        let all: Vec<Arc<Budget>> = by_id.into_values().map(Arc::new).collect();
        let mut book = Book::new(rand::random());
        for b in &all {
            book.put(b.clone());
        }
        let service = Arc::new(Budgets {
            active: AtomicBool::new(!book.is_empty()),
            book: Mutex::new(book),
            alerts: alerts::start(storage.clone(), retry, delivery),
            storage,
            rollups,
            engine,
            fingerprinter,
            default_timezone,
            allow_private_targets,
        });
        service.load(&all, now).await?;
        info!(budgets = all.len(), "budgets loaded");
        spawn_ticker(Arc::downgrade(&service));
        Ok(service)
    }

    pub fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn rule_context(&self) -> RuleContext<'_> {
        RuleContext {
            default_timezone: self.default_timezone,
            fingerprinter: &self.fingerprinter,
            allow_private_targets: self.allow_private_targets,
            now_ms: now_ms(),
        }
    }

    /// Reads `budgets`' spend so far and the alerts already recorded, and
    /// makes them ready. Nothing may commit meanwhile.
    async fn load(&self, budgets: &[Arc<Budget>], now: i64) -> Result<(), StorageError> {
        let spends = load::spend(&*self.rollups, &self.engine, budgets, now).await?;
        let mut loaded = Vec::with_capacity(budgets.len());
        for (b, spend) in budgets.iter().zip(spends) {
            let (period_start, since) = match b.period {
                period::Period::Rolling { window_ms } => (0, now - window_ms),
                _ => {
                    let (start, _) = b.period.bounds(b.timezone, now).unwrap_or((now, now));
                    (start, start)
                }
            };
            let recorded: Vec<f64> = self
                .storage
                .alerts_since(&b.id, since)
                .await?
                .into_iter()
                .filter(|(_, start, _)| b.period.is_rolling() || *start == period_start)
                .map(|(threshold, _, _)| threshold)
                .collect();
            loaded.push((b, spend, Fired::from_recorded(b, period_start, &recorded)));
        }
        let mut crossings = Vec::new();
        {
            let mut book = self.lock();
            for (b, spend, fired) in loaded {
                book.load(b, spend, fired, now, &mut crossings);
            }
        }
        self.alerts.send(crossings);
        Ok(())
    }

    /// Stores `budget` (new or replacing one of the same id) and makes it
    /// live with its spend so far, read while no call commits.
    ///
    /// The id and name are checked and taken in one step under the book's
    /// lock, so two concurrent creations cannot both have them.
    pub async fn install(
        self: &Arc<Self>,
        committer: &Committer,
        budget: Budget,
        replacing: bool,
    ) -> Result<Arc<Budget>, BudgetError> {
        let budget = Arc::new(budget);
        let previous = {
            let mut book = self.lock();
            let previous = book.get(&budget.id).cloned();
            match (&previous, replacing) {
                (Some(_), false) => {
                    return Err(BudgetError::Conflict(format!(
                        "id: budget {} exists; PUT /api/v1/budgets/{} changes it",
                        budget.id, budget.id
                    )));
                }
                (None, true) => return Err(BudgetError::Gone(budget.id.clone())),
                _ => {}
            }
            if let Some(other) = book
                .budgets()
                .find(|b| b.project == budget.project && b.name == budget.name && b.id != budget.id)
            {
                return Err(BudgetError::Conflict(format!(
                    "name: budget {} of project {:?} is already called {:?}",
                    other.id, budget.project, budget.name
                )));
            }
            book.put(budget.clone());
            previous
        };
        self.active.store(true, Ordering::Release);
        if let Err(err) = self.storage.save_budget(stored(&budget)).await {
            let mut book = self.lock();
            match previous {
                Some(previous) => book.put(previous),
                None => {
                    book.remove(&budget.id);
                }
            }
            return Err(err.into());
        }
        let this = self.clone();
        let loading = budget.clone();
        committer
            .exclusive(async move { this.load(std::slice::from_ref(&loading), now_ms()).await })
            .await??;
        Ok(budget)
    }

    /// Deletes a budget; its alerts stay in the history.
    pub async fn remove(&self, id: &str) -> Result<Option<Arc<Budget>>, StorageError> {
        self.storage.delete_budget(id).await?;
        let mut book = self.lock();
        let removed = book.remove(id);
        self.active.store(!book.is_empty(), Ordering::Release);
        Ok(removed)
    }

    pub fn storage(&self) -> &Arc<dyn ControlStore> {
        &self.storage
    }

    /// Makes live a budget another node stored (new, or changed there),
    /// with this node's spend so far, read while no call commits.
    pub async fn adopt(
        self: &Arc<Self>,
        committer: &Committer,
        budget: Budget,
    ) -> Result<(), BudgetError> {
        let budget = Arc::new(budget);
        self.lock().put(budget.clone());
        self.active.store(true, Ordering::Release);
        let this = self.clone();
        committer
            .exclusive(async move { this.load(std::slice::from_ref(&budget), now_ms()).await })
            .await??;
        Ok(())
    }

    /// Lets go of a budget another node deleted.
    pub fn forget(&self, id: &str) {
        let mut book = self.lock();
        book.remove(id);
        self.active.store(!book.is_empty(), Ordering::Release);
    }
}

impl CommitObserver for Budgets {
    fn committed(&self, calls: &mut dyn Iterator<Item = (&LlmCall, i64)>) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let crossings = self.lock().observe(calls, now_ms());
        self.alerts.send(crossings);
    }

    fn forget_series(&self, series: &[i64]) {
        self.lock().forget_series(series);
    }
}

/// Once a second: expire reservations, roll periods over, re-arm rolling
/// thresholds. Stops when the service is dropped.
fn spawn_ticker(budgets: Weak<Budgets>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(budgets) = budgets.upgrade() else { break };
            let crossings = budgets.lock().tick(now_ms());
            budgets.alerts.send(crossings);
        }
    });
}
