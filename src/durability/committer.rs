//! The committer task and its handle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::reprice::{self, RepriceReport};
use super::shared::{Shared, Verdict};
use crate::aggregate::RollupEngine;
use crate::aggregate::metric::{Bin, BinKey, MetricRegistry, SeriesPoint, encode_log};
use crate::exposition::Metrics;
use crate::model::{LlmCall, LogRecord, MetricPoint, SpanRecord};
use crate::pricing::PriceTable;
use crate::storage::{AppendBatch, Appended, EncodedPart, RetentionCutoffs, Storage, StorageError};

#[derive(Debug, Clone)]
pub struct CommitterConfig {
    /// Most calls committed in one transaction.
    pub max_group_records: usize,
    /// Most calls waiting for a commit; beyond it requests are refused with
    /// "overloaded" instead of buffering without bound.
    pub max_queued_records: usize,
    /// How often open rollup buckets are flushed to the store.
    pub flush_interval: Duration,
    /// Flush early when this many open cells have accumulated.
    pub max_open_cells: usize,
    /// Flush early when this many open 10 s metric bins have accumulated
    /// (a backfill opens one per series and 10 s, each with a sketch).
    pub max_open_metric_bins: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            max_group_records: 50_000,
            max_queued_records: 400_000,
            flush_interval: Duration::from_secs(5),
            max_open_cells: 200_000,
            max_open_metric_bins: 50_000,
        }
    }
}

/// What happened to one submitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("ingest queue is full ({queued} records waiting); retry later")]
    Overloaded { queued: usize },
    /// The outbox to the shared store is past its bound.
    #[error("{message}")]
    Backlog { message: String, retry_after_s: u32 },
    /// Another node claimed a call of the batch and has not yet said it
    /// committed it.
    #[error(
        "node {node} is committing a call of this batch (same id or span); nothing in the batch was acknowledged, retry shortly"
    )]
    Pending { node: String },
    #[error("the store could not commit: {0}")]
    Store(Arc<StorageError>),
    #[error("the server is shutting down")]
    Stopped,
}

impl From<StorageError> for CommitError {
    fn from(err: StorageError) -> Self {
        CommitError::Store(Arc::new(err))
    }
}

type Reply<T> = oneshot::Sender<Result<T, CommitError>>;

/// Told about every call as it commits, before its request is answered
/// (the /metrics ledger and budgets count this way).
pub trait CommitObserver: Send + Sync {
    /// Accepted calls with their series ids (duplicates are left out).
    fn committed(&self, calls: &mut dyn Iterator<Item = (&LlmCall, i64)>);
    /// Rollup series let go: their ids are not used again.
    fn forget_series(&self, _series: &[i64]) {}
}

/// Records resolved and encoded for the committer ([`Committer::prepare`]).
pub struct Prepared {
    /// Its points are in `points`, with their series resolved.
    records: Records,
    points: Vec<SeriesPoint>,
    series_ids: Vec<i64>,
    encoded: EncodedPart,
}

impl Prepared {
    /// Spans, log records and points (calls count apart, by outcome).
    pub fn telemetry_records(&self) -> usize {
        self.records.spans.len() + self.records.logs.len() + self.points.len()
    }
}

/// A request's committed calls and spans, handed back to be freed on the
/// thread that made them.
#[derive(Default)]
pub struct Made {
    _calls: Vec<LlmCall>,
    _spans: Vec<SpanRecord>,
}

/// Records one request hands in to be made durable together.
#[derive(Debug, Default)]
pub struct Records {
    pub calls: Vec<LlmCall>,
    pub spans: Vec<SpanRecord>,
    pub logs: Vec<LogRecord>,
    pub points: Vec<MetricPoint>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.calls.len() + self.spans.len() + self.logs.len() + self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A project some record names other than `project`.
    pub fn project_other_than(&self, project: &str) -> Option<&str> {
        let calls = self.calls.iter().map(|c| c.project.as_str());
        let spans = self.spans.iter().map(|s| s.project.as_str());
        let logs = self.logs.iter().map(|l| l.project.as_str());
        let points = self.points.iter().map(|p| p.key.project.as_str());
        calls.chain(spans).chain(logs).chain(points).find(|p| *p != project)
    }
}

