//! The live state of every budget — spend per period or rolling bucket, open
//! reservations, which thresholds have fired — changed only under one lock
//! as calls commit and as gateways reserve and settle. Pure: time comes in as
//! an argument, crossings go out as values.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::rule::{Budget, FailMode, Metric, Mode, Subject};
use crate::model::LlmCall;

/// Relative slack for comparing float spend with limits and thresholds.
const SLACK: f64 = 1e-9;
/// How long a settled or expired reservation id is remembered.
const ENDED_KEEP_MS: i64 = 3_600_000;
const ENDED_MAX: usize = 200_000;
/// Expired reservations released by one request.
const EXPIRE_PER_CALL: usize = 64;

/// Spend of one budget, by the time the calls were made.
#[derive(Debug, Clone)]
pub enum Spend {
    /// Per calendar period start (the current one and any later one that
    /// calls stamped in the future have reached).
    Calendar { periods: BTreeMap<i64, f64>, current: (i64, i64) },
    /// Per bucket start; a bucket counts while any instant in it is in the
    /// window, so spend leaves at most one bucket late, never early.
    /// (Bucket width and window come from the budget's period.)
    Rolling { buckets: BTreeMap<i64, f64>, total: f64 },
}

impl Spend {
    pub fn new(budget: &Budget) -> Spend {
        if budget.period.is_rolling() {
            Spend::Rolling { buckets: BTreeMap::new(), total: 0.0 }
        } else {
            Spend::Calendar { periods: BTreeMap::new(), current: (0, 0) }
        }
    }

    /// Counts `amount` at `time_ms`.
    pub fn add(&mut self, budget: &Budget, time_ms: i64, amount: f64) {
        if amount == 0.0 {
            return;
        }
        match self {
            Spend::Calendar { periods, current } => {
                let start = if (current.0..current.1).contains(&time_ms) {
                    current.0
                } else {
                    match budget.period.bounds(budget.timezone, time_ms) {
                        Some((start, _)) => start,
                        None => return,
                    }
                };
                *periods.entry(start).or_default() += amount;
            }
            Spend::Rolling { buckets, total } => {
                let (_, width) = budget.period.rolling().expect("rolling spend, rolling period");
                let bucket = time_ms.div_euclid(width) * width;
                match buckets.last_entry() {
                    Some(mut last) if *last.key() == bucket => *last.get_mut() += amount,
                    _ => *buckets.entry(bucket).or_default() += amount,
                }
                *total += amount;
            }
        }
    }

    /// Spend now, with the period it is for (`[now - window, now]` for a
    /// rolling window). Drops what can no longer count.
    pub fn current(&mut self, budget: &Budget, now: i64) -> (f64, i64, i64) {
        match self {
            Spend::Calendar { periods, current } => {
                if !(current.0..current.1).contains(&now)
                    && let Some(bounds) = budget.period.bounds(budget.timezone, now)
                {
                    *current = bounds;
                    periods.retain(|start, _| *start >= bounds.0);
                }
                (periods.get(&current.0).copied().unwrap_or(0.0), current.0, current.1)
            }
            Spend::Rolling { buckets, total } => {
                let (window_ms, width) =
                    budget.period.rolling().expect("rolling spend, rolling period");
                let oldest = now - window_ms;
                let mut dropped = false;
                while let Some(entry) = buckets.first_entry() {
                    if *entry.key() + width > oldest {
                        break;
                    }
                    entry.remove();
                    dropped = true;
                }
                if dropped {
                    *total = buckets.values().sum();
                }
                (total.max(0.0), oldest, now)
            }
        }
    }
}

/// Which thresholds have fired, one flag per threshold: in the calendar
/// period `period` (a new period clears them), or — rolling windows, where
/// `period` is None — since spend was last below them.
#[derive(Debug, Clone)]
pub struct Fired {
    period: Option<i64>,
    fired: Vec<bool>,
}

impl Fired {
    /// From the alerts already recorded: for a calendar budget those of the
    /// current period; for a rolling one those raised within the last window.
    pub fn from_recorded(budget: &Budget, period_start: i64, recorded: &[f64]) -> Fired {
        let has = |t: &f64| recorded.iter().any(|r| (r - t).abs() < 1e-9);
        Fired {
            period: (!budget.period.is_rolling()).then_some(period_start),
            fired: budget.thresholds.iter().map(has).collect(),
        }
    }
}

