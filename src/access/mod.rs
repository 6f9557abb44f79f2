//! Who may do what: projects, API keys and their scopes, the guard every
//! request passes (`guard`), per-key rate limits (`rate`), the admin API
//! (`api`) and the audit log of admin actions.
//!
//! Auth is off only while every listener is on loopback and no key was ever
//! made; then every request acts for the project it names, as before keys.

pub mod api;
pub mod guard;
pub mod key;
mod rate;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

pub use store::{AccessStore, AccessStoreError};

use crate::time::now_ms;

/// What a key may do. Admin may also do what read and ingest keys may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Writes telemetry and usage into its project, and asks quotas.
    Ingest,
    /// Reads its project's data and the dashboard.
    Read,
    /// Manages its project's keys and budgets, re-prices, flushes, reads.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a key of this scope may do what `needed` allows.
    pub fn allows(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin
    }
}

/// A key as stored (its text never is).
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub project: String,
    pub scope: Scope,
    pub name: String,
    /// HMAC-SHA256 of the key's text under the access secret.
    pub hash: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    /// Overrides of the scope's rate limits for this key.
    pub requests_per_second: Option<f64>,
    pub records_per_second: Option<f64>,
}

impl KeyRecord {
    fn usable_at(&self, now: i64) -> Result<(), &'static str> {
        if self.revoked_ms.is_some() {
            return Err("this key was revoked");
        }
        if self.expires_ms.is_some_and(|at| at <= now) {
            return Err("this key has expired");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Project {
    pub name: String,
    pub created_ms: i64,
}

/// One admin action.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub time_ms: i64,
    /// The key that acted; none while auth is off.
    pub key_id: Option<String>,
    pub project: String,
    /// What was done, e.g. `keys.create`, `budgets.delete`, `usage.reprice`.
    pub action: String,
    /// What it was done to (a key id, a budget id, a window).
    pub target: String,
    /// The client's address as the listener saw it.
    pub client: Option<String>,
}

/// Who a request acts for: its key, or nobody while auth is off.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub project: String,
    pub scope: Scope,
}

/// `[auth]`: when keys are asked for, and the limits on each key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Serve a non-loopback address with no key at all (anyone who can
    /// reach it reads and writes everything). Also `--insecure-no-auth`.
    pub insecure_no_auth: bool,
    /// Rate limits of ingest keys (a key's own limits override them).
    pub ingest: rate::RateConfig,
    pub read: rate::RateConfig,
    pub admin: rate::RateConfig,
    /// Most keys the store holds (revoked ones count until removed).
    pub max_keys: usize,
    /// Most projects.
    pub max_projects: usize,
    /// How long audit entries are kept.
    pub audit_retention: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            insecure_no_auth: false,
            ingest: rate::RateConfig {
                requests_per_second: 1_000.0,
                records_per_second: 1_000_000.0,
            },
            read: rate::RateConfig { requests_per_second: 200.0, records_per_second: 0.0 },
            admin: rate::RateConfig { requests_per_second: 200.0, records_per_second: 1_000_000.0 },
            max_keys: 10_000,
            max_projects: 1_000,
            audit_retention: "400d".into(),
        }
    }
}

impl AuthConfig {
    fn rates(&self, scope: Scope) -> rate::RateConfig {
        match scope {
            Scope::Ingest => self.ingest,
            Scope::Read => self.read,
            Scope::Admin => self.admin,
        }
    }
}

/// Why a request's credentials were not taken (401) or not enough (403).
#[derive(Debug)]
pub enum Denied {
    /// No credential, or one that is not a live key: 401.
    Unauthenticated(String),
    /// A live key without the scope or project: 403.
    Forbidden(String),
    /// Over the key's rate: 429 after this many seconds.
    Limited { message: String, retry_after_s: u32 },
}

impl Denied {
    pub fn into_api_error(self) -> crate::error::ApiError {
        use crate::error::ApiError;
        use axum::http::StatusCode;
        match self {
            Denied::Unauthenticated(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
            }
            Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            Denied::Limited { message, retry_after_s } => {
                let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                err.retry_after_s = Some(retry_after_s);
                err
            }
        }
    }
}

