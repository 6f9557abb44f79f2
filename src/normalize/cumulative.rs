//! The last sample of every cumulative OTLP series, to turn the next one into
//! a delta — shared by concurrent exports whose commits finish in any order.
//!
//! A sample advances its series as soon as it is converted, not when its
//! points are committed: a concurrent export of the same series then takes
//! its delta from it (not from an older, committed sample, which would count
//! the same increase twice). A sample no newer than the series' latest (a
//! repeat, or one that arrived late) adds nothing. When a request's points
//! are not committed, `forget` takes back what its samples did: a series
//! nothing newer has reached returns to the sample before; otherwise the
//! increment the request would have recorded is owed, and added to the
//! series' next delta. Either way the stored total is the true increase.
//!
//! A series first seen with a start time before this server started only
//! sets the baseline (its earlier total may have been counted by a previous
//! run); one that started later counts from zero.
//!
//! At most `max_series` series are kept. When a new one would pass it,
//! series silent for an hour (by their samples' times) are let go, and the
//! start that counts from zero moves to now, as if the server had
//! restarted; if none can go, the new series' sample is refused.

use std::collections::HashMap;

use crate::model::Tags;

/// A cumulative series: metric name, unit and attributes.
pub type SeriesKey = (String, String, Tags);

/// What the previous sample of a cumulative series was.
#[derive(Debug, Clone, PartialEq)]
pub enum Previous {
    Sum { start_ns: u64, value: f64 },
    Distribution { start_ns: u64, count: u64, sum: f64, buckets: Vec<(f64, u64)> },
}

/// New observations of a series: a counter's increase, or a distribution's
/// count, sum and bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Increment {
    Sum(f64),
    Distribution { count: u64, sum: f64, buckets: Vec<(f64, u64)> },
}

impl Increment {
    /// Both increments together (of the same kind; otherwise `self`).
    fn plus(self, other: Option<Increment>) -> Increment {
        match (self, other) {
            (Increment::Sum(a), Some(Increment::Sum(b))) => Increment::Sum(a + b),
            (
                Increment::Distribution { count, sum, mut buckets },
                Some(Increment::Distribution { count: c, sum: s, buckets: b }),
            ) => {
                buckets.extend(b);
                buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
                let mut merged: Vec<(f64, u64)> = Vec::with_capacity(buckets.len());
                for (value, n) in buckets {
                    match merged.last_mut() {
                        Some(last) if last.0.to_bits() == value.to_bits() => last.1 += n,
                        _ => merged.push((value, n)),
                    }
                }
                Increment::Distribution { count: count + c, sum: sum + s, buckets: merged }
            }
            (increment, _) => increment,
        }
    }
}

struct Tracked {
    /// The newest sample converted, and its time; None once a sample was
    /// taken back and none came before it.
    latest: Option<(Previous, u64)>,
    /// Increments of requests that were not committed after a newer sample
    /// had been taken from theirs.
    owed: Option<Increment>,
}

/// What converting one sample did, to take back if its request is not
/// committed.
pub struct Change {
    key: SeriesKey,
    before: Option<(Previous, u64)>,
    time_ns: u64,
    /// The increment recorded, owed increments included.
    recorded: Option<Increment>,
    /// The owed increments it included.
    settled: Option<Increment>,
}

/// What one request's conversion did.
pub type Staged = Vec<Change>;

/// The latest sample of every cumulative series (see the module doc).
pub struct CumulativeState {
    started_ns: u64,
    series: HashMap<SeriesKey, Tracked>,
    max_series: usize,
    /// When silent series were last looked for, at most once a minute.
    swept_ns: u64,
    /// Samples refused because `max_series` series are kept.
    refused: u64,
    /// Changes of the conversion in progress (`take_staged`).
    staged: Staged,
}

/// A series silent this long may be let go when the state is full.
const SILENT_NS: u64 = 3_600 * 1_000_000_000;
/// Silent series are looked for at most this often.
const SWEEP_EVERY_NS: u64 = 60 * 1_000_000_000;

impl CumulativeState {
    pub fn new(started_ns: u64, max_series: usize) -> Self {
        Self {
            started_ns,
            series: HashMap::new(),
            max_series,
            swept_ns: 0,
            refused: 0,
            staged: Vec::new(),
        }
    }

    /// Samples refused so far because the state was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Room for one more series, letting silent ones go if need be.
    fn has_room(&mut self, now_ns: u64) -> bool {
        if self.series.len() < self.max_series {
            return true;
        }
        if now_ns.saturating_sub(self.swept_ns) >= SWEEP_EVERY_NS {
            self.swept_ns = now_ns;
            let before = self.series.len();
            let cutoff = now_ns.saturating_sub(SILENT_NS);
            self.series.retain(|_, t| {
                t.owed.is_some() || t.latest.as_ref().is_some_and(|(_, time)| *time >= cutoff)
            });
            if self.series.len() < before {
                // A series first seen from now on may have been let go: its
                // earlier increase may be counted already.
                self.started_ns = self.started_ns.max(now_ns);
            }
        }
        self.series.len() < self.max_series
    }