enum Job {
    Append {
        /// Its points are in `points`, with their series resolved.
        records: Records,
        points: Vec<SeriesPoint>,
        /// Its calls' series ids.
        series_ids: Vec<i64>,
        /// Its calls, spans and logs as the store encoded them.
        encoded: EncodedPart,
        reply: Reply<Committed>,
    },
    Reprice {
        from: i64,
        to: i64,
        project: Option<String>,
        prices: Arc<PriceTable>,
        reply: Reply<RepriceReport>,
    },
    Retention {
        cutoffs: RetentionCutoffs,
        reply: Reply<u64>,
    },
    Flush {
        reply: Reply<()>,
    },
    /// Work that must see every acknowledged call applied and none in flight.
    Exclusive {
        work: Pin<Box<dyn Future<Output = ()> + Send>>,
    },
}

/// The handle request handlers use to get calls committed.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
    storage: Arc<dyn Storage>,
    engine: Arc<RollupEngine>,
    metric_registry: Arc<MetricRegistry>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    shared: Shared,
}

impl Committer {
    /// Starts the committer task.
    pub fn start(
        storage: Arc<dyn Storage>,
        engine: Arc<RollupEngine>,
        config: CommitterConfig,
        metrics: Arc<Metrics>,
        metric_registry: Arc<MetricRegistry>,
        observers: Vec<Arc<dyn CommitObserver>>,
        shared: Shared,
    ) -> std::io::Result<(Committer, oneshot::Receiver<()>)> {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let handle = Committer {
            jobs,
            storage: storage.clone(),
            engine: engine.clone(),
            metric_registry: metric_registry.clone(),
            queued: queued.clone(),
            max_queued: config.max_queued_records,
            shared: shared.clone(),
        };
        let task = CommitterTask {
            storage,
            engine,
            config,
            queued,
            metrics,
            metric_registry,
            observers,
            shared,
            last_flush: Instant::now(),
            last_start: Instant::now(),
        };
        let (stopped_tx, stopped) = oneshot::channel();
        // The committer gets a thread (and a single-threaded runtime) of its
        // own: on the shared runtime it would queue behind request handlers
        // busy parsing, and every request would wait for that.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("tally-committer".into()).spawn(move || {
            runtime.block_on(task.run(receiver));
            let _ = stopped_tx.send(());
        })?;
        Ok((handle, stopped))
    }

    /// Commits `calls`; resolves once they are durable and queryable.
    pub async fn submit(&self, calls: Vec<LlmCall>) -> Result<Vec<Outcome>, CommitError> {
        self.submit_records(Records { calls, ..Records::default() }).await
    }

    /// Commits calls, spans and logs in one store transaction; resolves once
    /// they are durable and queryable, with the outcome of each call.
    pub async fn submit_records(&self, records: Records) -> Result<Vec<Outcome>, CommitError> {
        let (outcomes, made) = self.commit_prepared(self.prepare(records)).await?;
        drop(made);
        Ok(outcomes)
    }

    /// The CPU part of a commit, on the caller's thread rather than the
    /// committer's: series resolved and assigned, records encoded.
    pub fn prepare(&self, records: Records) -> Prepared {
        let mut records = records;
        let points = self.metric_registry.resolve(std::mem::take(&mut records.points));
        let assigned = self.engine.assign(&records.calls);
        let encoded = self.storage.encode(
            &records.calls,
            &assigned.own_dimensions,
            &mut records.spans,
            &mut records.logs,
        );
        Prepared { records, points, series_ids: assigned.ids, encoded }
    }

    /// Commits prepared records; resolves once they are durable and
    /// queryable, with the outcome of each call and the records themselves,
    /// for the caller to free where it made them.
    pub async fn commit_prepared(
        &self,
        prepared: Prepared,
    ) -> Result<(Vec<Outcome>, Made), CommitError> {
        let Prepared { records, points, series_ids, encoded } = prepared;
        let n = records.len() + points.len();
        if n == 0 {
            return Ok((Vec::new(), Made::default()));
        }
        if let Some(outbox) = &self.shared.outbox {
            outbox.admit()?;
        }
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.max_queued {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(CommitError::Overloaded { queued: before });
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Append { records, points, series_ids, encoded, reply };
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(CommitError::Stopped);
        }
        let Committed { outcomes, calls, spans } =
            answer.await.unwrap_or(Err(CommitError::Stopped))?;
        Ok((outcomes, Made { _calls: calls, _spans: spans }))
    }

    /// Records waiting for a commit.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(job(reply)).map_err(|_| CommitError::Stopped)?;
        answer.await.unwrap_or(Err(CommitError::Stopped))
    }

    /// Recomputes costs of calls in `[from, to)` with `prices`, and the
    /// rollups that contain them.
    /// Re-prices the calls of `[from, to)` (of `project` only, when given).
    pub async fn reprice(
        &self,
        from: i64,
        to: i64,
        project: Option<String>,
        prices: Arc<PriceTable>,
    ) -> Result<RepriceReport, CommitError> {
        self.ask(|reply| Job::Reprice { from, to, project, prices, reply }).await
    }

    pub async fn retention(&self, cutoffs: RetentionCutoffs) -> Result<u64, CommitError> {
        self.ask(|reply| Job::Retention { cutoffs, reply }).await
    }

    /// Flushes open rollup buckets now (used at shutdown and by tests).
    pub async fn flush(&self) -> Result<(), CommitError> {
        self.ask(|reply| Job::Flush { reply }).await
    }

    /// Runs `work` between two appends: every call acknowledged before it is
    /// applied to the rollups, and no call commits while it runs.
    pub async fn exclusive<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, CommitError> {
        self.ask(|reply| Job::Exclusive {
            work: Box::pin(async move {
                let _ = reply.send(Ok(work.await));
            }),
        })
        .await
    }
}