/// A threshold reached: the alert to record and deliver.
#[derive(Debug, Clone)]
pub struct Crossing {
    pub budget: Arc<Budget>,
    pub threshold: f64,
    pub spend: f64,
    pub period_start: i64,
    pub period_end: i64,
    pub crossed_ms: i64,
}

struct Entry {
    budget: Arc<Budget>,
    /// Bumped when the slot is given a new definition, so holds taken on the
    /// old one are not released against the new one.
    generation: u64,
    /// The last `observe` pass that touched this budget.
    pass: u64,
    spend: Spend,
    reserved: f64,
    fired: Fired,
    /// False until the spend has been read from the store.
    ready: bool,
    /// The other nodes' spend and reservations, on a node of a cluster.
    others: Others,
}

/// What the other nodes of a cluster last said of a budget: their spend
/// and reservations in the period starting at `period` (0: the rolling
/// window).
#[derive(Debug, Clone, Copy, Default)]
struct Others {
    period: i64,
    spend: f64,
    reserved: f64,
}

impl Entry {
    /// The key of the period starting at `start`, as nodes share it.
    fn period_key(&self, start: i64) -> i64 {
        if self.budget.period.is_rolling() { 0 } else { start }
    }

    /// Spend now, this node's and the others' (see `Spend::current`), and
    /// what the others hold reserved.
    fn current(&mut self, now: i64) -> (f64, f64, i64, i64) {
        let (spend, start, end) = self.spend.current(&self.budget, now);
        let others = self.others;
        if others.period == self.period_key(start) {
            (spend + others.spend, others.reserved, start, end)
        } else {
            (spend, 0.0, start, end)
        }
    }

    /// Spend now (all nodes'), re-arming the rolling thresholds it is
    /// below, so that a dip between two evaluations is not missed.
    fn rearm(&mut self, now: i64) -> (f64, i64, i64) {
        let (spend, _, start, end) = self.current(now);
        let current = (spend, start, end);
        if self.fired.period.is_none() {
            for (t, fired) in self.budget.thresholds.iter().zip(self.fired.fired.iter_mut()) {
                if !reached(&self.budget, current.0, *t) {
                    *fired = false;
                }
            }
        }
        current
    }

    /// Thresholds newly reached at `now`.
    fn evaluate(&mut self, now: i64, out: &mut Vec<Crossing>) {
        let (spend, start, end) = self.rearm(now);
        if !self.ready {
            return;
        }
        let Fired { period, fired } = &mut self.fired;
        if let Some(period) = period
            && *period != start
        {
            *period = start;
            fired.iter_mut().for_each(|f| *f = false);
        }
        let b = &self.budget;
        for (t, fired) in b.thresholds.iter().zip(fired.iter_mut()) {
            if !*fired && reached(b, spend, *t) {
                *fired = true;
                out.push(Crossing {
                    budget: b.clone(),
                    threshold: *t,
                    spend,
                    period_start: start,
                    period_end: end,
                    crossed_ms: now,
                });
            }
        }
    }

    fn status(&mut self, now: i64) -> BudgetStatus {
        let (spend, start, end) = self.rearm(now);
        let reserved = self.reserved + self.current(now).1;
        let b = &self.budget;
        let forecast = if b.period.is_rolling() {
            spend
        } else {
            let elapsed = (now - start).max(1) as f64;
            spend * (end - start) as f64 / elapsed
        };
        BudgetStatus {
            id: b.id.clone(),
            name: b.name.clone(),
            project: b.project.clone(),
            metric: b.metric,
            mode: b.mode,
            spend,
            limit: b.limit,
            reserved,
            remaining: (b.limit - spend - reserved).max(0.0),
            percent: spend / b.limit * 100.0,
            period_start: start,
            period_end: end,
            forecast,
            ready: self.ready,
        }
    }
}

/// Whether `spend` has reached `threshold` percent of the budget's limit.
fn reached(budget: &Budget, spend: f64, threshold: f64) -> bool {
    spend * 100.0 >= budget.limit * threshold * (1.0 - SLACK)
}