    /// Advances `key` to `sample` (taken at `time_ns`) and returns what to
    /// record: `delta` of the previous sample and this one (None: a
    /// baseline), plus what the series owes. None as well when `sample` is
    /// no newer than the series' latest.
    pub fn step(
        &mut self,
        key: SeriesKey,
        sample: Previous,
        time_ns: u64,
        delta: impl FnOnce(Option<&Previous>, &Previous, u64) -> Option<Increment>,
    ) -> Option<Increment> {
        let tracked = self.series.get(&key);
        if tracked.is_none() && !self.has_room(crate::time::now_ms() as u64 * 1_000_000) {
            self.refused += 1;
            return None;
        }
        let tracked = self.series.get(&key);
        let before = tracked.and_then(|t| t.latest.clone());
        if before.as_ref().is_some_and(|(_, t)| *t >= time_ns) {
            return None;
        }
        let own = delta(before.as_ref().map(|(p, _)| p), &sample, self.started_ns);
        let tracked =
            self.series.entry(key.clone()).or_insert(Tracked { latest: None, owed: None });
        tracked.latest = Some((sample, time_ns));
        let (recorded, settled) = match own {
            Some(own) => {
                let settled = tracked.owed.take();
                (Some(own.plus(settled.clone())), settled)
            }
            None => (None, None),
        };
        self.staged.push(Change { key, before, time_ns, recorded: recorded.clone(), settled });
        recorded
    }

    /// Takes out what the conversion just made changed: hand it to
    /// `forget` if its points are not committed, else drop it.
    pub fn take_staged(&mut self) -> Staged {
        std::mem::take(&mut self.staged)
    }

    /// Takes back the changes of a request whose points were not committed.
    pub fn forget(&mut self, staged: Staged) {
        for change in staged.into_iter().rev() {
            let Some(tracked) = self.series.get_mut(&change.key) else { continue };
            let still_latest = tracked.latest.as_ref().is_some_and(|(_, t)| *t == change.time_ns);
            let owed = if still_latest {
                // The next sample's delta will cover this one's increase.
                tracked.latest = change.before;
                change.settled
            } else {
                // A newer sample took its delta from this one: what this one
                // would have recorded is owed.
                change.recorded
            };
            if let Some(owed) = owed {
                tracked.owed = Some(owed.plus(tracked.owed.take()));
            }
            if tracked.latest.is_none() && tracked.owed.is_none() {
                self.series.remove(&change.key);
            }
        }
    }