struct CommitterTask {
    storage: Arc<dyn Storage>,
    engine: Arc<RollupEngine>,
    config: CommitterConfig,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    metric_registry: Arc<MetricRegistry>,
    /// Told about accepted calls (the /metrics ledger, budgets).
    observers: Vec<Arc<dyn CommitObserver>>,
    /// Claims and the outbox, when the node is one of several.
    shared: Shared,
    last_flush: Instant,
    /// When the last append started.
    last_start: Instant,
}

/// A small group waits this long after the previous append started, for
/// company: many tiny commits (one quota settle each, say) cost the store
/// far more than a few larger ones, and a millisecond is little to wait.
const LINGER: Duration = Duration::from_micros(250);
/// A group this large starts at once.
const LINGER_RECORDS: usize = 256;

struct Pending {
    calls: usize,
    reply: Reply<Committed>,
}

/// A request's answer: the outcome of each of its calls, and its calls and
/// spans themselves, handed back so that they are freed on the request's
/// thread (where they were made, which costs the allocator least) rather
/// than on the committer's.
struct Committed {
    outcomes: Vec<Outcome>,
    calls: Vec<LlmCall>,
    spans: Vec<SpanRecord>,
}

/// Records gathered for the next append, with the requests they came from.
#[derive(Default)]
struct Group {
    /// The calls and spans, a part per request (kept apart rather than
    /// moved into one, which would copy them into fresh memory).
    calls: Vec<Vec<LlmCall>>,
    spans: Vec<Vec<SpanRecord>>,
    logs: Vec<LogRecord>,
    points: Vec<SeriesPoint>,
    /// The calls' series ids.
    series_ids: Vec<i64>,
    /// The requests' records as the store encoded them, in gathering order.
    encoded: Vec<EncodedPart>,
    pending: Vec<Pending>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn len(&self) -> usize {
        let parts = self.calls.iter().map(Vec::len).chain(self.spans.iter().map(Vec::len));
        parts.sum::<usize>() + self.logs.len() + self.points.len()
    }
}

/// An append's outcome, with which calls the cluster refused (per call;
/// empty on a node of its own).
type AppendResult = Result<(Appended, Vec<bool>), CommitError>;

/// A group being appended.
struct InFlight {
    append: Pin<Box<dyn Future<Output = AppendResult> + Send>>,
    pending: Vec<Pending>,
    /// Series first written by this group.
    new_series: Vec<i64>,
    new_metric_ids: Vec<i64>,
    /// The group's 10 s metric bins, opened once it commits.
    metric_bins: Vec<(BinKey, Bin)>,
    total: usize,
    /// Log records in the group.
    logs: usize,
}