/// What `GET /api/v1/budgets/status` shows for one budget.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BudgetStatus {
    pub id: String,
    pub name: String,
    pub project: String,
    pub metric: Metric,
    pub mode: Mode,
    pub spend: f64,
    pub limit: f64,
    pub remaining: f64,
    pub percent: f64,
    pub period_start: i64,
    pub period_end: i64,
    pub forecast: f64,
    pub reserved: f64,
    /// False while the budget's spend is still being read from the store.
    pub ready: bool,
}

/// The expected size of a call a gateway is about to make.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub cost_usd: Option<f64>,
    pub tokens: Option<f64>,
}

impl Estimate {
    fn of(self, metric: Metric) -> f64 {
        match metric {
            Metric::CostUsd => self.cost_usd,
            Metric::Tokens => self.tokens,
        }
        .unwrap_or(0.0)
    }
}

/// One budget a quota decision looked at.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Checked {
    pub id: String,
    pub name: String,
    pub metric: Metric,
    pub mode: Mode,
    /// Left after this reservation (when allowed) or before it (when not).
    pub remaining: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub allowed: bool,
    pub reservation_id: Option<String>,
    pub budgets: Vec<Checked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

struct Reservation {
    /// (slot, generation, amount) held on each budget.
    holds: Vec<(usize, u64, f64)>,
    expires_ms: i64,
    /// A settle is committing its usage; a second one is refused.
    settling: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Settled,
    Expired,
}

/// What a settle found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ticket {
    /// Open: its holds are released once the usage is committed.
    Open,
    /// Expired already (its holds are gone); the usage is still recorded.
    Expired,
    /// Issued before this server restarted; the usage is still recorded.
    BeforeRestart,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("reservation_id: unknown reservation {0:?}")]
    Unknown(String),
    #[error("reservation_id: reservation {0:?} is already settled")]
    AlreadySettled(String),
    #[error("reservation_id: reservation {0:?} is being settled by another request")]
    InProgress(String),
}

/// Every budget's live state.
pub struct Book {
    slots: Vec<Option<Entry>>,
    by_id: HashMap<String, usize>,
    next_generation: u64,
    /// Counts `observe` calls, to mark each budget touched once per call.
    pass: u64,
    /// The budgets each series' calls count against, worked out on a series'
    /// first call and forgotten whenever budgets change.
    by_series: FxHashMap<i64, Box<[usize]>>,
    /// Open reservations by number (the `n` of `r_<boot>_<n>`): numbers,
    /// not strings, so that the maps stay cheap to grow and rehash.
    reservations: FxHashMap<u64, Reservation>,
    expiries: BTreeSet<(i64, u64)>,
    ended: FxHashMap<u64, Ended>,
    ended_order: VecDeque<(i64, u64)>,
    /// Distinguishes this run's reservation ids from an earlier run's.
    boot: String,
    next_reservation: u64,
}

