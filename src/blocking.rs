//! CPU-heavy work of a request (decompression, decoding, normalization,
//! series assignment, encoding) kept from holding an async worker thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::durability::CommitError;
use crate::error::ApiError;

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of threads, one per core, each running its own queue in
/// order. A request's records are made on one lane and, after their commit,
/// freed on the same lane: made on one thread and freed on another, they
/// cost a fifth of span throughput (BENCHMARKS.md). The lanes never wait for
/// a commit; the request's future does.
pub struct Lanes {
    queues: Vec<mpsc::Sender<Task>>,
    next: AtomicUsize,
}

/// One lane of [`Lanes`], kept by a request for its whole life.
#[derive(Clone)]
pub struct Lane {
    queue: mpsc::Sender<Task>,
}

impl Lanes {
    /// Starts `threads` lanes (at least one).
    pub fn start(threads: usize) -> std::io::Result<Lanes> {
        let mut queues = Vec::new();
        for i in 0..threads.max(1) {
            let (queue, tasks) = mpsc::channel::<Task>();
            std::thread::Builder::new().name(format!("tally-cpu-{i}")).spawn(move || {
                for task in tasks {
                    // A panic fails its request (its answer is dropped),
                    // not the lane.
                    let _ = catch_unwind(AssertUnwindSafe(task));
                }
            })?;
            queues.push(queue);
        }
        Ok(Lanes { queues, next: AtomicUsize::new(0) })
    }

    /// A lane for one request, in turn.
    pub fn lane(&self) -> Lane {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        Lane { queue: self.queues[i].clone() }
    }
}

impl Lane {
    /// Runs `work` on this lane; resolves with its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (answer, result) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = answer.send(work());
        });
        if self.queue.send(task).is_err() {
            return Err(CommitError::Stopped.into());
        }
        result
            .await
            .unwrap_or_else(|_| Err(ApiError::internal("request processing failed", &"panicked")))
    }

    /// Drops `value` on this lane, where it was made; does not wait.
    pub fn free<T: Send + 'static>(&self, value: T) {
        let _ = self.queue.send(Box::new(move || drop(value)));
    }
}