impl CommitterTask {
    /// Lets go of the rollup series whose newest call is older than every
    /// retention (raw calls and each rollup tier), in memory and in the
    /// store; none while anything is kept forever.
    async fn evict_series(&self, cutoffs: &RetentionCutoffs) -> Result<(), CommitError> {
        let all = [cutoffs.raw, cutoffs.minute, cutoffs.hour, cutoffs.day];
        let Some(before_ms) = all.into_iter().try_fold(i64::MAX, |min, c| c.map(|c| min.min(c)))
        else {
            return Ok(());
        };
        // A day's margin: series are dated by day.
        let evicted = self.engine.evict_series(before_ms.saturating_sub(86_400_000));
        if evicted.is_empty() {
            return Ok(());
        }
        info!(series = evicted.len(), "rollup series with no data left let go");
        for observer in &self.observers {
            observer.forget_series(&evicted);
        }
        self.storage.forget_series(evicted).await?;
        Ok(())
    }

    /// The loop: while one group is being appended, the next one gathers;
    /// when an append finishes, the next append starts at once and the
    /// finished group is applied to the rollups and answered meanwhile, so
    /// the store's writer is rarely idle.
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut ticker = tokio::time::interval(self.config.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = Group::default();
        let mut exclusive: Vec<Job> = Vec::new();
        let mut inflight: Option<InFlight> = None;
        let mut open = true;
        while open || inflight.is_some() || !next.is_empty() {
            tokio::select! {
                biased;
                done = async { (&mut inflight.as_mut().expect("guarded").append).await },
                    if inflight.is_some() =>
                {
                    let finished = inflight.take().expect("guarded");
                    // Start the next append before answering the finished
                    // group, unless something must run between the two.
                    let must_pause = !exclusive.is_empty() || self.flush_due();
                    // (Series the finished group wrote are still pending for
                    // the next one; writing them again is harmless.)
                    if !must_pause && self.may_start(&next) {
                        inflight = Some(self.start_append(std::mem::take(&mut next)));
                    }
                    self.finish(done, finished);
                }
                _ = tokio::time::sleep_until((self.last_start + LINGER).into()),
                    if inflight.is_none() && !next.is_empty() => {}
                job = jobs.recv(), if open && next.len() < self.config.max_group_records => {
                    match job {
                        Some(Job::Append { mut records, mut points, mut series_ids, encoded, reply }) => {
                            next.pending.push(Pending { calls: records.calls.len(), reply });
                            next.series_ids.append(&mut series_ids);
                            next.encoded.push(encoded);
                            next.calls.push(std::mem::take(&mut records.calls));
                            next.spans.push(std::mem::take(&mut records.spans));
                            next.logs.append(&mut records.logs);
                            next.points.append(&mut points);
                        }
                        Some(job) => exclusive.push(job),
                        None => open = false,
                    }
                }
                _ = ticker.tick() => {}
            }
            if inflight.is_some() {
                continue;
            }
            if self.flush_due() {
                self.flush().await.ok();
            }
            for job in exclusive.drain(..) {
                self.run_exclusive(job).await;
            }
            if self.may_start(&next) || (!open && !next.is_empty()) {
                inflight = Some(self.start_append(std::mem::take(&mut next)));
            }
        }
        if let Err(err) = self.flush().await {
            error!(%err, "final rollup flush failed; rollups will be rebuilt from calls at next start");
        }
        info!("committer stopped");
    }

    /// Whether `next` should be appended now rather than wait for company.
    fn may_start(&self, next: &Group) -> bool {
        !next.is_empty() && (next.len() >= LINGER_RECORDS || self.last_start.elapsed() >= LINGER)
    }

    fn flush_due(&self) -> bool {
        self.last_flush.elapsed() >= self.config.flush_interval
            || self.engine.open_cell_count() >= self.config.max_open_cells
            || self.metric_registry.open_count() >= self.config.max_open_metric_bins
    }