impl Book {
    pub fn new(boot: u32) -> Book {
        Book {
            slots: Vec::new(),
            by_id: HashMap::new(),
            next_generation: 1,
            pass: 0,
            by_series: FxHashMap::default(),
            reservations: FxHashMap::default(),
            expiries: BTreeSet::new(),
            // Allocated whole at once: growing a large map stalls the lock.
            ended: FxHashMap::with_capacity_and_hasher(ENDED_MAX + 1, Default::default()),
            ended_order: VecDeque::with_capacity(ENDED_MAX + 1),
            boot: format!("{boot:08x}"),
            next_reservation: 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Budget>> {
        self.by_id.get(id).and_then(|s| self.slots[*s].as_ref()).map(|e| &e.budget)
    }

    pub fn budgets(&self) -> impl Iterator<Item = &Arc<Budget>> {
        self.slots.iter().flatten().map(|e| &e.budget)
    }

    /// Adds or replaces a budget; it is not ready until `load` gives it its
    /// spend. Replacing keeps no spend, reservations or fired thresholds.
    pub fn put(&mut self, budget: Arc<Budget>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let entry = Entry {
            spend: Spend::new(&budget),
            fired: Fired::from_recorded(&budget, 0, &[]),
            budget: budget.clone(),
            generation,
            reserved: 0.0,
            ready: false,
            pass: 0,
            others: Others::default(),
        };
        match self.by_id.get(&budget.id) {
            Some(slot) => self.slots[*slot] = Some(entry),
            None => {
                let slot = match self.slots.iter().position(Option::is_none) {
                    Some(free) => free,
                    None => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                self.slots[slot] = Some(entry);
                self.by_id.insert(budget.id.clone(), slot);
            }
        }
        self.by_series.clear();
    }

    pub fn remove(&mut self, id: &str) -> Option<Arc<Budget>> {
        let slot = self.by_id.remove(id)?;
        self.by_series.clear();
        self.slots[slot].take().map(|e| e.budget)
    }

    /// Gives a budget the spend read from the store and the thresholds
    /// already fired, and evaluates it. Ignored when the budget was replaced
    /// or removed meanwhile.
    pub fn load(
        &mut self,
        budget: &Arc<Budget>,
        spend: Spend,
        fired: Fired,
        now: i64,
        out: &mut Vec<Crossing>,
    ) {
        let Some(entry) = self.by_id.get(&budget.id).and_then(|s| self.slots[*s].as_mut()) else {
            return;
        };
        if !Arc::ptr_eq(&entry.budget, budget) {
            return;
        }
        entry.spend = spend;
        entry.fired = fired;
        entry.ready = true;
        entry.evaluate(now, out);
    }

    /// Forgets the budgets matched by rollup series let go.
    pub fn forget_series(&mut self, series: &[i64]) {
        for id in series {
            self.by_series.remove(id);
        }
    }

    /// Counts committed calls (with their series ids) against the budgets
    /// that cover them; returns the thresholds this crossed.
    pub fn observe<'a>(
        &mut self,
        calls: impl Iterator<Item = (&'a LlmCall, i64)>,
        now: i64,
    ) -> Vec<Crossing> {
        self.pass += 1;
        let pass = self.pass;
        let mut touched: Vec<usize> = Vec::new();
        for (call, series) in calls {
            let slots = &self.slots;
            let matched = self.by_series.entry(series).or_insert_with(|| {
                let subject = Subject::from(call);
                slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        e.as_ref().filter(|e| e.budget.covers(&subject)).map(|_| i)
                    })
                    .collect()
            });
            for slot in matched.iter() {
                let entry = self.slots[*slot].as_mut().expect("cache holds live slots");
                if entry.pass != pass {
                    entry.pass = pass;
                    entry.rearm(now);
                    touched.push(*slot);
                }
                entry.spend.add(&entry.budget, call.time_ms, entry.budget.metric.amount(call));
            }
        }
        let mut crossings = Vec::new();
        for slot in touched {
            self.slots[slot].as_mut().expect("live slot").evaluate(now, &mut crossings);
        }
        crossings
    }

    /// Periodic upkeep: expires reservations, rolls periods over, re-arms
    /// rolling thresholds; returns thresholds crossed (spend stamped in the
    /// future that a new period starts with).
    pub fn tick(&mut self, now: i64) -> Vec<Crossing> {
        self.expire_some(now, usize::MAX);
        let mut crossings = Vec::new();
        for entry in self.slots.iter_mut().flatten() {
            entry.evaluate(now, &mut crossings);
        }
        crossings
    }

    pub fn status(&mut self, id: &str, now: i64) -> Option<BudgetStatus> {
        self.expire(now);
        let slot = *self.by_id.get(id)?;
        self.slots[slot].as_mut().map(|e| e.status(now))
    }

    /// Status of every budget (of `project`, when given), by name.
    pub fn statuses(&mut self, project: Option<&str>, now: i64) -> Vec<BudgetStatus> {
        self.expire(now);
        let mut out: Vec<BudgetStatus> = self
            .slots
            .iter_mut()
            .flatten()
            .filter(|e| project.is_none_or(|p| e.budget.project == p))
            .map(|e| e.status(now))
            .collect();
        out.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        out
    }

    /// Decides whether a call of `subject` may proceed, and if so holds its
    /// estimate on every budget that covers it — all or nothing.
    pub fn reserve(
        &mut self,
        subject: &Subject<'_>,
        estimate: Estimate,
        ttl_ms: i64,
        now: i64,
    ) -> Decision {
        self.expire(now);
        let mut holds = Vec::new();
        let mut checked = Vec::new();
        let mut denial: Option<String> = None;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(entry) = entry.as_mut().filter(|e| e.budget.covers(subject)) else {
                continue;
            };
            let b = entry.budget.clone();
            let amount = estimate.of(b.metric);
            let (spend, others_reserved, _, _) = entry.current(now);
            let reserved = entry.reserved + others_reserved;
            let enforced = b.mode == Mode::Enforce;
            if !entry.ready {
                if enforced && b.fail == FailMode::Closed && denial.is_none() {
                    denial = Some(format!(
                        "budget {:?} ({}) cannot be checked yet (its spend is still being read) and fails closed",
                        b.name, b.id
                    ));
                }
            } else {
                let committed = spend + reserved;
                let over = if amount > 0.0 {
                    committed + amount > b.limit * (1.0 + SLACK)
                } else {
                    committed >= b.limit * (1.0 - SLACK)
                };
                if over && enforced && denial.is_none() {
                    denial = Some(format!(
                        "budget {:?} ({}): {} of {} {} spent and {} reserved; {} more would exceed the limit",
                        b.name,
                        b.id,
                        round(spend),
                        b.limit,
                        b.metric.as_str(),
                        round(reserved),
                        round(amount)
                    ));
                }
            }
            checked.push(Checked {
                id: b.id.clone(),
                name: b.name.clone(),
                metric: b.metric,
                mode: b.mode,
                remaining: (b.limit - spend - reserved).max(0.0),
            });
            holds.push((slot, entry.generation, amount));
        }
        if denial.is_some() {
            return Decision {
                allowed: false,
                reservation_id: None,
                budgets: checked,
                reason: denial,
            };
        }
        for ((slot, _, amount), view) in holds.iter().zip(checked.iter_mut()) {
            let entry = self.slots[*slot].as_mut().expect("live slot");
            entry.reserved += amount;
            view.remaining = (view.remaining - amount).max(0.0);
        }
        let n = self.next_reservation;
        self.next_reservation += 1;
        let id = format!("r_{}_{n:x}", self.boot);
        let expires_ms = now + ttl_ms;
        self.expiries.insert((expires_ms, n));
        self.reservations.insert(n, Reservation { holds, expires_ms, settling: false });
        Decision { allowed: true, reservation_id: Some(id), budgets: checked, reason: None }
    }

