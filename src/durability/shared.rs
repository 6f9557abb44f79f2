//! The committer's seams to what a node shares with others: claims on call
//! keys, held for the whole cluster, so that a call sent to two nodes
//! counts once (`SharedClaims`), and the outbox of committed records still
//! to be copied to the shared store, whose bound refuses new work
//! (`Outbox`). A node on its own has neither.

use async_trait::async_trait;

use super::CommitError;
use crate::model::LlmCall;
use crate::storage::StorageError;

/// What the cluster says of one call's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This node holds every key: the call counts here (once: a call
    /// already stored locally is still found by the local dedupe).
    Count,
    /// Another node holds a key and has committed the call: a duplicate.
    Duplicate,
    /// Another node (named) holds a key but has not said it committed the
    /// call: nothing can be said yet, and the request is refused so that
    /// its sender retries.
    Pending(String),
}

#[async_trait]
pub trait SharedClaims: Send + Sync {
    /// Claims every key of `calls` for this node, in one round trip; the
    /// answer is per call, in order. An error leaves nothing committed.
    async fn claim(&self, calls: &[&LlmCall]) -> Result<Vec<Verdict>, StorageError>;
    /// The calls of the last claim are now durable here: their claims may
    /// be confirmed (lazily, with the next round trip).
    fn committed(&self);
    /// The calls of the last claim were not committed: their claims are
    /// given back (lazily), so that a retry to any node may count them.
    fn abandoned(&self);
}

/// The seams a node in a cluster gives its committer; none on its own.
#[derive(Clone, Default)]
pub struct Shared {
    pub claims: Option<std::sync::Arc<dyn SharedClaims>>,
    pub outbox: Option<std::sync::Arc<dyn Outbox>>,
}

pub trait Outbox: Send + Sync {
    /// Whether the outbox takes more records; the error says why not and
    /// when to come back.
    fn admit(&self) -> Result<(), CommitError>;
    /// `records` more were committed locally and wait to be copied.
    fn committed(&self, records: u64);
}