    /// Series tracked (at most `max_series`).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// The increase of a cumulative counter from `before` to `sample`: the
/// difference in one run of the series, all of `sample` after a reset (a
/// new start time, or a value going down) or for a series that started
/// after the server, nothing (a baseline) for a first sample older than it.
pub fn sum_delta(
    before: Option<&Previous>,
    sample: &Previous,
    started_ns: u64,
) -> Option<Increment> {
    let Previous::Sum { start_ns, value } = *sample else { return None };
    match before {
        Some(Previous::Sum { start_ns: s, value: v }) if *s == start_ns && value >= *v => {
            Some(Increment::Sum(value - v))
        }
        Some(_) => Some(Increment::Sum(value)),
        None if start_ns >= started_ns => Some(Increment::Sum(value)),
        None => None,
    }
}

/// The new observations of a cumulative distribution since `before`, with
/// the same rules as `sum_delta` (a bucket count going down is a reset).
pub fn distribution_delta(
    before: Option<&Previous>,
    sample: &Previous,
    started_ns: u64,
) -> Option<Increment> {
    let Previous::Distribution { start_ns, count, sum, buckets } = sample else { return None };
    let whole = || Increment::Distribution { count: *count, sum: *sum, buckets: buckets.clone() };
    match before {
        Some(Previous::Distribution { start_ns: s, count: c, sum: su, buckets: b })
            if s == start_ns && count >= c =>
        {
            let before: HashMap<u64, u64> = b.iter().map(|(v, n)| (v.to_bits(), *n)).collect();
            let mut reset = false;
            let delta: Vec<(f64, u64)> = buckets
                .iter()
                .map(|(v, n)| {
                    let old = before.get(&v.to_bits()).copied().unwrap_or(0);
                    if *n < old {
                        reset = true;
                    }
                    (*v, n.saturating_sub(old))
                })
                .collect();
            if reset {
                Some(whole())
            } else {
                Some(Increment::Distribution { count: count - c, sum: sum - su, buckets: delta })
            }
        }
        Some(_) => Some(whole()),
        None if *start_ns >= started_ns => Some(whole()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SeriesKey {
        ("requests".into(), String::new(), Tags::new())
    }

    fn sum(value: f64) -> Previous {
        Previous::Sum { start_ns: 10, value }
    }

    fn step(state: &mut CumulativeState, value: f64, time_ns: u64) -> (Option<f64>, Staged) {
        let recorded = state.step(key(), sum(value), time_ns, sum_delta);
        let value = recorded.map(|r| match r {
            Increment::Sum(v) => v,
            other => panic!("{other:?}"),
        });
        (value, state.take_staged())
    }

    #[test]
    fn concurrent_samples_count_each_increase_once() {
        // Committed baseline 100; two exports (110, then 125) converted
        // before either commits: 10 and 15, not 10 and 25.
        let mut state = CumulativeState::new(0, 1_000);
        assert_eq!(step(&mut state, 100.0, 1).0, Some(100.0));
        let (a, _) = step(&mut state, 110.0, 2);
        let (b, _) = step(&mut state, 125.0, 3);
        assert_eq!((a, b), (Some(10.0), Some(15.0)));
        // A sample arriving after a newer one adds nothing, as does a repeat.
        assert_eq!(step(&mut state, 120.0, 2).0, None);
        assert_eq!(step(&mut state, 125.0, 3).0, None);
    }

    #[test]
    fn a_request_not_committed_is_taken_back_or_owed() {
        let mut state = CumulativeState::new(0, 1_000);
        step(&mut state, 100.0, 1);
        // Not committed, nothing newer: the series goes back to 100, and the
        // retry records the same 10.
        let (a, staged) = step(&mut state, 110.0, 2);
        assert_eq!(a, Some(10.0));
        state.forget(staged);
        assert_eq!(step(&mut state, 110.0, 2).0, Some(10.0));
        // Not committed after a newer sample took its delta from it: its 5 is
        // owed, and recorded with the next increase; its retry adds nothing.
        let (lost, staged) = step(&mut state, 115.0, 3);
        let (kept, _) = step(&mut state, 130.0, 4);
        assert_eq!((lost, kept), (Some(5.0), Some(15.0)));
        state.forget(staged);
        assert_eq!(step(&mut state, 115.0, 3).0, None);
        assert_eq!(step(&mut state, 131.0, 5).0, Some(1.0 + 5.0));
        // Owed increments taken back again stay owed.
        let (with_owed, staged) = {
            let (lost, staged) = step(&mut state, 140.0, 6);
            let _ = step(&mut state, 141.0, 7);
            state.forget(staged);
            assert_eq!(lost, Some(9.0));
            step(&mut state, 150.0, 8)
        };
        assert_eq!(with_owed, Some(9.0 + 9.0));
        state.forget(staged);
        assert_eq!(step(&mut state, 151.0, 9).0, Some(10.0 + 9.0));
    }

    #[test]
    fn owed_distributions_merge_their_buckets() {
        let owed =
            Increment::Distribution { count: 2, sum: 3.0, buckets: vec![(1.0, 1), (2.0, 1)] };
        let new = Increment::Distribution { count: 1, sum: 2.0, buckets: vec![(2.0, 1)] };
        assert_eq!(
            new.plus(Some(owed)),
            Increment::Distribution { count: 3, sum: 5.0, buckets: vec![(1.0, 1), (2.0, 2)] }
        );
    }

    #[test]
    fn a_full_state_lets_silent_series_go_or_refuses_new_ones() {
        let sample = |start_ns: u64, value: f64| Previous::Sum { start_ns, value };
        let key = |name: &str| (name.to_owned(), String::new(), Tags::new());
        let now_ns = crate::time::now_ms() as u64 * 1_000_000;
        let mut state = CumulativeState::new(0, 2);
        state.step(key("a"), sample(1, 1.0), 1_000, sum_delta);
        state.step(key("b"), sample(1, 1.0), now_ns, sum_delta);
        // Full: a has been silent for more than an hour and goes; c, which
        // started after the letting go (a minute ahead, clear of the clock
        // reading taken inside), counts from zero.
        let later = now_ns + 60_000_000_000;
        let c = state.step(key("c"), sample(later, 5.0), later, sum_delta);
        assert_eq!(c, Some(Increment::Sum(5.0)));
        assert_eq!((state.len(), state.refused()), (2, 0));
        // a, back, finds the state full of series that are not silent.
        assert_eq!(state.step(key("a"), sample(1, 9.0), now_ns + 1, sum_delta), None);
        assert_eq!(state.refused(), 1);
        // Known series go on.
        assert_eq!(
            state.step(key("b"), sample(1, 3.0), now_ns + 2, sum_delta),
            Some(Increment::Sum(2.0))
        );
    }
}