    /// First half of a settle: claims the reservation so that no second
    /// settle can record the same call.
    pub fn begin_settle(&mut self, id: &str, now: i64) -> Result<Ticket, SettleError> {
        self.expire(now);
        let n = match parse_reservation_id(id) {
            Some((boot, n)) if boot == self.boot => n,
            Some(_) => return Ok(Ticket::BeforeRestart),
            None => return Err(SettleError::Unknown(id.to_owned())),
        };
        if let Some(r) = self.reservations.get_mut(&n) {
            if r.settling {
                return Err(SettleError::InProgress(id.to_owned()));
            }
            r.settling = true;
            self.expiries.remove(&(r.expires_ms, n));
            return Ok(Ticket::Open);
        }
        match self.ended.get(&n) {
            Some(Ended::Settled) => Err(SettleError::AlreadySettled(id.to_owned())),
            Some(Ended::Expired) => Ok(Ticket::Expired),
            None => Err(SettleError::Unknown(id.to_owned())),
        }
    }

    /// Second half: with the usage committed (and so counted as spend), the
    /// holds are released; without, the reservation is open again.
    pub fn finish_settle(&mut self, id: &str, committed: bool, now: i64) {
        let Some((_, n)) = parse_reservation_id(id) else { return };
        if !committed {
            if let Some(r) = self.reservations.get_mut(&n) {
                r.settling = false;
                self.expiries.insert((r.expires_ms, n));
            }
            return;
        }
        if let Some(r) = self.reservations.remove(&n) {
            self.release(&r);
        }
        self.end(n, Ended::Settled, now);
    }

    /// This book's boot: what its reservation ids carry.
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// Releases reservation `id` of this book, settled through another node
    /// (which recorded its usage); false when it is not open here (settled,
    /// expired, being settled, or of another boot).
    pub fn release_settled_elsewhere(&mut self, id: &str, now: i64) -> bool {
        let Some((boot, n)) = parse_reservation_id(id) else { return false };
        if boot != self.boot || self.reservations.get(&n).is_none_or(|r| r.settling) {
            return false;
        }
        let r = self.reservations.remove(&n).expect("open above");
        self.expiries.remove(&(r.expires_ms, n));
        self.release(&r);
        self.end(n, Ended::Settled, now);
        true
    }