/// Keys in memory (reloaded from the store when it changes), whether auth
/// is on, and the keys' rate limits.
pub struct Access {
    store: Arc<AccessStore>,
    config: AuthConfig,
    keys: RwLock<Arc<HashMap<String, KeyRecord>>>,
    version: Mutex<store::KeysVersion>,
    /// Auth is on even with no key (a listener on a non-loopback address).
    required: bool,
    /// When each key was last used, since the last write of it.
    used: Mutex<HashMap<String, i64>>,
    rates: rate::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] AccessStoreError),
    #[error(
        "tally would listen on {0}, which is not a loopback address, with no API key: anyone who can reach it could read and write every project. Create an admin key first (tally keys create --data-dir DIR --project default --scope admin), or pass --insecure-no-auth to accept the risk"
    )]
    PublicWithoutKeys(String),
    #[error("auth.audit_retention: {0}")]
    Retention(String),
}

impl Access {
    /// The access data of `data_dir`; `listeners` are the addresses served.
    pub fn open(
        data_dir: &Path,
        config: AuthConfig,
        listeners: &[std::net::SocketAddr],
    ) -> Result<Access, AccessError> {
        crate::time::parse_duration(&config.audit_retention).map_err(AccessError::Retention)?;
        let store = Arc::new(AccessStore::open(data_dir)?);
        let public = listeners.iter().find(|a| !a.ip().is_loopback());
        let required = public.is_some() && !config.insecure_no_auth;
        if let Some(address) = public
            && required
            && store.key_count()? == 0
        {
            return Err(AccessError::PublicWithoutKeys(address.to_string()));
        }
        let access = Access {
            rates: rate::Limits::default(),
            keys: RwLock::new(Arc::new(HashMap::new())),
            version: Mutex::new((-1, -1, -1)),
            used: Mutex::new(HashMap::new()),
            store,
            config,
            required,
        };
        access.reload()?;
        Ok(access)
    }

    pub fn store(&self) -> &Arc<AccessStore> {
        &self.store
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether requests need a key.
    pub fn enabled(&self) -> bool {
        self.required || !self.keys().is_empty()
    }

    fn keys(&self) -> Arc<HashMap<String, KeyRecord>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the keys again when the store changed since the last read.
    pub fn reload(&self) -> Result<(), AccessStoreError> {
        let version = self.store.keys_version()?;
        let mut seen = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == version {
            return Ok(());
        }
        let keys: HashMap<String, KeyRecord> =
            self.store.keys()?.into_iter().map(|k| (k.id.clone(), k)).collect();
        self.rates.retain(|id| keys.contains_key(id));
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        *seen = version;
        Ok(())
    }

    /// The principal a key's text stands for.
    pub fn authenticate(&self, text: &str) -> Result<Principal, Denied> {
        let unknown = || {
            Denied::Unauthenticated(
                "the API key is not one this server knows (check for a typo, or create one: tally keys create)".into(),
            )
        };
        let (_, id) = key::parse(text.trim()).ok_or_else(unknown)?;
        let keys = self.keys();
        let record = keys.get(id).ok_or_else(unknown)?;
        if !key::matches(self.store.secret(), text.trim(), &record.hash) {
            return Err(unknown());
        }
        let now = now_ms();
        record
            .usable_at(now)
            .map_err(|why| Denied::Unauthenticated(format!("{why} (key {id})")))?;
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(record.id.clone(), now);
        Ok(Principal {
            key_id: record.id.clone(),
            project: record.project.clone(),
            scope: record.scope,
        })
    }

    /// Takes one request, and `records` records, from the key's rates.
    pub fn admit(&self, principal: &Principal, records: u64) -> Result<(), Denied> {
        let keys = self.keys();
        let defaults = self.config.rates(principal.scope);
        let record = keys.get(&principal.key_id);
        let rates = rate::RateConfig {
            requests_per_second: record
                .and_then(|k| k.requests_per_second)
                .unwrap_or(defaults.requests_per_second),
            records_per_second: record
                .and_then(|k| k.records_per_second)
                .unwrap_or(defaults.records_per_second),
        };
        self.rates.admit(&principal.key_id, rates, records).map_err(|(what, wait)| {
            Denied::Limited {
                message: format!(
                    "key {} is over its {what} limit; retry after the Retry-After seconds (auth.{}.{what}, or the key's own limit)",
                    principal.key_id,
                    principal.scope.as_str()
                ),
                retry_after_s: wait.as_secs().max(1) as u32,
            }
        })
    }

    /// Checks a request's records against its key: all of the key's
    /// project, and within the key's records per second. Nothing to check
    /// while auth is off.
    pub fn bind_records(
        &self,
        principal: Option<&Principal>,
        records: &crate::durability::Records,
    ) -> Result<(), crate::error::ApiError> {
        let Some(principal) = principal else { return Ok(()) };
        if let Some(other) = records.project_other_than(&principal.project) {
            return Err(Denied::Forbidden(format!(
                "records name project {other:?}, but key {} writes only into project {:?} (leave the project out, or name that one)",
                principal.key_id, principal.project
            ))
            .into_api_error());
        }
        if records.is_empty() {
            return Ok(());
        }
        self.admit(principal, records.len() as u64).map_err(Denied::into_api_error)
    }

    /// Makes a key. Its text is returned once and never kept.
    pub fn create_key(&self, request: NewKeyRequest) -> Result<(KeyRecord, String), CreateError> {
        if request.project.trim().is_empty() || request.project.len() > 200 {
            return Err(CreateError::Invalid("project: 1 to 200 characters".into()));
        }
        if self.store.key_count()? >= self.config.max_keys {
            return Err(CreateError::Invalid(format!(
                "the store holds auth.max_keys = {} keys already",
                self.config.max_keys
            )));
        }
        if !self.store.project_exists(&request.project)?
            && self.store.project_count()? >= self.config.max_projects
        {
            return Err(CreateError::Invalid(format!(
                "there are auth.max_projects = {} projects already",
                self.config.max_projects
            )));
        }
        let made = key::generate(request.scope);
        let now = now_ms();
        let record = KeyRecord {
            id: made.id,
            project: request.project,
            scope: request.scope,
            name: request.name.unwrap_or_default(),
            hash: key::hash(self.store.secret(), &made.text),
            created_ms: now,
            expires_ms: request.expires_in.map(|d| now + d.as_millis() as i64),
            revoked_ms: None,
            last_used_ms: None,
            requests_per_second: request.requests_per_second,
            records_per_second: request.records_per_second,
        };
        self.store.insert_key(&record)?;
        self.reload()?;
        Ok((record, made.text))
    }

    /// Revokes a key of `project` (any when None); false when not found.
    pub fn revoke(&self, id: &str, project: Option<&str>) -> Result<bool, AccessStoreError> {
        let revoked = self.store.revoke(id, project, now_ms())?;
        self.reload()?;
        Ok(revoked)
    }

    /// The keys, those of `project` only when given.
    pub fn list(&self, project: Option<&str>) -> Vec<KeyRecord> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut keys: Vec<KeyRecord> = self
            .keys()
            .values()
            .filter(|k| project.is_none_or(|p| k.project == p))
            .cloned()
            .map(|mut k| {
                if let Some(&at) = used.get(&k.id) {
                    k.last_used_ms = Some(k.last_used_ms.map_or(at, |was| was.max(at)));
                }
                k
            })
            .collect();
        keys.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        keys
    }