    /// Assigns series and starts appending a group on the store.
    fn start_append(&mut self, group: Group) -> InFlight {
        self.last_start = Instant::now();
        let total = group.len();
        let (calls, spans, logs) = (group.calls, group.spans, group.logs);
        let log_count = logs.len();
        let (points, encoded) = (group.points, group.encoded);
        // Every series not yet confirmed is written (those of this group's
        // calls were assigned before the calls were queued).
        let (series_ids, new_series) = (group.series_ids, self.engine.pending_series());
        // Points are summed into 10 s bins here, which the store logs (one
        // row) and the open bins take once committed.
        let (metric_bins, new_metric_series) = self.metric_registry.bin(points);
        let metric_log = (!metric_bins.is_empty()).then(|| encode_log(&metric_bins));
        let new_metric_ids: Vec<i64> = new_metric_series.iter().map(|(id, _)| *id).collect();
        let new_ids: Vec<i64> = new_series.iter().map(|(id, _)| *id).collect();
        let storage = self.storage.clone();
        let metrics = self.metrics.clone();
        let claims = self.shared.claims.clone();
        let started = Instant::now();
        let mut append: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
            // Calls another node counted are refused before the local
            // commit, as the local dedupe refuses calls already stored.
            let refused = match &claims {
                Some(claims) => refused(&**claims, &calls).await?,
                None => Vec::new(),
            };
            let result = storage
                .append(AppendBatch {
                    calls,
                    series_ids,
                    new_series,
                    spans,
                    logs,
                    metric_log,
                    new_metric_series,
                    encoded,
                    refused: refused.clone(),
                })
                .await;
            metrics.appended(started.elapsed());
            let ms = started.elapsed().as_millis() as u64;
            tracing::debug!(records = total, ms, "group committed");
            Ok((result?, refused))
        });
        // Polled once now, so that the store's writer gets the group before
        // the committer turns to answering the group before it (a later
        // poll registers the committer's waker).
        let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(done) = append.as_mut().poll(&mut noop) {
            append = Box::pin(std::future::ready(done));
        }
        InFlight {
            append,
            pending: group.pending,
            new_series: new_ids,
            new_metric_ids,
            metric_bins,
            total,
            logs: log_count,
        }
    }

    /// Applies a committed group to the rollups, then answers its requests.
    fn finish(&mut self, result: AppendResult, group: InFlight) {
        self.queued.fetch_sub(group.total, Ordering::AcqRel);
        let (appended, _refused) = match result {
            Ok(done) => done,
            Err(err) => {
                error!(%err, records = group.total, "commit failed; requests answered with an error");
                if let Some(claims) = &self.shared.claims {
                    claims.abandoned();
                }
                for p in group.pending {
                    let _ = p.reply.send(Err(err.clone()));
                }
                return;
            }
        };
        self.tell_shared(&appended, group.logs);
        self.engine.confirm_series(&group.new_series);
        self.metric_registry.confirm(&group.new_metric_ids);
        if let Some(seq) = appended.metric_seq {
            self.metric_registry.apply(&group.metric_bins, seq);
        }
        if appended.spans_dropped > 0 {
            let cut = crate::normalize::limits::Truncation {
                spans: appended.spans_dropped,
                ..Default::default()
            };
            self.metrics.truncated(&cut);
        }
        let accepted = || {
            appended
                .calls
                .iter()
                .flatten()
                .zip(&appended.series_ids)
                .zip(&appended.seqs)
                .filter_map(|((call, series), seq)| seq.map(|seq| (call, *series, seq)))
        };
        self.engine.apply(accepted().map(|(call, series, seq)| (seq, series, call)));
        for observer in &self.observers {
            observer.committed(&mut accepted().map(|(call, series, _)| (call, series)));
        }
        let mut outcomes = appended.seqs.iter().map(|seq| match seq {
            Some(_) => Outcome::Accepted,
            None => Outcome::Duplicate,
        });
        let parts = appended.calls.into_iter().zip(appended.spans);
        for (p, (calls, spans)) in group.pending.into_iter().zip(parts) {
            let outcomes = outcomes.by_ref().take(p.calls).collect();
            let _ = p.reply.send(Ok(Committed { outcomes, calls, spans }));
        }
    }

    /// Tells the cluster's claims which calls are now durable here (every
    /// call not refused: those the local dedupe found were stored before),
    /// and the outbox how many records wait to be copied (as the shipper
    /// counts them: calls, spans, log records and metric commits).
    fn tell_shared(&self, appended: &Appended, logs: usize) {
        if let Some(claims) = &self.shared.claims {
            claims.committed();
        }
        if let Some(outbox) = &self.shared.outbox {
            let calls = appended.seqs.iter().filter(|s| s.is_some()).count();
            let spans: usize = appended.spans.iter().map(Vec::len).sum();
            let spans = spans.saturating_sub(appended.spans_dropped as usize);
            // A logged metric commit is shipped (and counted) as one record.
            let metric_commits = usize::from(appended.metric_seq.is_some());
            outbox.committed((calls + spans + logs + metric_commits) as u64);
        }
    }

    /// Flushes the open rollup buckets, then the open metric bins.
    async fn flush(&mut self) -> Result<(), StorageError> {
        self.last_flush = Instant::now();
        let rollups = self.flush_rollups().await;
        let metrics = self.flush_metric_bins().await;
        rollups.and(metrics)
    }

    async fn flush_metric_bins(&mut self) -> Result<(), StorageError> {
        let flush = self.metric_registry.begin_flush();
        if flush.bins.is_empty() {
            flush.stored();
            return Ok(());
        }
        let started = Instant::now();
        let result = self.storage.flush_metric_bins(flush.bins.clone(), flush.watermark).await;
        let ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(()) => {
                tracing::debug!(bins = flush.bins.len(), ms, "metric bins flushed");
                flush.stored();
            }
            Err(err) => {
                warn!(%err, bins = flush.bins.len(), "metric bin flush failed; bins kept open");
                flush.abort();
            }
        }
        result
    }

    async fn flush_rollups(&mut self) -> Result<(), StorageError> {
        let mut flush = self.engine.begin_flush().await;
        if flush.cells.is_empty() {
            return Ok(());
        }
        let cells = Arc::new(std::mem::take(&mut flush.cells));
        let started = Instant::now();
        let new_series = std::mem::take(&mut flush.new_series);
        let new_ids: Vec<i64> = new_series.iter().map(|(id, _)| *id).collect();
        match self.storage.flush_rollups(cells.clone(), flush.watermark, new_series).await {
            Ok(()) => {
                self.metrics.flushed(started.elapsed());
                self.engine.confirm_series(&new_ids);
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(cells = cells.len(), ms, "rollups flushed");
                Ok(())
            }
            Err(err) => {
                warn!(%err, cells = cells.len(), "rollup flush failed; cells kept in memory");
                flush.abort(Arc::try_unwrap(cells).unwrap_or_else(|shared| (*shared).clone()));
                Err(err)
            }
        }
    }

    async fn run_exclusive(&mut self, job: Job) {
        match job {
            Job::Append { .. } => unreachable!("appends are grouped, never run alone"),
            Job::Flush { reply } => {
                let _ = reply.send(self.flush().await.map_err(CommitError::from));
            }
            Job::Exclusive { work } => work.await,
            Job::Retention { cutoffs, reply } => {
                let result = match self.flush().await {
                    Ok(()) => {
                        let _exclusive = self.engine.exclusive().await;
                        let deleted = self.storage.apply_retention(cutoffs).await;
                        self.metric_registry.forget_flushes();
                        match deleted {
                            Ok(deleted) => self.evict_series(&cutoffs).await.map(|()| deleted),
                            Err(err) => Err(err.into()),
                        }
                    }
                    Err(err) => Err(err.into()),
                };
                let _ = reply.send(result);
            }
            Job::Reprice { from, to, project, prices, reply } => {
                let window = reprice::Window { from, to, project: project.as_deref() };
                let result = match self.flush().await {
                    Ok(()) => reprice::run(&*self.storage, &self.engine, window, &prices)
                        .await
                        .map_err(CommitError::from),
                    Err(err) => Err(err.into()),
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// Per call of `calls` (flattened), whether another node counted it; an
/// error when one is still being committed elsewhere.
async fn refused(
    claims: &dyn super::shared::SharedClaims,
    calls: &[Vec<LlmCall>],
) -> Result<Vec<bool>, CommitError> {
    let flat: Vec<&LlmCall> = calls.iter().flatten().collect();
    let verdicts = claims.claim(&flat).await?;
    let mut refused = Vec::with_capacity(verdicts.len());
    for verdict in verdicts {
        match verdict {
            Verdict::Count => refused.push(false),
            Verdict::Duplicate => refused.push(true),
            Verdict::Pending(node) => return Err(CommitError::Pending { node }),
        }
    }
    Ok(refused)
}