    fn release(&mut self, r: &Reservation) {
        for (slot, generation, amount) in &r.holds {
            if let Some(entry) = self.slots[*slot].as_mut().filter(|e| e.generation == *generation)
            {
                entry.reserved = (entry.reserved - amount).max(0.0);
            }
        }
    }

    fn end(&mut self, n: u64, how: Ended, now: i64) {
        self.ended.insert(n, how);
        self.ended_order.push_back((now, n));
        while let Some((at, _)) = self.ended_order.front() {
            if *at > now - ENDED_KEEP_MS && self.ended_order.len() <= ENDED_MAX {
                break;
            }
            let (_, old) = self.ended_order.pop_front().expect("front exists");
            self.ended.remove(&old);
        }
    }

    /// Releases reservations past their expiry: a few per call on the
    /// request path (so that a mass expiry never stalls one request), the
    /// rest at the next tick.
    fn expire(&mut self, now: i64) {
        self.expire_some(now, EXPIRE_PER_CALL);
    }

    fn expire_some(&mut self, now: i64, mut budget: usize) {
        while let Some((at, _)) = self.expiries.first() {
            if *at > now || budget == 0 {
                break;
            }
            budget -= 1;
            let (_, n) = self.expiries.pop_first().expect("first exists");
            if let Some(r) = self.reservations.remove(&n) {
                self.release(&r);
                self.end(n, Ended::Expired, now);
            }
        }
    }

    pub fn open_reservations(&self) -> usize {
        self.reservations.len()
    }

    /// The ids of the budgets covering calls of `subject`.
    pub fn covering(&self, subject: &Subject<'_>) -> Vec<String> {
        self.budgets().filter(|b| b.covers(subject)).map(|b| b.id.clone()).collect()
    }

    /// This node's share of each ready budget (of `only`, when given):
    /// (id, period key, spend, reserved), for the other nodes of a cluster.
    pub fn shares(&mut self, only: Option<&[String]>, now: i64) -> Vec<(String, i64, f64, f64)> {
        let mut out = Vec::new();
        for entry in self.slots.iter_mut().flatten() {
            if !entry.ready || only.is_some_and(|ids| !ids.contains(&entry.budget.id)) {
                continue;
            }
            let (spend, start, _) = entry.spend.current(&entry.budget, now);
            out.push((entry.budget.id.clone(), entry.period_key(start), spend, entry.reserved));
        }
        out
    }