    pub fn audit(&self, entry: AuditEntry) {
        if let Err(err) = self.store.append_audit(&entry) {
            warn!(%err, action = entry.action, "cannot append to the audit log");
        }
    }

    /// Reloads keys every second (so a key revoked through another listener
    /// or `tally keys revoke --data-dir` stops within one), writes last use
    /// every minute and applies the audit log's retention hourly.
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let access = Arc::downgrade(self);
        let retention =
            crate::time::parse_duration(&self.config.audit_retention).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                let Some(access) = access.upgrade() else { return };
                let work = tokio::task::spawn_blocking(move || {
                    if let Err(err) = access.reload() {
                        warn!(%err, "cannot reload the API keys");
                    }
                    if ticks.is_multiple_of(60) {
                        access.write_last_use();
                    }
                    if ticks % 3600 == 1
                        && let Err(err) =
                            access.store.expire_audit(now_ms().saturating_sub(retention))
                    {
                        warn!(%err, "cannot apply the audit log's retention");
                    }
                });
                let _ = work.await;
            }
        })
    }

    /// Writes when keys were last used (a minute's worth at once).
    pub fn write_last_use(&self) {
        let used: Vec<(String, i64)> =
            std::mem::take(&mut *self.used.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if !used.is_empty()
            && let Err(err) = self.store.touch(&used)
        {
            warn!(%err, "cannot record when keys were last used");
        }
    }
}

/// What a new key is to be.
#[derive(Debug, Clone)]
pub struct NewKeyRequest {
    pub project: String,
    pub scope: Scope,
    pub name: Option<String>,
    pub expires_in: Option<Duration>,
    pub requests_per_second: Option<f64>,
    pub records_per_second: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] AccessStoreError),
}

/// Parses `90d`, `12h`, `30m` (a key's lifetime).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let ms = crate::time::parse_duration(text)?;
    if ms <= 0 {
        return Err(format!("{text:?} is not a positive duration"));
    }
    Ok(Duration::from_millis(ms as u64))
}