    /// What the other nodes of a cluster hold of budget `id`: per period
    /// key, their spend and reservations summed. The current period's
    /// counts from now on; none listed: nothing.
    pub fn set_others(&mut self, id: &str, periods: &[(i64, f64, f64)], now: i64) {
        let Some(entry) = self.by_id.get(id).and_then(|s| self.slots[*s].as_mut()) else {
            return;
        };
        let (_, start, _) = entry.spend.current(&entry.budget, now);
        let key = entry.period_key(start);
        let (spend, reserved) = periods
            .iter()
            .filter(|(period, _, _)| *period == key)
            .fold((0.0, 0.0), |(s, r), (_, spend, reserved)| (s + spend, r + reserved));
        entry.others = Others { period: key, spend, reserved };
    }
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The boot of a reservation id (`r_<boot>_<n>`), if it is one.
pub fn reservation_boot(id: &str) -> Option<&str> {
    parse_reservation_id(id).map(|(boot, _)| boot)
}

/// The boot and number of a reservation id (`r_<boot>_<n>`).
fn parse_reservation_id(id: &str) -> Option<(&str, u64)> {
    let rest = id.strip_prefix("r_")?;
    let (boot, n) = rest.split_once('_')?;
    if boot.len() != 8 || !boot.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((boot, u64::from_str_radix(n, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budgets::period::Period;
    use crate::budgets::rule::{Origin, Scope};
    use crate::model::Tags;
    use crate::time::{DAY_MS, MINUTE_MS, SECOND_MS, parse_instant};

    fn budget(id: &str, limit: f64, period: Period, mode: Mode) -> Arc<Budget> {
        Arc::new(Budget {
            id: id.into(),
            name: id.into(),
            project: "default".into(),
            scope: Scope { user: Some("alice".into()), ..Scope::default() },
            metric: Metric::CostUsd,
            limit,
            period,
            timezone: chrono_tz::Tz::UTC,
            thresholds: vec![50.0, 80.0, 100.0],
            webhooks: vec![],
            mode,
            fail: FailMode::Open,
            secret: "0123456789abcdef".into(),
            origin: Origin::Api,
            created_ms: 0,
            updated_ms: 0,
        })
    }

    fn ready(book: &mut Book, b: &Arc<Budget>, now: i64) -> Vec<Crossing> {
        book.put(b.clone());
        let mut out = Vec::new();
        book.load(b, Spend::new(b), Fired::from_recorded(b, 0, &[]), now, &mut out);
        out
    }

    fn call(user: &str, time_ms: i64, cost: f64) -> LlmCall {
        LlmCall {
            user: Some(user.into()),
            time_ms,
            cost_usd: cost,
            tags: Tags::new(),
            ..LlmCall::example()
        }
    }

    fn alice() -> Subject<'static> {
        static TAGS: std::sync::LazyLock<Tags> = std::sync::LazyLock::new(Tags::new);
        Subject {
            project: "default",
            model: Some("gpt-4o"),
            provider: None,
            user: Some("alice"),
            api_key: None,
            route: None,
            tags: &TAGS,
        }
    }

    #[test]
    fn reservations_never_overshoot() {
        let now = parse_instant("2026-11-22T10:00:00Z").unwrap();
        let mut book = Book::new(7);
        let b = budget("b", 10.0, Period::Month, Mode::Enforce);
        ready(&mut book, &b, now);
        let est = Estimate { cost_usd: Some(1.0), tokens: None };
        let allowed = (0..64).filter(|_| book.reserve(&alice(), est, 60_000, now).allowed).count();
        assert_eq!(allowed, 10);
        let status = book.status("b", now).unwrap();
        assert_eq!((status.reserved, status.remaining), (10.0, 0.0));
        let denied = book.reserve(&alice(), est, 60_000, now);
        assert!(denied.reason.unwrap().contains("would exceed the limit"));
    }

    #[test]
    fn settle_releases_after_commit_and_only_once() {
        let now = 1_000_000;
        let mut book = Book::new(7);
        let b = budget("b", 10.0, Period::Rolling { window_ms: DAY_MS }, Mode::Enforce);
        ready(&mut book, &b, now);
        let est = Estimate { cost_usd: Some(4.0), tokens: None };
        let id = book.reserve(&alice(), est, 60_000, now).reservation_id.unwrap();
        assert_eq!(book.begin_settle(&id, now), Ok(Ticket::Open));
        assert!(matches!(book.begin_settle(&id, now), Err(SettleError::InProgress(_))));
        // The usage lands before the hold goes: briefly counted twice, never zero.
        book.observe(std::iter::once((&call("alice", now, 3.0), 1)), now);
        assert_eq!(book.status("b", now).unwrap().reserved, 4.0);
        book.finish_settle(&id, true, now);
        let status = book.status("b", now).unwrap();
        assert_eq!((status.spend, status.reserved), (3.0, 0.0));
        assert!(matches!(book.begin_settle(&id, now), Err(SettleError::AlreadySettled(_))));
        assert!(matches!(book.begin_settle("r_00000007_99", now), Err(SettleError::Unknown(_))));
        assert_eq!(book.begin_settle("r_0000abcd_1", now), Ok(Ticket::BeforeRestart));
        assert!(matches!(book.begin_settle("nonsense", now), Err(SettleError::Unknown(_))));
    }

    #[test]
    fn a_reservation_settled_elsewhere_releases_its_hold_once() {
        let now = 1_000_000;
        let mut book = Book::new(7);
        let b = budget("b", 10.0, Period::Rolling { window_ms: DAY_MS }, Mode::Enforce);
        ready(&mut book, &b, now);
        let est = Estimate { cost_usd: Some(4.0), tokens: None };
        let id = book.reserve(&alice(), est, 60_000, now).reservation_id.unwrap();
        assert_eq!(book.status("b", now).unwrap().reserved, 4.0);
        assert!(!book.release_settled_elsewhere("r_0000abcd_0", now), "another boot's");
        assert!(book.release_settled_elsewhere(&id, now));
        assert_eq!(book.status("b", now).unwrap().reserved, 0.0);
        assert!(!book.release_settled_elsewhere(&id, now), "once");
        assert!(matches!(book.begin_settle(&id, now), Err(SettleError::AlreadySettled(_))));
    }

    #[test]
    fn expired_reservations_release_their_holds() {
        let mut book = Book::new(7);
        let b = budget("b", 10.0, Period::Day, Mode::Enforce);
        ready(&mut book, &b, 0);
        let est = Estimate { cost_usd: Some(10.0), tokens: None };
        let id = book.reserve(&alice(), est, 5_000, 0).reservation_id.unwrap();
        assert!(!book.reserve(&alice(), est, 5_000, 1_000).allowed);
        assert!(book.reserve(&alice(), est, 5_000, 5_000).allowed);
        assert_eq!(book.begin_settle(&id, 5_000), Ok(Ticket::Expired));
    }

    #[test]
    fn thresholds_fire_once_per_period_and_reset_at_rollover() {
        let day1 = parse_instant("2026-11-22T10:00:00Z").unwrap();
        let mut book = Book::new(7);
        let b = budget("b", 10.0, Period::Day, Mode::Observe);
        ready(&mut book, &b, day1);
        let fired = |cs: Vec<Crossing>| cs.iter().map(|c| c.threshold).collect::<Vec<_>>();
        assert_eq!(
            fired(book.observe([(&call("alice", day1, 4.0), 1)].into_iter(), day1)),
            Vec::<f64>::new()
        );
        assert_eq!(fired(book.observe([(&call("alice", day1, 1.0), 1)].into_iter(), day1)), [50.0]);
        assert_eq!(fired(book.observe([(&call("alice", day1, 4.0), 1)].into_iter(), day1)), [80.0]);
        assert_eq!(
            fired(book.observe([(&call("bob", day1, 9.0), 2)].into_iter(), day1)),
            Vec::<f64>::new()
        );
        assert_eq!(
            fired(book.observe([(&call("alice", day1, 5.0), 1)].into_iter(), day1)),
            [100.0]
        );
        assert_eq!(
            fired(book.observe([(&call("alice", day1, 5.0), 1)].into_iter(), day1)),
            Vec::<f64>::new()
        );
        // The next day starts from zero; 60 % of it fires 50 % once more.
        let day2 = day1 + DAY_MS;
        assert_eq!(fired(book.tick(day2)), Vec::<f64>::new());
        assert_eq!(book.status("b", day2).unwrap().spend, 0.0);
        assert_eq!(fired(book.observe([(&call("alice", day2, 6.0), 1)].into_iter(), day2)), [50.0]);
    }

    #[test]
    fn rolling_spend_ages_out_and_rearms() {
        let window = Period::Rolling { window_ms: MINUTE_MS };
        let mut book = Book::new(7);
        let b = budget("b", 10.0, window, Mode::Enforce);
        let t0 = 100 * MINUTE_MS;
        ready(&mut book, &b, t0);
        let crossed = book.observe([(&call("alice", t0, 6.0), 1)].into_iter(), t0);
        assert_eq!(crossed.len(), 1);
        assert_eq!(book.status("b", t0 + 30 * SECOND_MS).unwrap().spend, 6.0);
        // Out of the window within one bucket (1 s) after a minute.
        assert_eq!(book.status("b", t0 + MINUTE_MS + SECOND_MS).unwrap().spend, 0.0);
        assert!(book.tick(t0 + MINUTE_MS + SECOND_MS).is_empty());
        let later = t0 + 2 * MINUTE_MS;
        assert_eq!(book.observe([(&call("alice", later, 6.0), 1)].into_iter(), later).len(), 1);
        // A dip that no tick saw still re-arms.
        let dip = later + MINUTE_MS + 2 * SECOND_MS;
        assert_eq!(book.observe([(&call("alice", dip, 6.0), 1)].into_iter(), dip).len(), 1);
    }

    #[test]
    fn unready_budgets_follow_their_fail_mode() {
        let mut book = Book::new(7);
        let mut closed = (*budget("c", 10.0, Period::Day, Mode::Enforce)).clone();
        closed.fail = FailMode::Closed;
        book.put(Arc::new(closed));
        let est = Estimate { cost_usd: Some(1.0), tokens: None };
        let decision = book.reserve(&alice(), est, 1_000, 0);
        assert!(!decision.allowed);
        assert!(decision.reason.unwrap().contains("fails closed"));
        book.put(budget("c", 10.0, Period::Day, Mode::Enforce));
        assert!(book.reserve(&alice(), est, 1_000, 0).allowed);
    }
}
